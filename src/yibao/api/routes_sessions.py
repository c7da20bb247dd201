"""Sessions: log in (person or staff), who am I, log out."""

# No ``from __future__ import annotations`` here: FastAPI reads these signatures at runtime,
# and the dependencies they name are local to register().

from typing import Annotated

from fastapi import Body, Depends, Request, Response
from sqlalchemy import Connection, update

from ..db.schema import api_sessions
from ..service.audit import audit
from ..service.uow import transact
from .auth import Caller, login_person, login_staff, token_hash
from .models import PersonLogin, SessionOut, StaffLogin, WhoAmI
from .problems import ApiError
from .routing import Registrar

__all__ = ["register"]


def register(r: Registrar) -> None:
    ctx = r.ctx
    limiter = ctx.login_limiter
    CallerDep = Annotated[Caller, Depends(r.caller)]

    @r.route("POST", "/sessions", tag="sessions", response_model=SessionOut, status_code=201,
             errors=(400, 401, 422, 429), summary="Log in: a person with ID/card number + PIN, or staff")  # fmt: skip
    def create_session(
        body: Annotated[PersonLogin | StaffLogin, Body(discriminator="kind")], request: Request
    ) -> SessionOut:
        """Returns a bearer token with its expiry.

        A person's wrong PINs count towards the portal's own throttle, never towards
        the settlement PIN's lock: after 5 the portal login is locked for 15 minutes,
        doubling with each further wrong PIN (401 ``PORTAL_LOCKED``, even for the right
        PIN). A settlement PIN locked at a hospital till answers 401 ``PIN_LOCKED``.
        A client address with too many failed logins in a minute is answered 429
        ``TOO_MANY_FAILED_LOGINS`` (with ``Retry-After``), whatever it tries. The client
        address is the TCP peer's; ``X-Forwarded-For`` counts only from a configured
        trusted proxy.
        """
        peer = request.client.host if request.client is not None else None
        client = ctx.trusted_proxies.client(peer, request.headers.getlist("x-forwarded-for"))
        wait_s = limiter.retry_after_s(client)
        if wait_s:
            raise ApiError(
                429, "TOO_MANY_FAILED_LOGINS", f"too many failed logins from this address: retry in {wait_s} s",
                headers={"Retry-After": str(wait_s)},
            )  # fmt: skip
        try:
            if isinstance(body, PersonLogin):
                login = login_person(ctx, id_number=body.id_number, card_number=body.card_number, pin=body.pin)
            else:
                login = login_staff(ctx, username=body.username, password=body.password)
        except ApiError as refused:
            if refused.status == 401:
                limiter.failed(client)
            raise
        c = login.caller
        return SessionOut(
            token=login.token, expires_at=c.expires_at, kind=c.kind, subject=c.subject, role=c.role,
            pin_must_change=login.pin_must_change,
        )  # fmt: skip

    @r.route("GET", "/sessions/current", tag="sessions", response_model=WhoAmI, errors=(401,),
             summary="The caller of this token")  # fmt: skip
    def get_current_session(caller: CallerDep) -> WhoAmI:
        return WhoAmI(kind=caller.kind, subject=caller.subject, role=caller.role, expires_at=caller.expires_at)

    @r.route("DELETE", "/sessions/current", tag="sessions", status_code=204, errors=(401,),
             summary="Log out: revoke this token")  # fmt: skip
    def delete_current_session(caller: CallerDep, credentials: Annotated[object, Depends(r.bearer)]) -> Response:
        token = getattr(credentials, "credentials", "")

        def work(conn: Connection) -> None:
            now = ctx.clock()
            conn.execute(
                update(api_sessions).where(api_sessions.c.token_hash == token_hash(token)).values(revoked_at=now)
            )
            audit(conn, at=now, actor=caller.id, role=caller.role, action="session.revoke", target=caller.id)

        transact(ctx.db, work)
        return Response(status_code=204)
