"""Institutions, policies, staff accounts and the audit log."""

# No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

import datetime as dt
import json
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query, Request, Response
from sqlalchemy import Connection, select, update

from ..db import repository as repo
from ..db.schema import audit_log, institutions, staff_users
from ..errors import RequestError
from ..service import apikeys, registry
from .auth import (
    STAFF_MAX_ATTEMPTS,
    Caller,
    active_admins,
    check_password,
    hash_password,
    insert_staff,
    refuse,
    revoke_sessions,
    verify_password,
)
from .models import (
    AuditOut,
    AuditPage,
    DesignationUpdate,
    GatewayKeyIssue,
    GatewayKeyOut,
    InstitutionOut,
    InstitutionPage,
    ParameterOut,
    PasswordChange,
    PolicyOut,
    ReferenceOut,
    RoleChange,
    StaffCreate,
    StaffOut,
)
from .problems import ApiError
from .routes_persons import IdempotencyKey
from .routing import Registrar
from .views import institution_out, staff_out, staff_row
from .writes import Change, fingerprint, perform

__all__ = ["register"]

InstitutionPath = Annotated[str, Path(pattern=r"^[0-9A-Za-z]{1,20}$", description="定点医药机构编号")]
UsernamePath = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_.-]{2,39}$")]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def _institution(conn: Connection, fixmedins_code: str) -> Any:
    """The registered institution, or a 404 problem."""
    row = repo.get_institution(conn, fixmedins_code)
    if row is None:
        raise ApiError(404, "INSTITUTION_UNKNOWN", f"institution {fixmedins_code} is not registered",
                       field="fixmedins_code")  # fmt: skip
    return row


