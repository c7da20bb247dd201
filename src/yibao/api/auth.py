"""Who is calling: insured persons (ID or card number + settlement PIN) and agency staff
(username + Argon2id password, with a role), both holding an expiring bearer token.

A person's PIN is checked by :func:`yibao.service.credentials.check_portal_pin`: the
settlement PIN, with the portal's own throttle of wrong PINs, so that guesses online
never lock the PIN a hospital till asks for (a PIN locked at a till still refuses the
portal). Tokens are random; only their SHA-256 is stored, with the expiry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, func, insert, select, update

from ..db import repository as repo
from ..db.schema import api_sessions, staff_users
from ..errors import Reason, RequestError
from ..service.audit import audit
from ..service.credentials import Credential, check_portal_pin, resolve_credential
from ..service.uow import transact
from .context import Clock, Context
from .problems import ApiError

__all__ = [
    "ROLES",
    "Caller",
    "StaffRecord",
    "authenticate",
    "create_staff",
    "hash_password",
    "issue_session",
    "login_person",
    "login_staff",
    "verify_password",
]

ROLES = ("viewer", "operator", "admin")
_RANK = {"viewer": 1, "operator": 2, "admin": 3}
#: Consecutive wrong passwords after which a staff account is locked until an admin enables it.
STAFF_MAX_ATTEMPTS = 10
USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{2,39}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 256
# Argon2id (the library's default type) at the cost of the settlement PIN hashes.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)

Db = Engine | Connection


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: ``kind`` person (``subject`` = psn_no) or staff (username)."""

    kind: Literal["person", "staff"]
    subject: str
    role: str  # person | viewer | operator | admin
    expires_at: dt.datetime

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.subject}"

    def at_least(self, role: str) -> bool:
        return self.kind == "staff" and _RANK.get(self.role, 0) >= _RANK[role]


@dataclass(frozen=True, slots=True)
class StaffRecord:
    username: str
    role: str
    disabled: bool
    locked: bool
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Login:
    token: str
    caller: Caller
    pin_must_change: bool = False


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _HASHER.hash(secrets.token_hex(16))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _run(db: Db, work: Any) -> Any:
    return work(db) if isinstance(db, Connection) else transact(db, work)


def staff_record(row: Any) -> StaffRecord:
    return StaffRecord(
        row.username, row.role, bool(row.disabled), int(row.failed_attempts) >= STAFF_MAX_ATTEMPTS, row.created_at,
        row.updated_at,
    )  # fmt: skip


# -- staff accounts ------------------------------------------------------------------------
def check_username(username: object) -> str:
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise RequestError(
            "username", "3–40 characters: a lower-case letter, then letters, digits, _ . -", code="USERNAME_INVALID"
        )
    return username


def check_password(password: object, username: str, field: str = "password") -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise RequestError(field, f"must be {MIN_PASSWORD}–{MAX_PASSWORD} characters", code="PASSWORD_WEAK")
    if len(set(password)) < 4 or username.lower() in password.lower():
        raise RequestError(
            field, "too simple (few distinct characters, or contains the username)", code="PASSWORD_WEAK"
        )
    return password


def check_role(role: object) -> str:
    if role not in ROLES:
        raise RequestError("role", f"must be one of {', '.join(ROLES)}", code="ROLE_INVALID")
    assert isinstance(role, str)
    return role


def insert_staff(conn: Connection, username: str, password: str, role: str, now: dt.datetime) -> StaffRecord:
    """Insert a validated staff account (callers validate and audit)."""
    if conn.execute(select(staff_users.c.username).where(staff_users.c.username == username)).first() is not None:
        raise RequestError("username", f"staff user {username} exists", code="STAFF_EXISTS")
    conn.execute(
        insert(staff_users).values(
            username=username, password_hash=hash_password(password), role=role, disabled=False, failed_attempts=0,
            created_at=now, updated_at=now,
        )
    )  # fmt: skip
    return StaffRecord(username, role, False, False, now, now)


def create_staff(db: Db, username: str, password: str, role: str, clock: Clock) -> StaffRecord:
    """Create an agency staff account (the bootstrap admin, or from ``yibao staff add``).

    The password is stored as an Argon2id hash; the creation is audit-logged with actor ``cli``.
    """
    name = check_username(username)
    check_password(password, name)
    kind = check_role(role)

    def work(conn: Connection) -> StaffRecord:
        now = clock()
        record = insert_staff(conn, name, password, kind, now)
        audit(conn, at=now, actor="cli", role="system", action="staff.create", target=f"staff:{name}",
              after={"username": name, "role": kind})  # fmt: skip
        return record

    result: StaffRecord = _run(db, work)
    return result


