"""Unit of work: one database transaction that rolls back unless committed.

:func:`transact` runs a function in a fresh unit of work and retries it, a
bounded number of times, when the database reports a transient conflict
(PostgreSQL deadlock or serialization failure, SQLite busy, a concurrent
insert of the same idempotency key, or a connection the server dropped), so
callers never see those as errors. Where the engine has a limit on units of work
in flight (:mod:`.admission`), a unit of work first waits for its turn.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from ..db import make_engine
from .admission import limit_for

# Engine: the database handle entrypoints hold and pass to the service layer (they import it from here).
__all__ = ["MAX_ATTEMPTS", "Engine", "UnitOfWork", "open_database", "transact"]

T = TypeVar("T")

#: Attempts before a transient conflict is reported to the caller.
MAX_ATTEMPTS = 12
_RETRY_SQLSTATES = {"40001", "40P01", "55P03"}


def open_database(url: str | None = None, *, pool_size: int = 40) -> Engine:
    """The database units of work run on: ``url``, else ``YIBAO_DATABASE_URL``, else the embedded SQLite file;
    at most ``pool_size`` connections."""
    return make_engine(url, pool_size=pool_size)


class UnitOfWork:
    """``with UnitOfWork(engine) as uow: …; uow.commit()`` — anything else rolls back."""

    def __init__(self, engine: Engine, *, readonly: bool = False) -> None:
        self._engine = engine
        self._readonly = readonly
        self._committed = False

    def __enter__(self) -> UnitOfWork:
        self._limit = limit_for(self._engine)
        if self._limit is not None:
            self._limit.acquire()  # may wait for a turn (admission.py)
        try:
            conn = self._engine.connect()
            if self._readonly:
                conn = conn.execution_options(yibao_readonly=True)
            self.conn: Connection = conn
            self._tx = conn.begin()
        except BaseException:
            self._release()
            raise
        return self

    def commit(self) -> None:
        self._tx.commit()
        self._committed = True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if not self._committed and self._tx.is_active:
                self._tx.rollback()
        finally:
            try:
                self.conn.close()
            finally:
                self._release()

    def _release(self) -> None:
        if self._limit is not None:
            self._limit.release()
            self._limit = None


def _transient(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        # The server dropped the connection (restart, idle timeout): the pool has discarded
        # it; a retry runs on a fresh one. A commit lost on the way is found by the retry's
        # msgid / idempotency check.
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _RETRY_SQLSTATES:
        return True
    if isinstance(exc, IntegrityError):
        # A concurrent first attempt of the same msgid committed first: retry to replay it.
        return "messages" in str(orig) or "uq_settlements_reverses_setl_id" in str(orig)
    return isinstance(exc, OperationalError) and "database is locked" in str(orig)


def transact(engine: Engine, work: Callable[[Connection], T], *, readonly: bool = False) -> T:
    """Run ``work(conn)`` in a unit of work, committing if it returns; retry transient conflicts."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with UnitOfWork(engine, readonly=readonly) as uow:
                result = work(uow.conn)
                uow.commit()
                return result
        except DBAPIError as exc:
            if attempt == MAX_ATTEMPTS or not _transient(exc):
                raise
            # Jittered backoff, capped: a conflict resolves as soon as the other transaction ends.
            time.sleep(min(0.2, 0.002 * 2**attempt) * random.random())
    raise AssertionError("unreachable")
