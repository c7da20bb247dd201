"""Gateway keys of institutions: issue, revoke, and look up for signature authentication.

A key has a scheme: ``api`` — the ``_api_*`` headers signed with HMAC-SHA1 (secret = the
key's secret) — or ``tif`` — the ``x-tif-*`` headers, ``x-tif-paasid`` = the access key and
the SHA-256 signature made with the secret as its token (gateway/signature.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, insert, select, update

from ..db.schema import api_keys, institutions
from ..errors import RequestError
from .uow import transact

__all__ = [
    "SCHEMES", "GatewayKey", "KeyRecord", "active_key", "demo_key", "issue_api_key", "issue_key_in", "keys_of",
    "revoke_api_key", "revoke_key_in",
]  # fmt: skip

#: Signature schemes a key may use.
SCHEMES = ("api", "tif")
#: Keys listed per institution at most.
MAX_KEYS_LISTED = 200
_ACCESS_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{4,64}$")


class GatewayKey(NamedTuple):
    """An active key as authentication needs it."""

    secret: str
    fixmedins_code: str
    scheme: str
    admdvs: str  # the institution's region, whose gateway rules apply (policy ``gateway``)


class KeyRecord(NamedTuple):
    """An issued key as the agency sees it (the secret only on issue)."""

    access_key: str
    fixmedins_code: str
    scheme: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    secret: str | None = None


def _record(row: Any, *, with_secret: bool = False) -> KeyRecord:
    return KeyRecord(str(row.access_key), str(row.fixmedins_code), str(row.scheme), row.created_at, row.revoked_at,
                     str(row.secret) if with_secret else None)  # fmt: skip


def issue_key_in(
    conn: Connection, fixmedins_code: str, *, now: dt.datetime, access_key: str | None = None,
    secret: str | None = None, scheme: str = "api",
) -> KeyRecord:  # fmt: skip
    """Issue a key to an institution in the caller's unit of work; idempotent for a given access_key."""
    if scheme not in SCHEMES:
        raise RequestError("scheme", f"须为 {' 或 '.join(SCHEMES)}")
    key = access_key or f"{'AK' if scheme == 'api' else 'TIF'}{secrets.token_hex(12)}"
    if not _ACCESS_KEY_RE.match(key):
        raise RequestError("access_key", "4 到 64 个字母、数字或 _ . -")
    institution = select(institutions.c.fixmedins_code).where(institutions.c.fixmedins_code == fixmedins_code)
    if conn.execute(institution).first() is None:
        raise RequestError("fixmedins_code", f"机构 {fixmedins_code} 未登记", code="NOT_FOUND")
    row = conn.execute(select(api_keys).where(api_keys.c.access_key == key)).first()
    if row is not None:
        if row.fixmedins_code != fixmedins_code or row.scheme != scheme:
            raise RequestError("access_key", "该密钥已发给其他机构或用于其他签名方式", code="CONFLICT")
        return _record(row, with_secret=True)
    value = secret or secrets.token_urlsafe(32)
    conn.execute(insert(api_keys).values(access_key=key, secret=value, fixmedins_code=fixmedins_code, created_at=now,
                                         revoked_at=None, scheme=scheme))  # fmt: skip
    return KeyRecord(key, fixmedins_code, scheme, now, None, value)


def revoke_key_in(conn: Connection, access_key: str, *, now: dt.datetime, fixmedins_code: str | None = None) -> (
    KeyRecord | None
):  # fmt: skip
    """Revoke an active key (of ``fixmedins_code`` when given) in the caller's unit of work; None if there is no
    such active key. Server processes stop trusting it within their key cache's TTL."""
    query = update(api_keys).where(api_keys.c.access_key == access_key, api_keys.c.revoked_at.is_(None))
    if fixmedins_code is not None:
        query = query.where(api_keys.c.fixmedins_code == fixmedins_code)
    done = conn.execute(query.values(revoked_at=now).returning(*api_keys.c)).first()
    return None if done is None else _record(done)


def keys_of(conn: Connection, fixmedins_code: str, *, limit: int = MAX_KEYS_LISTED) -> list[KeyRecord]:
    """An institution's keys, newest first, without their secrets."""
    rows = conn.execute(
        select(api_keys).where(api_keys.c.fixmedins_code == fixmedins_code)
        .order_by(api_keys.c.created_at.desc(), api_keys.c.access_key).limit(limit)
    ).all()  # fmt: skip
    return [_record(row) for row in rows]


def issue_api_key(
    db: Engine, fixmedins_code: str, *, clock: Callable[[], dt.datetime], access_key: str | None = None,
    secret: str | None = None, scheme: str = "api",
) -> tuple[str, str]:  # fmt: skip
    """A new (access_key, secret) pair for an institution; idempotent for a given access_key."""
    record = transact(db, lambda conn: issue_key_in(conn, fixmedins_code, now=clock(), access_key=access_key,
                                                    secret=secret, scheme=scheme))  # fmt: skip
    assert record.secret is not None
    return record.access_key, record.secret


def revoke_api_key(db: Engine, access_key: str, *, clock: Callable[[], dt.datetime]) -> bool:
    """Revoke a key; False if there is no such active key."""
    return transact(db, lambda conn: revoke_key_in(conn, access_key, now=clock())) is not None


def demo_key(fixmedins_code: str, scheme: str = "api") -> tuple[str, str]:
    """The demo region's published key pair for an institution (demo data only, never production)."""
    seed = f"yibao-demo|{fixmedins_code}" if scheme == "api" else f"yibao-demo|{scheme}|{fixmedins_code}"
    prefix = "AK" if scheme == "api" else "TIF"
    return f"{prefix}{fixmedins_code}", hashlib.sha256(seed.encode()).hexdigest()[:32]


def active_key(db: Engine, access_key: str) -> GatewayKey | None:
    """The issued, unrevoked key; None for an unknown or revoked one."""
    query = (
        select(api_keys, institutions.c.admdvs)
        .join(institutions, institutions.c.fixmedins_code == api_keys.c.fixmedins_code)
        .where(api_keys.c.access_key == access_key)
    )
    row = transact(db, lambda conn: conn.execute(query).first(), readonly=True)
    if row is None or row.revoked_at is not None:
        return None
    return GatewayKey(str(row.secret), str(row.fixmedins_code), str(row.scheme), str(row.admdvs))