def active_admins(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(staff_users)
            .where(
                staff_users.c.role == "admin",
                staff_users.c.disabled.is_(False),
                staff_users.c.failed_attempts < STAFF_MAX_ATTEMPTS,
            )
        ).scalar_one()
    )


def revoke_sessions(conn: Connection, kind: str, subject: str, now: dt.datetime) -> None:
    conn.execute(
        update(api_sessions)
        .where(api_sessions.c.kind == kind, api_sessions.c.subject == subject, api_sessions.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


# -- sessions ------------------------------------------------------------------------------
def issue_session(
    conn: Connection, kind: Literal["person", "staff"], subject: str, role: str, now: dt.datetime, ttl: dt.timedelta
) -> Login:
    """A new bearer token for an already authenticated subject."""
    token = "yb_" + secrets.token_urlsafe(32)
    expires = now + ttl
    conn.execute(
        insert(api_sessions).values(
            token_hash=token_hash(token), kind=kind, subject=subject, created_at=now, expires_at=expires,
            revoked_at=None,
        )
    )  # fmt: skip
    return Login(token, Caller(kind, subject, role, expires))


def _unauthenticated(code: str, detail: str) -> ApiError:
    return ApiError(401, code, detail, headers={"WWW-Authenticate": 'Bearer realm="yibao"'})


def authenticate(conn: Connection, token: str | None, now: dt.datetime) -> Caller:
    """The caller a bearer token stands for (401 if none, unknown, revoked or expired)."""
    if not token:
        raise _unauthenticated("UNAUTHENTICATED", "send Authorization: Bearer <token> (POST /v1/sessions)")
    if len(token) > 200:
        raise _unauthenticated("UNAUTHENTICATED", "unknown or revoked token")
    row = conn.execute(select(api_sessions).where(api_sessions.c.token_hash == token_hash(token))).first()
    if row is None or row.revoked_at is not None:
        raise _unauthenticated("UNAUTHENTICATED", "unknown or revoked token")
    if row.expires_at <= now:
        raise _unauthenticated("TOKEN_EXPIRED", "the session expired; log in again")
    if row.kind == "person":
        return Caller("person", row.subject, "person", row.expires_at)
    staff = conn.execute(select(staff_users).where(staff_users.c.username == row.subject)).first()
    if staff is None or staff.disabled:
        raise _unauthenticated("UNAUTHENTICATED", "the staff account is disabled")
    return Caller("staff", row.subject, staff.role, row.expires_at)


@dataclass(frozen=True, slots=True)
class _Refused:
    """A refused login whose writes (failure count, audit row) must be committed first."""

    error: ApiError


def _login_failed(code: str, detail: str) -> ApiError:
    return _unauthenticated(code, detail)


def login_person(ctx: Context, *, id_number: str | None, card_number: str | None, pin: str) -> Login:
    """Log an insured person in with ID or card number + settlement PIN.

    Wrong PINs count towards the portal's own throttle (``credentials.check_portal_pin``:
    a temporary lock, doubling, in the database), never towards the settlement PIN's
    lock that hospital tills check; a settlement PIN locked at a till refuses the login.
    An initial PIN that must be changed still logs in (``pin_must_change``), so that it
    can be changed.
    """

    def work(conn: Connection) -> Login | _Refused:
        now = ctx.clock()
        if id_number is not None:
            credential = Credential("02", id_number)
            shown = f"idcard:{id_number[:6]}…{id_number[-4:]}"
        else:
            assert card_number is not None
            card = repo.credential(conn, "card", card_number)
            # The portal has no chip to read: the stored card_sn stands in, so only status rules apply.
            credential = Credential("03", card_number, card.card_sn if card is not None else None)
            shown = f"card:{card_number}"
        psn_no, reasons = resolve_credential(conn, credential, now)
        refusal: Reason | None = next(iter(reasons), None)
        if psn_no is None or refusal is not None:
            code = refusal.code if refusal is not None else "LOGIN_FAILED"
            if code in ("PERSON_NOT_FOUND", "CREDENTIAL_NOT_FOUND"):
                code = "LOGIN_FAILED"
            audit(conn, at=now, actor=f"person:{psn_no}" if psn_no else "anonymous", role="person",
                  action="session.refused", target=shown, after={"code": code})  # fmt: skip
            detail = "ID/card number or PIN is wrong"
            if refusal is not None and code != "LOGIN_FAILED":
                detail = refusal.message
            return _Refused(_login_failed(code, detail))
        repo.lock_persons(conn, [psn_no])  # concurrent wrong PINs must each count
        pin_reasons = check_portal_pin(conn, psn_no, pin, now)
        failed = next((r for r in pin_reasons if r.code != "PIN_MUST_CHANGE"), None)
        if failed is not None:
            audit(conn, at=now, actor=f"person:{psn_no}", role="person", action="session.refused",
                  target=f"person:{psn_no}", after={"code": failed.code})  # fmt: skip
            return _Refused(_login_failed(failed.code, failed.message))
        login = issue_session(conn, "person", psn_no, "person", now, ctx.person_ttl)
        must_change = any(r.code == "PIN_MUST_CHANGE" for r in pin_reasons)
        audit(conn, at=now, actor=f"person:{psn_no}", role="person", action="session.create",
              target=f"person:{psn_no}", after={"expires_at": login.caller.expires_at, "via": shown})  # fmt: skip
        return Login(login.token, login.caller, must_change)

    outcome = transact(ctx.db, work)
    if isinstance(outcome, _Refused):
        raise outcome.error
    assert isinstance(outcome, Login)
    return outcome


def login_staff(ctx: Context, *, username: str, password: str) -> Login:
    """Log a staff user in; wrong passwords count, and lock the account after STAFF_MAX_ATTEMPTS."""

    def work(conn: Connection) -> Login | _Refused:
        now = ctx.clock()
        query = select(staff_users).where(staff_users.c.username == username)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()  # parallel guesses queue, and each one counts
        row = conn.execute(query).first()
        target = f"staff:{username}"[:80]
        if row is None:
            verify_password(_dummy_hash(), password)  # the same time as a wrong password
            audit(conn, at=now, actor="anonymous", role="staff", action="session.refused", target=target,
                  after={"code": "LOGIN_FAILED"})  # fmt: skip
            return _Refused(_login_failed("LOGIN_FAILED", "username or password is wrong"))
        if row.failed_attempts >= STAFF_MAX_ATTEMPTS:
            audit(conn, at=now, actor=target, role=row.role, action="session.refused", target=target,
                  after={"code": "STAFF_LOCKED"})  # fmt: skip
            return _Refused(_login_failed("STAFF_LOCKED", "too many wrong passwords: an admin must enable the account"))
        if not verify_password(row.password_hash, password):
            failed = int(row.failed_attempts) + 1
            conn.execute(
                update(staff_users)
                .where(staff_users.c.username == username)
                .values(failed_attempts=staff_users.c.failed_attempts + 1, updated_at=now)
            )
            audit(conn, at=now, actor=target, role=row.role, action="session.refused", target=target,
                  after={"code": "LOGIN_FAILED", "failed_attempts": failed})  # fmt: skip
            return _Refused(_login_failed("LOGIN_FAILED", "username or password is wrong"))
        if row.disabled:
            audit(conn, at=now, actor=target, role=row.role, action="session.refused", target=target,
                  after={"code": "STAFF_DISABLED"})  # fmt: skip
            return _Refused(_login_failed("STAFF_DISABLED", "the staff account is disabled"))
        values: dict[str, Any] = {"failed_attempts": 0} if row.failed_attempts else {}
        if _HASHER.check_needs_rehash(row.password_hash):
            values["password_hash"] = hash_password(password)
        if values:
            conn.execute(update(staff_users).where(staff_users.c.username == username).values(**values))
        login = issue_session(conn, "staff", username, row.role, now, ctx.staff_ttl)
        audit(conn, at=now, actor=target, role=row.role, action="session.create", target=target,
              after={"expires_at": login.caller.expires_at})  # fmt: skip
        return login

    outcome = transact(ctx.db, work)
    if isinstance(outcome, _Refused):
        raise outcome.error
    assert isinstance(outcome, Login)
    return outcome


def refuse(caller: Caller, *, role: str | None = None, psn_no: str | None = None) -> None:
    """403 unless the caller is staff of at least ``role``, or (``psn_no`` given) that very person."""
    if psn_no is not None and caller.kind == "person" and caller.subject == psn_no:
        return
    if caller.kind == "staff" and (role is None or caller.at_least(role)):
        return
    if caller.kind == "person":
        if psn_no is not None:
            raise ApiError(403, "NOT_YOUR_DATA", "an insured person may only see and change their own data")
        raise ApiError(403, "STAFF_ONLY", "only agency staff may do this")
    raise ApiError(403, "ROLE_FORBIDDEN", f"needs the {role} role (you are {caller.role})")
