"""The hot path's driver-level statements (db.fastsql, db.pg_pipeline) on both engines.

Values written and read back keep their types; a failing statement raises SQLAlchemy's
exception for it and leaves nothing behind; on PostgreSQL prepared statements survive a
rollback and are prepared again after the server forgot them, and a batch larger than
the socket's buffer goes through.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError, ProgrammingError

from yibao.db import pg_pipeline
from yibao.db.fastsql import as_date, as_datetime, batch, is_postgresql, write
from yibao.service.uow import UnitOfWork, transact

NOW = dt.datetime(2025, 3, 1, 9, 30, 15, 250000)


def _table(db: Engine) -> None:
    def work(conn: Connection) -> None:
        conn.execute(
            text(
                "CREATE TABLE probe (id BIGINT PRIMARY KEY, name TEXT, day DATE, at TIMESTAMP, flag BOOLEAN,"
                " amount_fen BIGINT)"
            )
        )

    transact(db, work)


def _insert(id_: int, name: str | None = "丹东") -> tuple[str, list[object]]:
    return (
        "INSERT INTO probe (id, name, day, at, flag, amount_fen) VALUES (?, ?, ?, ?, ?, ?)",
        [id_, name, dt.date(2025, 3, 1), NOW, True, 1234],
    )


def test_values_round_trip(db: Engine) -> None:
    _table(db)

    def work(conn: Connection) -> list[list[tuple[object, ...]]]:
        write(conn, [_insert(1), _insert(2, None)])
        return batch(
            conn,
            [
                ("SELECT id, name, day, at, flag, amount_fen FROM probe WHERE id = ?", [1]),
                ("SELECT id, name FROM probe WHERE id = ? AND name IS NULL", [2]),
                ("SELECT id FROM probe WHERE id = ?", [3]),
                ("SELECT COUNT(*), 'F', ?, SUM(amount_fen) FROM probe", ["文字"]),
            ],
        )

    first, second, none, count = transact(db, work)
    id_, name, day, at, flag, amount_fen = first[0]
    assert (id_, name, as_date(day), as_datetime(at), bool(flag), amount_fen) == (
        1, "丹东", dt.date(2025, 3, 1), NOW, True, 1234)  # fmt: skip
    assert second == [(2, None)]
    assert none == []
    assert count == [(2, "F", "文字", 2468)]


def test_a_failing_statement_raises_and_leaves_nothing(db: Engine) -> None:
    _table(db)
    transact(db, lambda conn: write(conn, [_insert(1)]))

    def work(conn: Connection) -> None:
        write(conn, [_insert(5), _insert(1)])  # the second repeats a key

    with pytest.raises(IntegrityError):
        transact(db, work)
    rows = transact(db, lambda conn: batch(conn, [("SELECT id FROM probe ORDER BY id", [])]))[0]
    assert rows == [(1,)]
    # The same connections and statements work afterwards.
    transact(db, lambda conn: write(conn, [_insert(5)]))
    assert transact(db, lambda conn: batch(conn, [("SELECT COUNT(*) FROM probe", [])]))[0] == [(2,)]


def test_a_value_without_a_text_form_is_refused_before_anything_is_sent(db: Engine) -> None:
    _table(db)
    with UnitOfWork(db) as uow:
        with pytest.raises((TypeError, ProgrammingError)):
            batch(uow.conn, [_insert(1), ("SELECT ?", [1.5])])  # never float
        assert batch(uow.conn, [("SELECT COUNT(*) FROM probe", [])])[0] == [(0,)]  # the connection still works


def test_statements_survive_rollback_and_a_server_that_forgot_them(db: Engine) -> None:
    if not is_postgresql_engine(db):
        pytest.skip("prepared statements are PostgreSQL's")
    _table(db)
    read = ("SELECT name FROM probe WHERE id = ?", [1])
    with UnitOfWork(db) as uow:
        write(uow.conn, [_insert(1)])
        assert batch(uow.conn, [read])[0] == [("丹东",)]
        uow.commit()
    with UnitOfWork(db) as uow:  # rolled back: psycopg's rollback must not drop our statements
        assert batch(uow.conn, [read])[0] == [("丹东",)]
        for _ in range(8):  # often enough for psycopg to prepare a statement of its own, were it allowed
            uow.conn.execute(text("SELECT count(*) FROM probe"))
    with UnitOfWork(db) as uow:
        assert batch(uow.conn, [read])[0] == [("丹东",)]
        uow.conn.exec_driver_sql("DEALLOCATE ALL")
        with pytest.raises(ProgrammingError, match="does not exist"):
            batch(uow.conn, [read])
    # The next unit of work prepares again.
    assert transact(db, lambda conn: batch(conn, [read]))[0] == [("丹东",)]


@pytest.mark.parametrize("limit", ["prepared per connection", "statement names"])
def test_past_a_limit_statements_run_unnamed(db: Engine, monkeypatch: pytest.MonkeyPatch, limit: str) -> None:
    if not is_postgresql_engine(db):
        pytest.skip("prepared statements are PostgreSQL's")
    _table(db)
    if limit == "statement names":
        monkeypatch.setattr(pg_pipeline, "MAX_NAMES", 0)
    else:
        monkeypatch.setattr(pg_pipeline, "MAX_PREPARED", 1)
    shapes = [(f"SELECT id, ? || '{n}' FROM probe WHERE id = ?", ["x", 1]) for n in range(4)]

    def work(conn: Connection) -> list[list[tuple[object, ...]]]:
        write(conn, [_insert(1)])
        return batch(conn, [*shapes, *shapes])  # each unnamed one prepared right before its use

    for _ in range(2):  # the second time the first shape is the one named statement
        assert transact(db, work if _ == 0 else lambda conn: batch(conn, [*shapes, *shapes])) == [
            [(1, f"x{n}")] for n in (0, 1, 2, 3, 0, 1, 2, 3)
        ]


class _SlowLenDict(dict):  # type: ignore[type-arg]
    """A name table whose size takes a while to count: widens any race around it (when
    pg_pipeline runs interpreted; compiled, it takes the dict's size directly and cannot
    switch threads between looking a name up and storing it)."""

    def __len__(self) -> int:
        time.sleep(0.002)
        return super().__len__()


def test_threads_naming_new_statements_at_once(db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Statements seen for the first time by several threads at once get names of their own:
    afterwards every connection runs every statement as itself."""
    if not is_postgresql_engine(db):
        pytest.skip("prepared statements are PostgreSQL's")
    _table(db)
    transact(db, lambda conn: write(conn, [_insert(1)]))
    monkeypatch.setattr(pg_pipeline, "_NAMES", _SlowLenDict())
    shapes = [(f"SELECT ? || '-{n}', id FROM probe WHERE id = ?", ["v", 1]) for n in range(8)]
    start = threading.Barrier(8)
    failures: list[object] = []

    def run(shape: tuple[str, list[object]], n: int) -> None:
        try:
            got = transact(db, lambda conn: batch(conn, [shape]))[0]
        except Exception as exc:  # a name standing for another statement fails or answers wrong
            failures.append(exc)
            return
        if got != [(f"v-{n}", 1)]:
            failures.append(got)

    def worker(w: int) -> None:
        start.wait()
        run(shapes[w], w)  # all eight named at once
        for _ in range(5):
            for n, shape in enumerate(shapes):
                run(shape, n)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []


def test_a_batch_larger_than_the_socket_buffer(db: Engine) -> None:
    _table(db)
    big = "医" * 400_000  # 1.2 MB of UTF-8 in one parameter

    def work(conn: Connection) -> list[list[tuple[object, ...]]]:
        write(conn, [_insert(1, big), _insert(2, big)])
        return batch(conn, [("SELECT name FROM probe WHERE id = ?", [i]) for i in (1, 2)])

    first, second = transact(db, work)
    assert first == second == [(big,)]


def is_postgresql_engine(db: Engine) -> bool:
    with db.connect() as conn:
        return is_postgresql(conn)
