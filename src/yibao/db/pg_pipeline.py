"""A batch of statements sent straight through libpq's pipeline mode, on psycopg's connection.

psycopg's cursor layer spends about 45 µs of Python per statement (query conversion,
dumpers, result objects, its pipeline bookkeeping), several times what the server
spends on the settlement's key lookups. Here the same connection's ``pgconn`` (psycopg's
libpq wrapper) is driven directly: each statement is prepared once per connection under
a name of its own, every statement of a batch is sent as one pipeline ending in a sync,
and rows come back in text format, converted by column type.

The connection stays psycopg's: transaction state lives in libpq, so psycopg's own
``commit()`` and ``rollback()`` see the transaction this module began (psycopg begins
one lazily on its first statement; so does :func:`run`). Statement names here start
with ``yb`` and never collide with psycopg's own (``_pg3_…``); the engine turns
psycopg's own preparing off, as its rollback deallocates every prepared statement.

Parameters are sent as text: ``str`` with no type (the server infers it from the
statement, as psycopg does), ``int`` as int8, ``bool``, ``date``, naive ``datetime`` as
timestamp (money is integer fen: no decimals are sent). Result columns of other types than those the
settlement's statements read are refused loudly, not guessed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import select
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import ExecStatus, TransactionStatus

__all__ = ["run"]

#: Prepared statements kept per connection; past this the connection forgets them all.
MAX_PREPARED = 256

# Type OIDs (pg_type.oid): fixed since PostgreSQL 7.
_BOOL, _INT8, _INT2, _INT4, _TEXT, _BPCHAR, _VARCHAR = 16, 20, 21, 23, 25, 1042, 1043
_DATE, _TIMESTAMP, _TIMESTAMPTZ, _NUMERIC, _UNKNOWN = 1082, 1114, 1184, 1700, 705


def _numeric(value: bytes) -> int | Decimal:
    text = value.decode()
    return Decimal(text) if "." in text else int(text)


def _timestamp(value: bytes) -> dt.datetime:
    return dt.datetime.fromisoformat(value.decode())


_LOADERS: dict[int, Callable[[bytes], Any]] = {
    _BOOL: lambda v: v == b"t",
    _INT2: int,
    _INT4: int,
    _INT8: int,
    _TEXT: bytes.decode,
    _BPCHAR: bytes.decode,
    _VARCHAR: bytes.decode,
    _UNKNOWN: bytes.decode,
    _DATE: lambda v: dt.date.fromisoformat(v.decode()),
    _TIMESTAMP: _timestamp,
    _TIMESTAMPTZ: _timestamp,
    _NUMERIC: _numeric,
}


def _dump(value: Any) -> tuple[int, bytes | None]:
    """(type OID, text) of one parameter; OID 0 lets the server infer a string's type."""
    if value is None:
        return 0, None
    if isinstance(value, str):
        return 0, value.encode()
    if isinstance(value, float):
        raise TypeError("no float parameters: money is integer fen")
    if isinstance(value, bool):  # before int: bool is an int
        return _BOOL, b"t" if value else b"f"
    if isinstance(value, int):
        return _INT8, str(value).encode()
    if isinstance(value, dt.datetime):
        return (_TIMESTAMP if value.tzinfo is None else _TIMESTAMPTZ), value.isoformat(" ").encode()
    if isinstance(value, dt.date):
        return _DATE, value.isoformat().encode()
    raise TypeError(f"no text form for a parameter of type {type(value).__name__}")


_NUMBERED: dict[str, bytes] = {}
_NAMES: dict[tuple[str, tuple[int, ...]], bytes] = {}
_SERIALS = itertools.count()


def _numbered(sql: str) -> bytes:
    """``?`` placeholders as ``$1, $2, …`` (the statements hold no ``?`` inside literals)."""
    converted = _NUMBERED.get(sql)
    if converted is None:
        parts = sql.split("?")
        converted = (parts[0] + "".join(f"${i}{tail}" for i, tail in enumerate(parts[1:], 1))).encode()
        if len(_NUMBERED) < 4096:
            _NUMBERED[sql] = converted
    return converted


#: Statement names handed out per process; past this every new statement runs unnamed.
MAX_NAMES = 4096


def _name(sql: str, types: tuple[int, ...]) -> bytes:
    key = (sql, types)
    name = _NAMES.get(key)
    if name is None:
        if len(_NAMES) >= MAX_NAMES:  # never expected: the statement shapes are few
            return b""  # the unnamed statement, prepared before each use
        # Threads race here: a serial number each (next() is atomic) and the first name
        # stored wins, so one name never stands for two statements.
        name = _NAMES.setdefault(key, f"yb{next(_SERIALS)}".encode())
    return name


def _begin_command(raw: psycopg.Connection[Any]) -> bytes:
    parts = [b"BEGIN"]
    if raw.isolation_level is not None:
        parts.append(b"ISOLATION LEVEL " + raw.isolation_level.name.replace("_", " ").encode())
    if raw.read_only is not None:
        parts.append(b"READ ONLY" if raw.read_only else b"READ WRITE")
    if raw.deferrable is not None:
        parts.append(b"DEFERRABLE" if raw.deferrable else b"NOT DEFERRABLE")
    return b" ".join(parts)


