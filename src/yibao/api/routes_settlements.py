"""Settlements: one settlement with its explanation; reversal by an operator (moves money)."""

# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import hashlib
from typing import Annotated, Literal

from fastapi import Depends, Header, Path, Query, Request, Response
from sqlalchemy import Connection

from ..service import queries
from .auth import Caller, refuse
from .models import ReversalCreate, ReversalOut, SettlementDetail
from .routing import Registrar
from .views import settlement_detail, settlement_out, settlement_row
from .writes import Change, fingerprint, perform

__all__ = ["register"]

SetlIdPath = Annotated[str, Path(pattern=r"^[0-9A-Za-z_-]{1,32}$", description="结算ID setl_id")]
RequiredIdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]{1,100}$",
        description="Required: the request moves money. A retry with the same key and body returns the stored "
        "answer; the same key with another body is a 409 problem",
    ),
]


def api_msgid(caller: Caller, key: str) -> str:
    """The national msgid the reversal is stored under: one per caller and Idempotency-Key."""
    return "API-" + hashlib.sha256(f"{caller.id}|{key}".encode()).hexdigest()[:32]


def register(r: Registrar) -> None:
    ctx = r.ctx
    CallerDep = Annotated[Caller, Depends(r.caller)]

    @r.route("GET", "/settlements/{setl_id}", tag="settlements", response_model=SettlementDetail,
             errors=(401, 403, 404, 422), summary="One settlement or reversal, explained")  # fmt: skip
    def get_settlement(
        setl_id: SetlIdPath, caller: CallerDep, lang: Annotated[Literal["zh", "en"], Query()] = "zh"
    ) -> SettlementDetail:
        row = ctx.read(lambda conn: settlement_row(conn, setl_id, with_result=True))
        refuse(caller, psn_no=row.psn_no)
        explained = queries.explain_settlement(ctx.db, setl_id, lang)
        return settlement_detail(row, list(explained["explanation"]))

    @r.route("POST", "/settlements/{setl_id}/reversals", tag="settlements", response_model=ReversalOut,
             status_code=201, errors=(400, 401, 403, 404, 409, 422),
             summary="Reverse a settlement (operator; requires Idempotency-Key)")  # fmt: skip
    def create_reversal(
        setl_id: SetlIdPath,
        body: ReversalCreate,
        request: Request,
        caller: CallerDep,
        idempotency_key: RequiredIdempotencyKey,
    ) -> Response:
        """A new negated settlement and compensating journal entry, exactly as the institution's
        2208 would (the settlement service does it); the original stays as it was."""
        refuse(caller, role="operator")
        msgid = api_msgid(caller, idempotency_key)

        def op(conn: Connection) -> Change:
            original = settlement_row(conn, setl_id)
            code = original.fixmedins_code
            # The service's own unit of work would commit without our audit row: run its step in ours.
            reply = ctx.service.reverse_in(conn, setl_id, msgid, code)
            assert reply.setl_id is not None
            reversal = settlement_out(settlement_row(conn, reply.setl_id))
            before = settlement_out(original).model_dump(
                include={"setl_id", "kind", "reversed_by", "fund_pay_sumamt", "acct_pay", "psn_cash_pay"}
            )
            after = {"reversal_setl_id": reversal.setl_id, "msgid": msgid, "reason": body.reason,
                     "fund_pay_sumamt": reversal.fund_pay_sumamt, "acct_pay": reversal.acct_pay}  # fmt: skip
            out = ReversalOut(reversal=reversal, reverses_setl_id=setl_id, setlinfo=reply.body.get("setlinfo") or {})
            return Change(201, out, "settlement.reverse", f"settlement:{setl_id}", before=before, after=after)

        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, body),
                       op=op)  # fmt: skip
