"""Credentials at settlement time: which person a credential names, and PIN checks.

Social security card (card number + ``card_sn``), e-voucher token (expiring),
ID number (``mdtrt_cert_type`` 03 / 01 / 02). The settlement PIN is an Argon2id
hash; wrong PINs count towards a lock, the initial PIN must be changed before
the account pays anything.

The /v1 portal checks the same PIN with :func:`check_portal_pin`, which keeps its own
count (``portal_logins``): a wrong PIN online locks the portal for a while and never
the settlement PIN, so a stranger who knows someone's ID number cannot stop them
paying at a hospital. A settlement PIN locked at a till still refuses the portal.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, insert, select, update

from ..db import repository as repo
from ..db import settlement_rows as rows
from ..db.schema import pins, portal_logins
from ..errors import Reason

__all__ = [
    "CERT_TYPES",
    "PORTAL_FREE_ATTEMPTS",
    "PORTAL_LOCK_BASE",
    "PORTAL_LOCK_MAX",
    "Credential",
    "check_pin",
    "check_portal_pin",
    "clear_portal_lock",
    "hash_pin",
    "judge_credential",
    "portal_lock_period",
    "resolve_credential",
]

#: mdtrt_cert_type → stored credential kind.
CERT_TYPES = {"01": "evoucher", "02": "idcard", "03": "card"}
# Argon2id with modest cost: a settlement verifies at most one PIN.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
#: Wrong PINs at the portal before it locks (the settlement PIN is not affected).
PORTAL_FREE_ATTEMPTS = 5
#: The first portal lock; each further wrong PIN doubles it, up to PORTAL_LOCK_MAX.
PORTAL_LOCK_BASE = dt.timedelta(minutes=15)
PORTAL_LOCK_MAX = dt.timedelta(hours=24)


class Credential(NamedTuple):
    """What the HIS presented: ``mdtrt_cert_type`` and ``mdtrt_cert_no`` (+ ``card_sn``, PIN)."""

    cert_type: str
    number: str
    card_sn: str | None = None
    pin: str | None = None


def hash_pin(pin: str) -> str:
    return _HASHER.hash(pin)


def resolve_credential(conn: Connection, cred: Credential, now: dt.datetime) -> tuple[str | None, list[Reason]]:
    """The person the credential names, and the reasons it cannot be used (empty if fine)."""
    kind = CERT_TYPES.get(cred.cert_type)
    if kind is None:
        return judge_credential(cred, None, now)
    return judge_credential(cred, rows.read_credential(conn, kind, cred.number), now)


def judge_credential(
    cred: Credential, row: rows.CredentialRow | None, now: dt.datetime
) -> tuple[str | None, list[Reason]]:
    """:func:`resolve_credential` over the row already read for ``CERT_TYPES[cred.cert_type]``."""
    kind = CERT_TYPES.get(cred.cert_type)
    if kind is None:
        return None, [
            Reason("CERT_TYPE_INVALID", f"凭证类型 {cred.cert_type} 无效 (01 电子凭证, 02 身份证, 03 社保卡)")
        ]
    if row is None:
        if kind == "idcard":
            return None, [Reason("PERSON_NOT_FOUND", "身份证号未登记参保")]
        return None, [Reason("CREDENTIAL_NOT_FOUND", "凭证不存在")]
    reasons: list[Reason] = []
    # A card_sn given must be the card's; none given (a registration, which the national interface
    # sends without it) is judged as an ID number is.
    if kind == "card" and cred.card_sn is not None and cred.card_sn != (row.card_sn or ""):
        reasons.append(Reason("CARD_SN_MISMATCH", "社保卡卡识别码 (card_sn) 不符"))
    if row.status == "temp_lost":
        reasons.append(Reason("CREDENTIAL_TEMP_LOST", "社保卡已临时挂失, 请先解挂"))
    elif row.status in ("lost", "replaced"):
        reasons.append(Reason("CREDENTIAL_LOST", "社保卡已正式挂失或已补换, 不能使用"))
    if row.expires_at is not None and row.expires_at < now:
        reasons.append(Reason("CREDENTIAL_EXPIRED", "医保电子凭证已过期, 请重新出示"))
    return str(row.psn_no), reasons


def _verify(pin_hash: str, pin: str) -> bool:
    try:
        return _HASHER.verify(pin_hash, pin)
    except (VerificationError, InvalidHashError):
        return False


def check_pin(conn: Connection, psn_no: str, pin: str | None, max_attempts: int, now: dt.datetime) -> list[Reason]:
    """Verify the settlement PIN; counts failures and locks after ``max_attempts``.

    The failure count must survive the caller's rollback, so callers that refuse
    the settlement still commit this function's writes (see SettlementService).
    """
    row = repo.pin_row(conn, psn_no)
    if row is None:
        return [Reason("PIN_NOT_SET", "未设置医保支付密码")]
    if row.locked:
        return [Reason("PIN_LOCKED", f"密码错误已达 {max_attempts} 次, 账户支付已锁定, 请到经办机构解锁")]
    if pin is None:
        return [Reason("PIN_REQUIRED", "使用个人账户须输入医保支付密码")]
    if not _verify(row.pin_hash, pin):
        failed = row.failed_attempts + 1
        locked = failed >= max_attempts
        conn.execute(
            update(pins).where(pins.c.psn_no == psn_no).values(failed_attempts=failed, locked=locked, updated_at=now)
        )
        left = max_attempts - failed
        message = "密码错误, 账户支付已锁定" if locked else f"密码错误, 还可尝试 {left} 次"
        return [Reason("PIN_LOCKED" if locked else "PIN_WRONG", message)]
    if row.failed_attempts:
        conn.execute(update(pins).where(pins.c.psn_no == psn_no).values(failed_attempts=0, updated_at=now))
    if row.must_change:
        return [Reason("PIN_MUST_CHANGE", "初始密码须先修改后才能使用个人账户支付")]
    return []


def portal_lock_period(failed_attempts: int) -> dt.timedelta | None:
    """How long the portal stays locked after this many consecutive wrong PINs (None: not locked)."""
    if failed_attempts < PORTAL_FREE_ATTEMPTS:
        return None
    doublings = min(failed_attempts - PORTAL_FREE_ATTEMPTS, 16)  # 2**16 × 15 min is far past the cap
    return min(PORTAL_LOCK_BASE * (1 << doublings), PORTAL_LOCK_MAX)


def _portal_locked(until: dt.datetime) -> Reason:
    return Reason("PORTAL_LOCKED", f"密码错误次数过多, 网上服务登录已暂停至 {until:%Y-%m-%d %H:%M:%S}, 请届时再试")


def check_portal_pin(conn: Connection, psn_no: str, pin: str, now: dt.datetime) -> list[Reason]:
    """Verify the settlement PIN for a portal login, with the portal's own throttle.

    The caller holds the person's row lock (concurrent guesses must each count) and
    commits this function's writes even when it refuses the login. Reasons, in order:
    ``PIN_NOT_SET``; ``PIN_LOCKED`` (the settlement PIN's lock, from a till or an old
    PIN change, applies here too); ``PORTAL_LOCKED`` while the portal lock lasts —
    without looking at the PIN, so the lock cannot tell a guesser they hit it;
    ``PIN_WRONG`` (counted in ``portal_logins``: after :data:`PORTAL_FREE_ATTEMPTS`
    the portal locks for :data:`PORTAL_LOCK_BASE`, doubled for every further wrong
    PIN, at most :data:`PORTAL_LOCK_MAX`; the answer is then ``PORTAL_LOCKED``). A
    right PIN clears the count and adds ``PIN_MUST_CHANGE`` for an initial PIN. The
    settlement PIN's own count is never changed here.
    """
    row = repo.pin_row(conn, psn_no)
    if row is None:
        return [Reason("PIN_NOT_SET", "未设置医保支付密码")]
    if row.locked:
        return [Reason("PIN_LOCKED", "医保支付密码已锁定, 请到经办机构解锁")]
    throttle = conn.execute(select(portal_logins).where(portal_logins.c.psn_no == psn_no)).first()
    if throttle is not None and throttle.locked_until is not None and throttle.locked_until > now:
        return [_portal_locked(throttle.locked_until)]
    if not _verify(row.pin_hash, pin):
        failed = (throttle.failed_attempts if throttle is not None else 0) + 1
        period = portal_lock_period(failed)
        until = now + period if period is not None else None
        values = {"failed_attempts": failed, "locked_until": until, "updated_at": now}
        if throttle is None:
            conn.execute(insert(portal_logins).values(psn_no=psn_no, **values))
        else:
            conn.execute(update(portal_logins).where(portal_logins.c.psn_no == psn_no).values(**values))
        if until is not None:
            return [_portal_locked(until)]
        return [Reason("PIN_WRONG", f"密码错误, 还可尝试 {PORTAL_FREE_ATTEMPTS - failed} 次")]
    if throttle is not None and (throttle.failed_attempts or throttle.locked_until is not None):
        clear_portal_lock(conn, psn_no, now)
    if row.must_change:
        return [Reason("PIN_MUST_CHANGE", "初始密码须先修改后才能使用个人账户支付")]
    return []


def clear_portal_lock(conn: Connection, psn_no: str, now: dt.datetime) -> None:
    """Forget the portal's count of wrong PINs (a right PIN, or the agency's PIN reset)."""
    conn.execute(
        update(portal_logins)
        .where(portal_logins.c.psn_no == psn_no)
        .values(failed_attempts=0, locked_until=None, updated_at=now)
    )