def run(
    raw: psycopg.Connection[Any], statements: Sequence[tuple[str, Sequence[Any]]], *, commit: bool = False
) -> list[list[tuple[Any, ...]]]:
    """Run ``statements`` in one round trip inside the connection's transaction (begun here
    if none is open); each one's rows. With ``commit`` the transaction's COMMIT follows in
    the same round trip. The first failing statement's error is raised as psycopg's
    exception for its SQLSTATE; the transaction is then aborted (or, for a failing
    COMMIT, rolled back), as with psycopg."""
    pgconn = raw.pgconn
    assert pgconn.pipeline_status == 0, "not inside a psycopg pipeline"
    prepared: set[bytes] | None = getattr(raw, "_yibao_prepared", None)
    if prepared is None:
        # Text results are decoded as UTF-8: the connection must speak it.
        assert pgconn.parameter_status(b"client_encoding") == b"UTF8", "client_encoding must be UTF8"
        prepared = set()
        raw._yibao_prepared = prepared  # type: ignore[attr-defined]
    # Parameters as text first: a value without a text form fails before anything is sent.
    dumps = [[_dump(value) for value in params] for _sql, params in statements]
    # What each result answers: None (BEGIN), a name being prepared, or a statement's index.
    expect: list[bytes | int | None] = []
    pgconn.enter_pipeline_mode()
    try:
        if pgconn.transaction_status == TransactionStatus.IDLE and not raw.autocommit:
            pgconn.send_query_params(_begin_command(raw), None)
            expect.append(None)
        for index, ((sql, _params), dumped) in enumerate(zip(statements, dumps, strict=True)):
            types = tuple(oid for oid, _ in dumped)
            name = _name(sql, types)
            if name not in prepared and not (name and name in expect):  # (named: maybe earlier in this batch)
                if len(prepared) >= MAX_PREPARED:
                    name = b""  # the unnamed statement: prepared again before each use
                pgconn.send_prepare(name, _numbered(sql), param_types=types)
                expect.append(name)
            pgconn.send_query_prepared(name, [text for _, text in dumped])
            expect.append(index)
        if commit:
            pgconn.send_query_params(b"COMMIT", None)
            expect.append(None)
        pgconn.pipeline_sync()
        results = _communicate(pgconn)
        pgconn.exit_pipeline_mode()
    except BaseException:
        if pgconn.pipeline_status:
            # Results may still be on the way: nothing else could use this connection
            # safely. Closing it makes the driver report it broken, so the pool drops it.
            pgconn.finish()
        raise
    assert len(results) == len(expect), (len(results), len(expect))
    out: list[list[tuple[Any, ...]]] = [[] for _ in statements]
    failure = None
    for what, result in zip(expect, results, strict=True):
        status = result.status
        if status == ExecStatus.FATAL_ERROR:
            if failure is None:
                failure = result
        elif status == ExecStatus.PIPELINE_ABORTED:
            continue
        elif isinstance(what, bytes):
            if what:
                prepared.add(what)
        elif isinstance(what, int) and status == ExecStatus.TUPLES_OK:
            out[what] = _rows(result)
    if failure is not None:
        error = pg_errors.error_from_result(failure, encoding="utf-8")
        if isinstance(error, pg_errors.InvalidSqlStatementName):
            prepared.clear()  # someone ran DEALLOCATE / DISCARD ALL: prepare afresh next time
        raise error
    return out


def _rows(result: Any) -> list[tuple[Any, ...]]:
    loaders = []
    for col in range(result.nfields):
        load = _LOADERS.get(result.ftype(col))
        if load is None:
            raise TypeError(f"column {result.fname(col)!r} has type OID {result.ftype(col)}, which is not read here")
        loaders.append(load)
    get = result.get_value
    return [
        tuple(None if (value := get(row, col)) is None else load(value) for col, load in enumerate(loaders))
        for row in range(result.ntuples)
    ]


def _communicate(pgconn: Any) -> list[Any]:
    """Send what is queued and read every result up to the pipeline's sync (one round trip)."""
    results: list[Any] = []
    poller = select.poll()
    fd = pgconn.socket
    writing = True
    poller.register(fd, select.POLLIN | select.POLLOUT)
    while True:
        if writing:
            writing = pgconn.flush() != 0  # 1: the socket's buffer is full, the rest waits
            if not writing:
                poller.modify(fd, select.POLLIN)
        if not any(mask & (select.POLLIN | select.POLLERR | select.POLLHUP) for _fd, mask in poller.poll()):
            continue
        pgconn.consume_input()
        separated = False
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:  # the end of one statement's results
                if separated:
                    break  # two in a row: nothing more has arrived yet
                separated = True
                continue
            separated = False
            if result.status == ExecStatus.PIPELINE_SYNC:
                return results
            results.append(result)
