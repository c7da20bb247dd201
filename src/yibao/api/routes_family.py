"""Family mutual-aid bindings (家庭共济), the consent they need, and filings (异地就医备案, 门诊慢特病备案)."""

# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Body, Depends, Path, Query, Request, Response
from sqlalchemy import Connection, select

from ..db.schema import family_bindings, filings
from ..errors import RequestError
from ..service import accounts
from .auth import Caller, refuse
from .models import (
    BindingCreate,
    BindingOut,
    BindingRequestCreate,
    BindingRequestOut,
    BindingRequestsOut,
    BindingsOut,
    ConsentIn,
    DiseaseFilingCreate,
    FilingOut,
    OffsiteFilingCreate,
)
from .problems import ApiError
from .routes_persons import IdempotencyKey, PsnNoPath
from .routing import Registrar
from .views import binding_out, binding_request_out, filing_out
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
             summary="Bind at once on recorded consent evidence (operator)")  # fmt: skip
    def create_family_binding(
        body: BindingCreate, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        """Agency staff who have seen both parties' consent (a signed form, the household
        register for a minor) bind at once and record it in ``consent_ref``. Insured persons
        ask with ``POST /v1/family-binding-requests``; the other party confirms. The policy's
        rules (employee holder, allowed relations, same region, member counts) are the
        accounts service's; a refusal names the field and its code."""
        if caller.kind == "person":
            raise ApiError(403, "STAFF_ONLY", "个人请通过 POST /v1/family-binding-requests 申请绑定, 经对方确认后生效")
        refuse(caller, role="operator")

        def op(conn: Connection) -> Change:
            made = accounts.bind_family(
                conn, ctx.policies, holder_psn_no=body.holder_psn_no, member_psn_no=body.member_psn_no,
                relation=body.relation, consent_ref=body.consent_ref, actor=caller.id, clock=ctx.clock,
            )  # fmt: skip
            out = binding_out(made)
            after = {**out.model_dump(mode="json"), "consent_ref": body.consent_ref}
            return Change(201, out, "family.bind", f"binding:{made.id}", after=after)

        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, body),
                       op=op)  # fmt: skip

    # -- consent: binding requests ---------------------------------------------------------
    @r.route("GET", "/persons/{psn_no}/family-binding-requests", tag="family", response_model=BindingRequestsOut,
             errors=(401, 403, 404, 422),
             summary="Binding requests awaiting the person's (or a ward's) consent, or asked by them")  # fmt: skip
    def list_binding_requests(
        psn_no: PsnNoPath, caller: CallerDep, include_closed: Annotated[bool, Query()] = False
    ) -> BindingRequestsOut:
        """Pending requests only, unless ``include_closed`` (then decided and expired ones too)."""
        refuse(caller, psn_no=psn_no)
        found = ctx.read(
            lambda conn: accounts.binding_requests_of(conn, psn_no, clock=ctx.clock, include_closed=include_closed)
        )
        return BindingRequestsOut(
            psn_no=psn_no,
            incoming=[binding_request_out(x) for x in found.incoming],
            outgoing=[binding_request_out(x) for x in found.outgoing],
            as_guardian=[binding_request_out(x) for x in found.as_guardian],
        )

    @r.route("POST", "/family-binding-requests", tag="family", response_model=BindingRequestOut, status_code=201,
             errors=(400, 401, 403, 404, 409, 422),
             summary="Ask for a binding one is a party to; it takes effect when the other party confirms")  # fmt: skip
    def create_binding_request(
        body: BindingRequestCreate, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        """The holder or the member asks (an adult; a minor's bindings are asked for by the
        guardian or at the agency); the policy's rules are checked now and again on
        confirmation. The request expires after 7 days."""
        if caller.kind != "person":
            raise ApiError(403, "PERSONS_ONLY",
                           "staff bind at once with POST /v1/family-bindings and the consent evidence")  # fmt: skip
        if caller.subject not in (body.holder_psn_no, body.member_psn_no):
            raise ApiError(403, "NOT_YOUR_DATA", "只能申请本人参与的家庭共济绑定")

        def op(conn: Connection) -> Change:
            made = accounts.request_binding(
                conn, ctx.policies, holder_psn_no=body.holder_psn_no, member_psn_no=body.member_psn_no,
                relation=body.relation, requester_psn_no=caller.subject, clock=ctx.clock,
            )  # fmt: skip
            out = binding_request_out(made)
            return Change(201, out, "family.request", f"binding-request:{made.id}", after=out)

        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, body),
                       op=op)  # fmt: skip

    def decide(
        caller: Caller, request_id: int, action: str, decision: Callable[..., accounts.BindingRequestRecord],
        **extra: Any,
    ) -> Callable[[Connection], Change]:  # fmt: skip
        """The unit of work of a decision: a person as themselves, staff as the agency (operator)."""
        if caller.kind == "staff":
            refuse(caller, role="operator")
        who: dict[str, Any] = {"psn_no": caller.subject} if caller.kind == "person" else {"actor": caller.id}
        target = f"binding-request:{request_id}"

        def op(conn: Connection) -> Change:
            try:
                done = decision(conn, request_id=request_id, clock=ctx.clock, **who, **extra)
            except RequestError as exc:
                if exc.code != "REQUEST_EXPIRED":
                    raise
                # The request was marked expired on this connection: commit that, then refuse.
                return Change(0, None, "family.request_expire", target, before={"status": "pending"},
                              after={"status": "expired"}, error=exc)  # fmt: skip
            out = binding_request_out(done)
            after: dict[str, Any] = out.model_dump(mode="json")
            if caller.kind == "person" and caller.subject != done.awaiting_psn_no and action != "family.withdraw":
                after["as_guardian_of"] = done.awaiting_psn_no
            return Change(200, out, action, target, before={"status": "pending"}, after=after)

        return op

    @r.route("POST", "/family-binding-requests/{request_id}/confirm", tag="family", response_model=BindingRequestOut,
             errors=(400, 401, 403, 404, 409, 422),
             summary="Consent: the binding takes effect (other party, minor's guardian, or operator)")  # fmt: skip
    def confirm_binding_request(
        request_id: RowId, request: Request, caller: CallerDep, body: Annotated[ConsentIn | None, Body()] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:  # fmt: skip
        """The party who did not ask confirms, logged in as themselves; for a minor, a
        guardian on record (an adult with an active binding holding the minor as ``child``).
        An operator may confirm on a party's behalf with the ``consent_ref`` seen. The
        policy's rules are checked again; a rule that fails leaves the request pending."""
        consent_ref = body.consent_ref if body is not None else None
        op = decide(caller, request_id, "family.confirm",
                    lambda conn, **kw: accounts.confirm_binding_request(conn, ctx.policies, **kw),
                    consent_ref=consent_ref)  # fmt: skip
        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, body),
                       op=op)  # fmt: skip

    @r.route("POST", "/family-binding-requests/{request_id}/decline", tag="family", response_model=BindingRequestOut,
             errors=(400, 401, 403, 404, 409, 422),
             summary="Refuse consent (the other party, a minor's guardian, or an operator)")  # fmt: skip
    def decline_binding_request(
        request_id: RowId, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        op = decide(caller, request_id, "family.decline", accounts.decline_binding_request)
        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, None),
                       op=op)  # fmt: skip

    @r.route("POST", "/family-binding-requests/{request_id}/withdraw", tag="family",
             response_model=BindingRequestOut, errors=(400, 401, 403, 404, 409, 422),
             summary="Withdraw a pending request (the person who asked, or an operator)")  # fmt: skip
    def withdraw_binding_request(
        request_id: RowId, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        op = decide(caller, request_id, "family.withdraw", accounts.withdraw_binding_request)
        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, None),
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
