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
from typing import NamedTuple

from sqlalchemy import Connection, Engine, insert, select, update

from ..db.schema import api_keys, institutions
from ..errors import RequestError
from .uow import transact

__all__ = ["SCHEMES", "GatewayKey", "active_key", "demo_key", "issue_api_key", "revoke_api_key"]

#: Signature schemes a key may use.
SCHEMES = ("api", "tif")
_ACCESS_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{4,64}$")


class GatewayKey(NamedTuple):
    """An active key as authentication needs it."""

    secret: str
    fixmedins_code: str
    scheme: str


def issue_api_key(
    db: Engine, fixmedins_code: str, *, clock: Callable[[], dt.datetime], access_key: str | None = None,
    secret: str | None = None, scheme: str = "api",
) -> tuple[str, str]:  # fmt: skip
    """A new (access_key, secret) pair for an institution; idempotent for a given access_key."""
    if scheme not in SCHEMES:
        raise RequestError("scheme", f"须为 {' 或 '.join(SCHEMES)}")
    key = access_key or f"{'AK' if scheme == 'api' else 'TIF'}{secrets.token_hex(12)}"
    if not _ACCESS_KEY_RE.match(key):
        raise RequestError("access_key", "4 到 64 个字母、数字或 _ . -")
    value = secret or secrets.token_urlsafe(32)

    def work(conn: Connection) -> tuple[str, str]:
        if (
            conn.execute(
                select(institutions.c.fixmedins_code).where(institutions.c.fixmedins_code == fixmedins_code)
            ).first()
            is None
        ):
            raise RequestError("fixmedins_code", f"no institution {fixmedins_code}", code="NOT_FOUND")
        row = conn.execute(select(api_keys).where(api_keys.c.access_key == key)).first()
        if row is not None:
            if row.fixmedins_code != fixmedins_code or row.scheme != scheme:
                raise RequestError("access_key", "already issued to another institution or scheme", code="CONFLICT")
            return row.access_key, row.secret
        conn.execute(insert(api_keys).values(access_key=key, secret=value, fixmedins_code=fixmedins_code,
                                             created_at=clock(), revoked_at=None, scheme=scheme))  # fmt: skip
        return key, value

    return transact(db, work)


def revoke_api_key(db: Engine, access_key: str, *, clock: Callable[[], dt.datetime]) -> bool:
    """Revoke a key (from now on refused; server processes stop trusting it within their key cache's TTL).
    False if there is no such active key."""

    def work(conn: Connection) -> bool:
        done = conn.execute(
            update(api_keys)
            .where(api_keys.c.access_key == access_key, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=clock())
            .returning(api_keys.c.access_key)
        ).first()
        return done is not None

    return transact(db, work)


def demo_key(fixmedins_code: str, scheme: str = "api") -> tuple[str, str]:
    """The demo region's published key pair for an institution (demo data only, never production)."""
    seed = f"yibao-demo|{fixmedins_code}" if scheme == "api" else f"yibao-demo|{scheme}|{fixmedins_code}"
    prefix = "AK" if scheme == "api" else "TIF"
    return f"{prefix}{fixmedins_code}", hashlib.sha256(seed.encode()).hexdigest()[:32]


def active_key(db: Engine, access_key: str) -> GatewayKey | None:
    """The issued, unrevoked key; None for an unknown or revoked one."""
    row = transact(
        db, lambda conn: conn.execute(select(api_keys).where(api_keys.c.access_key == access_key)).first(),
        readonly=True,
    )  # fmt: skip
    if row is None or row.revoked_at is not None:
        return None
    return GatewayKey(str(row.secret), str(row.fixmedins_code), str(row.scheme))
