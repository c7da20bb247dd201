"""Credentials at settlement time: which person a credential names, and PIN checks.

Social security card (card number + ``card_sn``), e-voucher token (expiring),
ID number (``mdtrt_cert_type`` 03 / 01 / 02). The settlement PIN is an Argon2id
hash; wrong PINs count towards a lock, the initial PIN must be changed before
the account pays anything.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, update

from ..db import repository as repo
from ..db import settlement_rows as rows
from ..db.schema import pins
from ..errors import Reason

__all__ = ["CERT_TYPES", "Credential", "check_pin", "hash_pin", "judge_credential", "resolve_credential"]

#: mdtrt_cert_type → stored credential kind.
CERT_TYPES = {"01": "evoucher", "02": "idcard", "03": "card"}
# Argon2id with modest cost: a settlement verifies at most one PIN.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)


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
    if kind == "card" and (cred.card_sn or "") != (row.card_sn or ""):
        reasons.append(Reason("CARD_SN_MISMATCH", "社保卡卡识别码 (card_sn) 不符"))
    if row.status == "temp_lost":
        reasons.append(Reason("CREDENTIAL_TEMP_LOST", "社保卡已临时挂失, 请先解挂"))
    elif row.status in ("lost", "replaced"):
        reasons.append(Reason("CREDENTIAL_LOST", "社保卡已正式挂失或已补换, 不能使用"))
    if row.expires_at is not None and row.expires_at < now:
        reasons.append(Reason("CREDENTIAL_EXPIRED", "医保电子凭证已过期, 请重新出示"))
    return str(row.psn_no), reasons


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
    try:
        _HASHER.verify(row.pin_hash, pin)
    except (VerificationError, InvalidHashError):
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
