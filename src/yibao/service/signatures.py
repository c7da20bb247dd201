"""Each gateway request signature is accepted once (防重放), across every server process.

Provincial gateway signatures cover headers only (the key, a timestamp, the service name),
never the body, so a captured set of signed headers could carry other bodies for as long
as its timestamp stays inside the replay window. The database is the place every worker
process shares: the first request to present a signature records it until the window has
passed; any later one with the same (access key, signature) is refused.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

from sqlalchemy import Connection, Engine, delete
from sqlalchemy.dialects import postgresql, sqlite

from ..db.schema import gateway_signatures
from .uow import transact

__all__ = ["PURGE_EVERY_S", "accept_signature"]

#: How often (at most) one process deletes the records whose window has passed.
PURGE_EVERY_S = 1.0
_purge = {"at": 0.0}
_purge_lock = threading.Lock()


def accept_signature(db: Engine, access_key: str, signature: str, expires_at: dt.datetime, now: dt.datetime) -> bool:
    """Record ``signature`` of ``access_key`` until ``expires_at``; False if it was seen before.

    Both values are bounded by the caller (header lengths). Expired records are deleted by
    the process that next accepts a signature, at most every :data:`PURGE_EVERY_S` seconds.
    """
    assert len(access_key) <= 64 and len(signature) <= 128 and expires_at > now
    purge = False
    with _purge_lock:
        if time.monotonic() - _purge["at"] >= PURGE_EVERY_S:
            _purge["at"] = time.monotonic()
            purge = True

    def work(conn: Connection) -> bool:
        if purge:
            conn.execute(delete(gateway_signatures).where(gateway_signatures.c.expires_at < now))
        values = {"access_key": access_key, "signature": signature, "expires_at": expires_at}
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(gateway_signatures).values(values).on_conflict_do_nothing()
        return conn.execute(stmt.returning(gateway_signatures.c.access_key)).first() is not None

    return transact(db, work)
