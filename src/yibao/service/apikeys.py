"""API keys of institutions for the gateway's signature authentication."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable

from sqlalchemy import Connection, Engine, insert, select

from ..db.schema import api_keys, institutions
from ..errors import RequestError
from .uow import transact

__all__ = ["active_key", "demo_key", "issue_api_key"]


def issue_api_key(
    db: Engine, fixmedins_code: str, *, clock: Callable[[], dt.datetime], access_key: str | None = None,
    secret: str | None = None,
) -> tuple[str, str]:  # fmt: skip
    """A new (access_key, secret) pair for an institution; idempotent for a given access_key."""
    key = access_key or f"AK{secrets.token_hex(12)}"
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
            if row.fixmedins_code != fixmedins_code:
                raise RequestError("access_key", "already issued to another institution", code="CONFLICT")
            return row.access_key, row.secret
        conn.execute(insert(api_keys).values(access_key=key, secret=value, fixmedins_code=fixmedins_code,
                                             created_at=clock(), revoked_at=None))  # fmt: skip
        return key, value

    return transact(db, work)


def demo_key(fixmedins_code: str) -> tuple[str, str]:
    """The demo region's published key pair for an institution (demo data only, never production)."""
    return f"AK{fixmedins_code}", hashlib.sha256(f"yibao-demo|{fixmedins_code}".encode()).hexdigest()[:32]


def active_key(db: Engine, access_key: str) -> tuple[str, str] | None:
    """(secret, fixmedins_code) of an issued, unrevoked key; None for an unknown or revoked one."""
    row = transact(
        db, lambda conn: conn.execute(select(api_keys).where(api_keys.c.access_key == access_key)).first(),
        readonly=True,
    )  # fmt: skip
    if row is None or row.revoked_at is not None:
        return None
    return str(row.secret), str(row.fixmedins_code)
