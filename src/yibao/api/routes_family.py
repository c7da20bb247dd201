"""Family mutual-aid bindings (家庭共济) and filings (异地就医备案, 门诊慢特病备案)."""

# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

from typing import Annotated

from fastapi import Body, Depends, Path, Query, Request, Response
from sqlalchemy import Connection, select

from ..db.schema import family_bindings, filings
from ..service import accounts
from .auth import Caller, refuse
from .models import BindingCreate, BindingOut, BindingsOut, DiseaseFilingCreate, FilingOut, OffsiteFilingCreate
from .problems import ApiError
from .routes_persons import IdempotencyKey, PsnNoPath
from .routing import Registrar
from .views import binding_out, filing_out
from .writes import Change, fingerprint, perform

__all__ = ["register"]

RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def register(r: Registrar) -> None:
    ctx = r.ctx
    CallerDep = Annotated[Caller, Depends(r.caller)]

    # -- family bindings -------------------------------------------------------------------
    @r.route("GET", "/persons/{psn_no}/family-bindings", tag="family", response_model=BindingsOut,
             errors=(401, 403, 404, 422), summary="Bindings the person is part of (holder, member)")  # fmt: skip
    def list_family_bindings(
        psn_no: PsnNoPath, caller: CallerDep, include_unbound: Annotated[bool, Query()] = False
    ) -> BindingsOut:
        refuse(caller, psn_no=psn_no)
        found = ctx.read(lambda conn: accounts.bindings_of(conn, psn_no, include_unbound=include_unbound))
        return BindingsOut(
            psn_no=psn_no,
            as_holder=[binding_out(b) for b in found.as_holder],
            as_member=[binding_out(b) for b in found.as_member],
        )

    @r.route("POST", "/family-bindings", tag="family", response_model=BindingOut, status_code=201,
             errors=(400, 401, 403, 409, 422),
             summary="Bind a relative to the holder's personal account (the holder, or an operator)")  # fmt: skip
    def create_family_binding(
        body: BindingCreate, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        """The policy's rules (employee holder, allowed relations, same region, member counts)
        are the accounts service's; a refusal names the field and its code."""
        refuse(caller, role="operator", psn_no=body.holder_psn_no)

        def op(conn: Connection) -> Change:
            made = accounts.bind_family(
                conn, ctx.policies, holder_psn_no=body.holder_psn_no, member_psn_no=body.member_psn_no,
                relation=body.relation, clock=ctx.clock,
            )  # fmt: skip
            out = binding_out(made)
            return Change(201, out, "family.bind", f"binding:{made.id}", after=out)

        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, body),
                       op=op)  # fmt: skip

    @r.route("POST", "/family-bindings/{binding_id}/unbind", tag="family", response_model=BindingOut,
             errors=(400, 401, 403, 404, 409, 422), summary="Unbind (the holder, or an operator)")  # fmt: skip
    def unbind_family_binding(
        binding_id: RowId, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        def op(conn: Connection) -> Change:
            row = conn.execute(select(family_bindings).where(family_bindings.c.id == binding_id)).first()
            if row is None:
                raise ApiError(404, "BINDING_UNKNOWN", f"binding {binding_id} does not exist", field="binding_id")
            refuse(caller, role="operator", psn_no=row.holder_psn_no)
            party = caller.subject if caller.kind == "person" else None
            done = accounts.unbind_family(conn, binding_id=binding_id, clock=ctx.clock, psn_no=party)
            out = binding_out(done)
            before = {"unbound_at": row.unbound_at}
            return Change(200, out, "family.unbind", f"binding:{binding_id}", before=before, after=out)

        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, None),
                       op=op)  # fmt: skip

    # -- filings ---------------------------------------------------------------------------
    @r.route("GET", "/persons/{psn_no}/filings", tag="filings", response_model=list[FilingOut],
             errors=(401, 403, 404, 422), summary="A person's off-site and disease filings")  # fmt: skip
    def list_filings(
        psn_no: PsnNoPath, caller: CallerDep, include_cancelled: Annotated[bool, Query()] = False
    ) -> list[FilingOut]:
        refuse(caller, psn_no=psn_no)
        found = ctx.read(lambda conn: accounts.filings_of(conn, psn_no, include_cancelled=include_cancelled))
        return [filing_out(f) for f in found]

    @r.route("POST", "/persons/{psn_no}/filings", tag="filings", response_model=FilingOut, status_code=201,
             errors=(400, 401, 403, 404, 409, 422),
             summary="File off-site care (the person or an operator) or a chronic disease (operator)")  # fmt: skip
    def create_filing(
        psn_no: PsnNoPath,
        body: Annotated[OffsiteFilingCreate | DiseaseFilingCreate, Body(discriminator="kind")],
        request: Request,
        caller: CallerDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        """A person may file their own off-site care (异地就医备案); a disease filing
        (门诊慢特病备案) needs a diagnosis and is made by agency operators."""
        refuse(caller, role="operator", psn_no=psn_no if isinstance(body, OffsiteFilingCreate) else None)

        def op(conn: Connection) -> Change:
            if isinstance(body, OffsiteFilingCreate):
                made = accounts.file_offsite(
                    conn, ctx.policies, psn_no=psn_no, offsite_type=body.offsite_type,
                    mdtrtarea_admvs=body.mdtrtarea_admvs, begn_date=body.begn_date, end_date=body.end_date,
                    clock=ctx.clock,
                )  # fmt: skip
            else:
                made = accounts.file_disease(conn, psn_no=psn_no, dise_codg=body.dise_codg, begn_date=body.begn_date,
                                             end_date=body.end_date, clock=ctx.clock)  # fmt: skip
            out = filing_out(made)
            return Change(201, out, f"filing.create_{made.kind}", f"filing:{made.id}", after=out)

        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, body),
                       op=op)  # fmt: skip

    @r.route("POST", "/filings/{filing_id}/cancel", tag="filings", response_model=FilingOut,
             errors=(400, 401, 403, 404, 409, 422),
             summary="Cancel a filing (an operator; the person for their own off-site filing)")  # fmt: skip
    def cancel_filing(
        filing_id: RowId, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        def op(conn: Connection) -> Change:
            row = conn.execute(select(filings).where(filings.c.id == filing_id)).first()
            if row is None:
                raise ApiError(404, "FILING_UNKNOWN", f"filing {filing_id} does not exist", field="filing_id")
            refuse(caller, role="operator", psn_no=row.psn_no if row.kind == "offsite" else None)
            done = accounts.cancel_filing(conn, filing_id=filing_id)
            out = filing_out(done)
            return Change(200, out, "filing.cancel", f"filing:{filing_id}", before={"status": row.status}, after=out)

        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, None),
                       op=op)  # fmt: skip
