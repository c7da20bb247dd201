"""Driver-level statements for the settlement hot path, inside the unit of work's transaction.

A settlement's statements are small key lookups and inserts; SQLAlchemy Core's
per-statement work (compilation cache, parameter processing, result proxies) costs
more than the database spends on them, and on PostgreSQL every statement is a round
trip. Here the hot path talks to the DB-API driver under the same ``Connection``:

- PostgreSQL: a *batch* of statements, each prepared once per connection, sent in one
  libpq pipeline (one round trip) with every result read back (:mod:`.pg_pipeline`);
- sqlite3: the statements in order, on the driver's statement cache.

SQL is written once with ``?`` placeholders (numbered ``$n`` for PostgreSQL).
Parameters are plain values; dates and timestamps are stored as SQLAlchemy stores
them, so rows written here and rows written through Core read back the same.
Driver errors are re-raised as SQLAlchemy's ``DBAPIError`` subclasses, so callers
and the unit of work's retry rule see one exception tree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from . import pg_pipeline

__all__ = ["Statement", "as_date", "as_datetime", "batch", "is_postgresql", "write"]

#: One statement and its positional parameters.
Statement = tuple[str, Sequence[Any]]

#: Upper bound on statements per batch: a batch is one settlement's reads or writes.
MAX_BATCH = 64

#: Parameters per merged statement: bounds how many statement shapes (each prepared once
#: per connection) the merging can make.
MAX_MERGED_PARAMS = 50


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _sqlite_param(value: Any) -> Any:
    # The text forms SQLAlchemy's SQLite types use (sortable ISO strings).
    if isinstance(value, float):
        raise TypeError("no float parameters: money is integer fen")
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


def batch(
    conn: Connection, statements: Sequence[Statement], *, commit: bool = False
) -> list[list[tuple[Any, ...]]]:
    """Run ``statements`` in order in the open transaction; each one's rows (``[]`` if none).

    ``commit`` ends the transaction with them, in the same round trip: for a unit of
    work's last statements (its own commit then finds nothing left to do)."""
    assert 0 < len(statements) <= MAX_BATCH, len(statements)
    raw: Any = conn.connection.driver_connection
    assert raw is not None, "the connection is open"
    sql, params = statements[0]
    try:
        if is_postgresql(conn):
            return pg_pipeline.run(raw, statements, commit=commit)
        converted = [[_sqlite_param(p) for p in params] for _sql, params in statements]  # before any runs
        out = []
        cursor = raw.cursor()
        try:
            for (sql, _params), values in zip(statements, converted, strict=True):
                cursor.execute(sql, values)
                out.append(cursor.fetchall())
            if commit:
                cursor.execute("COMMIT")
        finally:
            cursor.close()
        return out
    except conn.dialect.loaded_dbapi.Error as exc:
        dropped = conn.dialect.is_disconnect(exc, raw, None)
        if dropped:
            conn.invalidate(exc)  # as SQLAlchemy does for its own statements: the pool discards it
        raise DBAPIError.instance(
            sql, params, exc, conn.dialect.loaded_dbapi.Error, connection_invalidated=dropped, dialect=conn.dialect
        ) from exc


def write(conn: Connection, statements: Sequence[Statement], *, commit: bool = False) -> None:
    """Run data-changing statements that return nothing, all or none, in one round trip
    (with ``commit``, the transaction's commit too: see :func:`batch`).

    On PostgreSQL consecutive statements are joined into few statements (at most
    :data:`MAX_MERGED_PARAMS` parameters each) — each but the last a data-modifying
    ``WITH`` part — so the server parses, plans and executes fewer statements. Parts of
    one statement run on one snapshot and must not touch the same row twice (callers
    merge such changes); foreign keys between parts hold, as they are checked at the end.
    """
    if not is_postgresql(conn):
        batch(conn, statements, commit=commit)
        return
    merged: list[Statement] = []
    group: list[Statement] = []
    for statement in [*statements, ("", ())]:  # the sentinel flushes the last group
        if statement[0] and sum(len(p) for _s, p in group) + len(statement[1]) <= MAX_MERGED_PARAMS:
            group.append(statement)
            continue
        if group:
            head = ", ".join(f"w{i} AS ({sql})" for i, (sql, _p) in enumerate(group[:-1]))
            params = [value for _sql, values in group for value in values]
            merged.append((f"WITH {head} {group[-1][0]}" if head else group[-1][0], params))
        group = [statement]
    batch(conn, merged, commit=commit)


def as_date(value: Any) -> dt.date | None:
    """A DATE column as read by either driver (SQLite returns the ISO text)."""
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value[:10])


def as_datetime(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value)
