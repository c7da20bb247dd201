"""Database connections: embedded SQLite by default, PostgreSQL in production.

SQLite runs in WAL mode with ``synchronous=FULL``; every write transaction starts
with ``BEGIN IMMEDIATE`` so writers queue for the single write lock up front
instead of failing half-way. PostgreSQL uses READ COMMITTED plus explicit row
locks taken by the service layer in a fixed order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

__all__ = ["DEFAULT_SQLITE_PATH", "database_url", "is_sqlite", "make_engine"]

DEFAULT_SQLITE_PATH = Path("var/yibao.db")
#: How long a writer waits for SQLite's write lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def database_url(url: str | None = None) -> str:
    """The URL to use: explicit, else ``YIBAO_DATABASE_URL``, else the embedded SQLite file."""
    if url:
        return url
    env = os.environ.get("YIBAO_DATABASE_URL")
    if env:
        return env
    return f"sqlite:///{DEFAULT_SQLITE_PATH}"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str | None = None, *, pool_size: int = 40, echo: bool = False) -> Engine:
    """An engine configured for yibao's transaction discipline."""
    resolved = make_url(database_url(url))
    if resolved.get_backend_name() == "sqlite":
        database = resolved.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            resolved,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=0,
        )
        _sqlite_discipline(engine)
        return engine
    if resolved.get_backend_name() == "postgresql" and resolved.drivername == "postgresql":
        resolved = resolved.set(drivername="postgresql+psycopg")
    # No pre-ping: it would cost a round trip per unit of work. A connection the server
    # dropped fails its first statement, is invalidated, and the unit of work retries
    # on a fresh one (uow.transact).
    # prepare_threshold=None: psycopg prepares nothing of its own. Its rollback would
    # otherwise send DEALLOCATE ALL, dropping the hot path's statements (db.pg_pipeline).
    return create_engine(
        resolved, echo=echo, pool_size=pool_size, max_overflow=0, pool_recycle=3600, isolation_level="READ COMMITTED",
        connect_args={"prepare_threshold": None},
    )  # fmt: skip


def _sqlite_discipline(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin() emit our own BEGIN instead of pysqlite's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get("yibao_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
