"""Persons, their accounts, ledger entries, settlements, and the settlement PIN."""

# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

from typing import Annotated, Any, Literal

from fastapi import Depends, Header, Path, Query, Request, Response
from sqlalchemy import Connection, select

from .. import ledger
from ..db import repository as repo
from ..db.schema import journal_entries, ledger_accounts, postings, settlements
from ..errors import RequestError
from ..money import format_fen
from ..service import queries, registry
from .auth import Caller, refuse
from .models import (
    AccountOut,
    AccountsOut,
    EnrolmentOut,
    IdentityOut,
    LedgerEntryOut,
    LedgerPage,
    PersonOut,
    PersonSummary,
    PinChange,
    PostingOut,
    SettlementPage,
)
from .problems import ApiError
from .routing import Registrar
from .views import enrolment_out, person_out, settlement_out, settlement_query
from .writes import Change, fingerprint, perform

__all__ = ["IdempotencyKey", "PsnNoPath", "register"]

PsnNoPath = Annotated[str, Path(pattern=r"^[0-9A-Za-z]{1,30}$", description="人员编号 psn_no")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]{1,100}$",
        description="Optional here: a retry with the same key returns the stored answer",
    ),
]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
_PIN_FAILURES = ("PIN_WRONG", "PIN_LOCKED")


def _unknown_person(psn_no: str) -> RequestError:
    return RequestError("psn_no", f"person {psn_no} is not registered", code="PERSON_UNKNOWN")