def register(r: Registrar) -> None:
    ctx = r.ctx
    CallerDep = Annotated[Caller, Depends(r.caller)]

    # -- institutions ----------------------------------------------------------------------
    @r.route("GET", "/institutions", tag="institutions", response_model=InstitutionPage, errors=(401, 422),
             summary="Designated hospitals and pharmacies")  # fmt: skip
    def list_institutions(
        caller: CallerDep,
        admdvs: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None,
        kind: Annotated[Literal["hospital", "pharmacy"] | None, Query()] = None,
        designated: Annotated[bool | None, Query()] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> InstitutionPage:
        query = select(institutions)
        if admdvs is not None:
            query = query.where(institutions.c.admdvs == admdvs)
        if kind is not None:
            query = query.where(institutions.c.kind == kind)
        if designated is not None:
            query = query.where(institutions.c.designated.is_(designated))
        rows = ctx.read(
            lambda conn: conn.execute(query.order_by(institutions.c.fixmedins_code).limit(limit).offset(offset)).all()
        )
        return InstitutionPage(items=[institution_out(row) for row in rows], limit=limit, offset=offset)

    @r.route("GET", "/institutions/{fixmedins_code}", tag="institutions", response_model=InstitutionOut,
             errors=(401, 404, 422), summary="One institution")  # fmt: skip
    def get_institution(fixmedins_code: InstitutionPath, caller: CallerDep) -> InstitutionOut:
        return institution_out(ctx.read(lambda conn: _institution(conn, fixmedins_code)))

    @r.route("POST", "/institutions/{fixmedins_code}/designation", tag="institutions", response_model=InstitutionOut,
             errors=(400, 401, 403, 404, 409, 422), summary="Grant or withdraw designation (定点) (admin)")  # fmt: skip
    def set_designation(
        fixmedins_code: InstitutionPath,
        body: DesignationUpdate,
        request: Request,
        caller: CallerDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        refuse(caller, role="admin")

        def op(conn: Connection) -> Change:
            row = _institution(conn, fixmedins_code)
            before = institution_out(row).model_dump(include={"designated", "valid_from", "valid_to"})
            done = registry.set_designation(conn, fixmedins_code=fixmedins_code, designated=body.designated,
                                            valid_from=body.valid_from, valid_to=body.valid_to)  # fmt: skip
            out = institution_out(done)
            return Change(200, out, "institution.designation", f"institution:{fixmedins_code}", before=before,
                          after=out.model_dump(include={"designated", "valid_from", "valid_to"}))  # fmt: skip

        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, body),
                       op=op)  # fmt: skip

    # -- gateway keys (the institution's _api_* / x-tif-* credentials) --------------------------
    def _key_out(record: apikeys.KeyRecord) -> GatewayKeyOut:
        return GatewayKeyOut(**record._asdict())

    @r.route("GET", "/institutions/{fixmedins_code}/gateway-keys", tag="institutions",
             response_model=list[GatewayKeyOut], errors=(401, 403, 404, 422),
             summary="An institution's gateway keys, newest first, without secrets (admin)")  # fmt: skip
    def list_gateway_keys(fixmedins_code: InstitutionPath, caller: CallerDep) -> list[GatewayKeyOut]:
        refuse(caller, role="admin")

        def read(conn: Connection) -> list[apikeys.KeyRecord]:
            _institution(conn, fixmedins_code)
            return apikeys.keys_of(conn, fixmedins_code)

        return [_key_out(record) for record in ctx.read(read)]

    @r.route("POST", "/institutions/{fixmedins_code}/gateway-keys", tag="institutions", response_model=GatewayKeyOut,
             status_code=201, errors=(400, 401, 403, 404, 409, 422),
             summary="Issue a gateway key to an institution; the secret is in this answer only (admin)")  # fmt: skip
    def issue_gateway_key(
        fixmedins_code: InstitutionPath,
        body: GatewayKeyIssue,
        request: Request,
        caller: CallerDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        refuse(caller, role="admin")

        def op(conn: Connection) -> Change:
            _institution(conn, fixmedins_code)
            record = apikeys.issue_key_in(conn, fixmedins_code, now=ctx.clock(), scheme=body.scheme)
            audited = {"access_key": record.access_key, "scheme": record.scheme}  # never the secret
            return Change(201, _key_out(record), "gateway_key.issue", f"institution:{fixmedins_code}",
                          after=audited)  # fmt: skip

        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, body),
                       op=op)  # fmt: skip

    @r.route("POST", "/institutions/{fixmedins_code}/gateway-keys/{access_key}/revoke", tag="institutions",
             response_model=GatewayKeyOut, errors=(401, 403, 404, 409, 422),
             summary="Revoke a gateway key: refused by every server within 30 s (admin)")  # fmt: skip
    def revoke_gateway_key(
        fixmedins_code: InstitutionPath,
        access_key: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{4,64}$")],
        request: Request,
        caller: CallerDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        refuse(caller, role="admin")

        def op(conn: Connection) -> Change:
            record = apikeys.revoke_key_in(conn, access_key, now=ctx.clock(), fixmedins_code=fixmedins_code)
            if record is None:
                raise ApiError(404, "GATEWAY_KEY_UNKNOWN", f"no active key {access_key} of institution "
                               f"{fixmedins_code}", field="access_key")  # fmt: skip
            return Change(200, _key_out(record), "gateway_key.revoke", f"institution:{fixmedins_code}",
                          before={"access_key": access_key, "revoked_at": None},
                          after={"access_key": access_key, "revoked_at": record.revoked_at})  # fmt: skip

        return perform(ctx, caller, key=idempotency_key, request_hash=fingerprint("POST", request.url.path, None),
                       op=op)  # fmt: skip

    # -- policies --------------------------------------------------------------------------
    @r.route("GET", "/policies/{region}", tag="policies", response_model=PolicyOut, errors=(401, 404, 422),
             summary="The parameters in force for a region on a date, each with its source")  # fmt: skip
    def get_policy(
        region: Annotated[str, Path(pattern=r"^\d{6}$", description="6-digit region code")],
        caller: CallerDep,
        date: Annotated[dt.date | None, Query(description="Service date (default: today)")] = None,
        prefix: Annotated[
            str | None, Query(pattern=r"^[A-Za-z0-9_.\[\]]{1,80}$", description="Only keys starting with this")
        ] = None,
    ) -> PolicyOut:
        day = date or ctx.clock().date()
        try:
            policy = ctx.policies.resolve(region, day)
        except RequestError as exc:
            if exc.code in ("UNKNOWN_REGION", "NO_POLICY_IN_FORCE"):
                where = "region" if exc.code == "UNKNOWN_REGION" else "date"
                raise ApiError(404, exc.code, exc.reason, field=where) from None
            raise
        parameters = []
        for key, source in policy.sources.items():
            if prefix is not None and not key.startswith(prefix):
                continue
            ref = source.reference
            parameters.append(
                ParameterOut(
                    key=key, value=policy.values.get(key), file=source.file, effective_from=source.effective_from,
                    reference=None if ref is None else ReferenceOut(key=ref.key, title=ref.title, url=ref.url,
                                                                    status=ref.status, note=ref.note),
                )
            )  # fmt: skip
        return PolicyOut(
            region=policy.region, name=policy.name, chain=list(policy.chain), version=policy.version, date=day,
            effective_from=policy.effective_from, effective_to=policy.effective_to, parameters=parameters,
        )  # fmt: skip

    # -- staff -----------------------------------------------------------------------------
    @r.route("GET", "/staff", tag="staff", response_model=list[StaffOut], errors=(401, 403),
             summary="Staff accounts (admin)")  # fmt: skip
    def list_staff(caller: CallerDep) -> list[StaffOut]:
        refuse(caller, role="admin")
        rows = ctx.read(lambda conn: conn.execute(select(staff_users).order_by(staff_users.c.username)).all())
        return [staff_out(row) for row in rows]

    @r.route("POST", "/staff", tag="staff", response_model=StaffOut, status_code=201,
             errors=(400, 401, 403, 409, 422), summary="Create a staff account (admin)")  # fmt: skip
    def create_staff_user(
        body: StaffCreate, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        refuse(caller, role="admin")
        check_password(body.password, body.username)

        def op(conn: Connection) -> Change:
            insert_staff(conn, body.username, body.password, body.role, ctx.clock())
            out = staff_out(staff_row(conn, body.username))
            return Change(201, out, "staff.create", f"staff:{body.username}",
                          after={"username": body.username, "role": body.role})  # fmt: skip

        digest = fingerprint("POST", request.url.path, {**body.model_dump(exclude={"password"}),
                                                        "password": fingerprint("", "", body.password)})  # fmt: skip
        return perform(ctx, caller, key=idempotency_key, request_hash=digest, op=op)

    def _staff_change(
        caller: Caller, username: str, request: Request, key: str | None, body: Any, action: str,
        values: dict[str, Any], *, demotes: bool = False,
    ) -> Response:  # fmt: skip
        refuse(caller, role="admin")

        def op(conn: Connection) -> Change:
            row = staff_row(conn, username)
            before = staff_out(row).model_dump(include={"role", "disabled", "locked"})
            if demotes and row.role == "admin" and not row.disabled and active_admins(conn) <= 1:
                raise RequestError("username", "the last active admin cannot be demoted or disabled", code="LAST_ADMIN")
            now = ctx.clock()
            conn.execute(update(staff_users).where(staff_users.c.username == username).values(**values, updated_at=now))
            if values.get("disabled"):
                revoke_sessions(conn, "staff", username, now)
            out = staff_out(staff_row(conn, username))
            return Change(200, out, action, f"staff:{username}", before=before,
                          after=out.model_dump(include={"role", "disabled", "locked"}))  # fmt: skip

        return perform(ctx, caller, key=key, request_hash=fingerprint("POST", request.url.path, body), op=op)

    @r.route("POST", "/staff/{username}/role", tag="staff", response_model=StaffOut,
             errors=(400, 401, 403, 404, 409, 422), summary="Change a staff user's role (admin)")  # fmt: skip
    def set_staff_role(
        username: UsernamePath, body: RoleChange, request: Request, caller: CallerDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:  # fmt: skip
        return _staff_change(caller, username, request, idempotency_key, body, "staff.role", {"role": body.role},
                             demotes=body.role != "admin")  # fmt: skip

    @r.route("POST", "/staff/{username}/disable", tag="staff", response_model=StaffOut,
             errors=(400, 401, 403, 404, 409, 422), summary="Disable a staff account and end its sessions")  # fmt: skip
    def disable_staff(
        username: UsernamePath, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        return _staff_change(caller, username, request, idempotency_key, None, "staff.disable", {"disabled": True},
                             demotes=True)  # fmt: skip

    @r.route("POST", "/staff/{username}/enable", tag="staff", response_model=StaffOut,
             errors=(400, 401, 403, 404, 409, 422), summary="Enable (and unlock) a staff account (admin)")  # fmt: skip
    def enable_staff(
        username: UsernamePath, request: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
    ) -> Response:
        return _staff_change(caller, username, request, idempotency_key, None, "staff.enable",
                             {"disabled": False, "failed_attempts": 0})  # fmt: skip

    @r.route("POST", "/staff/{username}/password", tag="staff", status_code=204,
             errors=(400, 401, 403, 404, 409, 422),
             summary="Set a password (admin), or change one's own (with old_password)")  # fmt: skip
    def set_staff_password(
        username: UsernamePath, body: PasswordChange, request: Request, caller: CallerDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:  # fmt: skip
        """Ends the user's sessions and unlocks the account."""
        own = caller.kind == "staff" and caller.subject == username
        if not own:
            refuse(caller, role="admin")
        check_password(body.new_password, username, "new_password")

        def op(conn: Connection) -> Change:
            row = staff_row(conn, username)
            if own and (body.old_password is None or not verify_password(row.password_hash, body.old_password)):
                raise ApiError(403, "PASSWORD_WRONG", "old_password is missing or wrong", field="old_password")
            now = ctx.clock()
            conn.execute(
                update(staff_users)
                .where(staff_users.c.username == username)
                .values(password_hash=hash_password(body.new_password), failed_attempts=0, updated_at=now)
            )
            revoke_sessions(conn, "staff", username, now)
            return Change(204, None, "staff.password", f"staff:{username}",
                          before={"locked": int(row.failed_attempts) >= STAFF_MAX_ATTEMPTS},
                          after={"locked": False, "sessions": "revoked"})  # fmt: skip

        digest = fingerprint("POST", request.url.path, {"secret": fingerprint("", "", body)})
        return perform(ctx, caller, key=idempotency_key, request_hash=digest, op=op)

    # -- audit -----------------------------------------------------------------------------
    @r.route("GET", "/audit", tag="audit", response_model=AuditPage, errors=(401, 403, 422),
             summary="The audit log, newest first (admin)")  # fmt: skip
    def list_audit(
        caller: CallerDep,
        actor: Annotated[str | None, Query(max_length=48, pattern=r"^[\x21-\x7e]+$")] = None,
        target: Annotated[str | None, Query(max_length=80, pattern=r"^[\x21-\x7e]+$")] = None,
        action: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z_.]+$")] = None,
        before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
        limit: Limit = 100,
    ) -> AuditPage:
        refuse(caller, role="admin")
        query = select(audit_log)
        for column, value in ((audit_log.c.actor, actor), (audit_log.c.target, target), (audit_log.c.action, action)):
            if value is not None:
                query = query.where(column == value)
        if before is not None:
            query = query.where(audit_log.c.id < before)
        rows = ctx.read(lambda conn: conn.execute(query.order_by(audit_log.c.id.desc()).limit(limit + 1)).all())
        more, rows = len(rows) > limit, rows[:limit]
        items = [
            AuditOut(
                id=row.id, at=row.at, actor=row.actor, role=row.role, action=row.action, target=row.target,
                idempotency_key=row.idempotency_key,
                before=None if row.before_json is None else json.loads(row.before_json),
                after=None if row.after_json is None else json.loads(row.after_json),
            )
            for row in rows
        ]  # fmt: skip
        return AuditPage(items=items, next_before=rows[-1].id if more and rows else None)