def register(r: Registrar) -> None:
    ctx = r.ctx
    CallerDep = Annotated[Caller, Depends(r.caller)]

    @r.route("GET", "/persons", tag="persons", response_model=list[PersonSummary], errors=(401, 403, 422),
             summary="Find a person by ID number or card number (staff)")  # fmt: skip
    def find_persons(
        caller: CallerDep,
        certno: Annotated[str | None, Query(pattern=r"^\d{17}[\dXx]$", description="ID number")] = None,
        card_number: Annotated[str | None, Query(pattern=r"^[0-9A-Za-z]{1,64}$")] = None,
    ) -> list[PersonSummary]:
        refuse(caller, role="viewer")
        if (certno is None) == (card_number is None):
            raise ApiError(422, "INVALID_INPUT", "give exactly one of certno and card_number", field="certno")

        def work(conn: Connection) -> list[PersonSummary]:
            if certno is not None:
                row = repo.person_by_certno(conn, certno)
            else:
                assert card_number is not None
                card = repo.credential(conn, "card", card_number)
                row = repo.get_person(conn, card.psn_no) if card is not None else None
            if row is None:
                return []
            return [PersonSummary(psn_no=row.psn_no, name=row.name, certno=row.certno, gend=row.gend, brdy=row.brdy,
                                  admdvs=row.admdvs)]  # fmt: skip

        return ctx.read(work)

    @r.route("GET", "/persons/{psn_no}", tag="persons", response_model=PersonOut, errors=(401, 403, 404, 422),
             summary="A person: identity, cards, PIN state, enrolments, identities")  # fmt: skip
    def get_person(psn_no: PsnNoPath, caller: CallerDep) -> PersonOut:
        refuse(caller, psn_no=psn_no)
        return person_out(ctx.read(lambda conn: registry.person_info(conn, psn_no)))

    @r.route("GET", "/persons/{psn_no}/enrolments", tag="persons", response_model=list[EnrolmentOut],
             errors=(401, 403, 404, 422), summary="A person's enrolments (参保)")  # fmt: skip
    def list_enrolments(psn_no: PsnNoPath, caller: CallerDep) -> list[EnrolmentOut]:
        refuse(caller, psn_no=psn_no)
        info = ctx.read(lambda conn: registry.person_info(conn, psn_no))
        return [enrolment_out(e) for e in info.enrolments]

    @r.route("GET", "/persons/{psn_no}/identities", tag="persons", response_model=list[IdentityOut],
             errors=(401, 403, 404, 422), summary="A person's identities (低保, 特困, …)")  # fmt: skip
    def list_identities(psn_no: PsnNoPath, caller: CallerDep) -> list[IdentityOut]:
        refuse(caller, psn_no=psn_no)
        info = ctx.read(lambda conn: registry.person_info(conn, psn_no))
        return [IdentityOut(id=i.id, idet_type=i.idet_type, begn_date=i.begn_date, end_date=i.end_date)
                for i in info.identities]  # fmt: skip

    @r.route("GET", "/persons/{psn_no}/accounts", tag="accounts", response_model=AccountsOut,
             errors=(401, 403, 404, 422), summary="Personal account balances: current year and historical")  # fmt: skip
    def get_accounts(psn_no: PsnNoPath, caller: CallerDep) -> AccountsOut:
        refuse(caller, psn_no=psn_no)
        balance = queries.balance(ctx.db, psn_no)
        return AccountsOut(
            psn_no=psn_no,
            accounts=[
                AccountOut(kind="current_year", ledger_account=ledger.personal(psn_no, "current"),
                           balance=balance["current_year"]),
                AccountOut(kind="historical", ledger_account=ledger.personal(psn_no, "historical"),
                           balance=balance["historical"]),
            ],
            total=balance["balc"],
        )  # fmt: skip

    @r.route("GET", "/persons/{psn_no}/ledger-entries", tag="ledger", response_model=LedgerPage,
             errors=(401, 403, 404, 422), summary="Journal entries of the person's accounts")  # fmt: skip
    def list_ledger_entries(
        psn_no: PsnNoPath,
        caller: CallerDep,
        limit: Limit = 50,
        before: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Entries with a smaller id")] = None,
    ) -> LedgerPage:
        """Read-only: the journal is append-only, corrections are new entries."""
        refuse(caller, psn_no=psn_no)
        kinds: dict[str, Literal["current_year", "historical"]] = {
            ledger.personal(psn_no, "current"): "current_year",
            ledger.personal(psn_no, "historical"): "historical",
        }

        def work(conn: Connection) -> LedgerPage:
            if repo.get_person(conn, psn_no) is None:
                raise _unknown_person(psn_no)
            mine = postings.join(ledger_accounts, postings.c.account_id == ledger_accounts.c.id)
            ids_query = select(postings.c.entry_id).select_from(mine).where(ledger_accounts.c.code.in_(list(kinds)))
            if before is not None:
                ids_query = ids_query.where(postings.c.entry_id < before)
            ids = [int(i) for i in conn.execute(
                ids_query.distinct().order_by(postings.c.entry_id.desc()).limit(limit + 1)).scalars()]  # fmt: skip
            more, ids = len(ids) > limit, ids[:limit]
            heads = {row.id: row for row in conn.execute(select(journal_entries).where(journal_entries.c.id.in_(ids)))}
            lines: dict[int, list[PostingOut]] = {i: [] for i in ids}
            for row in conn.execute(
                select(postings.c.entry_id, ledger_accounts.c.code, postings.c.amount_fen)
                .select_from(mine)
                .where(postings.c.entry_id.in_(ids), ledger_accounts.c.code.in_(list(kinds)))
                .order_by(postings.c.id)
            ):
                # A debit lowers the fund's debt to the person: shown as a negative change.
                lines[int(row.entry_id)].append(PostingOut(account=kinds[row.code], amount=format_fen(-row.amount_fen)))
            entries = [
                LedgerEntryOut(entry_id=i, kind=heads[i].kind, ref=heads[i].ref, created_at=heads[i].created_at,
                               memo=heads[i].memo, postings=lines[i])
                for i in ids
            ]  # fmt: skip
            return LedgerPage(psn_no=psn_no, entries=entries, next_before=ids[-1] if more else None)

        return ctx.read(work)

    @r.route("GET", "/persons/{psn_no}/settlements", tag="settlements", response_model=SettlementPage,
             errors=(401, 403, 404, 422), summary="A person's settlements and reversals (newest first)")  # fmt: skip
    def list_person_settlements(
        psn_no: PsnNoPath,
        caller: CallerDep,
        year: Annotated[int | None, Query(ge=2000, le=2200)] = None,
        kind: Annotated[Literal["settle", "reversal"] | None, Query()] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> SettlementPage:
        refuse(caller, psn_no=psn_no)

        def work(conn: Connection) -> SettlementPage:
            if repo.get_person(conn, psn_no) is None:
                raise _unknown_person(psn_no)
            query = settlement_query().where(settlements.c.psn_no == psn_no)
            if year is not None:
                query = query.where(settlements.c.year == year)
            if kind is not None:
                query = query.where(settlements.c.kind == kind)
            rows = conn.execute(
                query.order_by(settlements.c.setl_time.desc(), settlements.c.setl_id.desc()).limit(limit).offset(offset)
            ).all()
            return SettlementPage(items=[settlement_out(row) for row in rows], limit=limit, offset=offset)

        return ctx.read(work)

    @r.route("POST", "/persons/{psn_no}/pin", tag="persons", status_code=204, errors=(400, 401, 403, 404, 409, 422),
             summary="Change one's own settlement PIN")  # fmt: skip
    def change_pin(
        psn_no: PsnNoPath, body: PinChange, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        """Only the person themself. A wrong old PIN counts towards the shared PIN lock."""
        if caller.kind != "person" or caller.subject != psn_no:
            raise ApiError(403, "NOT_YOUR_DATA", "only the insured person may change their PIN")

        def op(conn: Connection) -> Change:
            target = f"person:{psn_no}"
            try:
                registry.change_pin(conn, ctx.policies, psn_no=psn_no, old_pin=body.old_pin, new_pin=body.new_pin,
                                    clock=ctx.clock)  # fmt: skip
            except RequestError as exc:
                if exc.code not in _PIN_FAILURES:
                    raise
                # The failed attempt was counted on this connection: commit it, then refuse.
                return Change(0, None, "person.pin_change_refused", target, after={"code": exc.code}, error=exc)
            return Change(204, None, "person.pin_change", target, after={"pin_must_change": False})

        # Secrets never enter the stored request hash in clear.
        digest = fingerprint("POST", request.url.path, {"pins": fingerprint("", "", body)})
        return perform(ctx, caller, key=idempotency_key, request_hash=digest, op=op)

    @r.route("POST", "/persons/{psn_no}/pin/reset", tag="persons", status_code=204,
             errors=(400, 401, 403, 404, 409, 422),
             summary="Unlock and reset a person's PIN to the initial PIN (operator)")  # fmt: skip
    def reset_pin(
        psn_no: PsnNoPath, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        refuse(caller, role="operator")

        def op(conn: Connection) -> Change:
            before = repo.pin_row(conn, psn_no)
            registry.reset_pin(conn, ctx.policies, psn_no=psn_no, clock=ctx.clock)
            summary: dict[str, Any] | None = None
            if before is not None:
                summary = {"locked": bool(before.locked), "failed_attempts": int(before.failed_attempts)}
            return Change(204, None, "person.pin_reset", f"person:{psn_no}", before=summary,
                          after={"locked": False, "failed_attempts": 0, "must_change": True})  # fmt: skip

        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, None),
                       op=op)  # fmt: skip
