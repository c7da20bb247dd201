"""Idempotency on SQLite and PostgreSQL: one effect per msgid, identical replies, 冲正 semantics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

from storage import builders as b
from storage.invariants import INSTITUTION, assert_invariants, bill, evoucher
from storage.test_concurrency import WORKERS, Outcome, balance, card, hammer, service
from yibao.db import repository as repo
from yibao.db import schema as S
from yibao.service.credentials import Credential
from yibao.service.settlement import IdempotencyConflict, NotFound, SettleCommand, StoredReply
from yibao.service.uow import transact

START = 80000


@contextmanager
def person_locked(db: Engine, psn_no: str) -> Iterator[None]:
    """Hold what a settlement of ``psn_no`` must lock (the row on PostgreSQL, the write lock on SQLite).

    Started inside this block, concurrent callers all get past their msgid check and then queue on
    the lock, so the race between a first attempt and its retries happens every time, not by luck.
    """
    with db.connect() as conn, conn.begin() as tx:  # on SQLite the engine's begin hook says BEGIN IMMEDIATE
        if db.dialect.name == "postgresql":
            conn.execute(select(S.persons.c.psn_no).where(S.persons.c.psn_no == psn_no).with_for_update())
        try:
            yield
        finally:
            tx.rollback()


def race(db: Engine, psn_no: str, calls: list[Callable[[], Any]]) -> None:
    """Run ``calls`` on their own threads, all queued behind ``psn_no``'s lock, then release it."""
    worker = threading.Thread(target=hammer, args=(calls, len(calls)))
    with person_locked(db, psn_no):
        worker.start()
        time.sleep(0.4)
    worker.join(timeout=60)
    assert not worker.is_alive()


@pytest.fixture
def ready(db: Engine) -> Engine:
    def setup(conn: Connection) -> None:
        b.institution(conn)
        b.person(conn, "P1", balance_fen=START)
        evoucher(conn, "P1", b.NOW)

    transact(db, setup)
    return db


def snapshot(db: Engine) -> dict[str, Any]:
    """Everything a settlement can change, to compare before and after a refused call."""

    def read(conn: Connection) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for table in (S.settlements, S.messages, S.journal_entries, S.postings, S.accumulators, S.ledger_accounts):
            out[table.name] = sorted(tuple(map(str, row)) for row in conn.execute(select(table)).all())
        return out

    return transact(db, read, readonly=True)


def count(db: Engine, table: Any, *where: Any) -> int:
    return int(transact(db, lambda c: c.execute(select(func.count()).select_from(table).where(*where)).scalar_one()))


def assert_identical(replies: list[StoredReply]) -> None:
    """All replies are the same stored reply; exactly one was not a replay."""
    assert len(replies) == WORKERS
    assert sum(not r.replayed for r in replies) == 1
    first = replies[0]
    for r in replies:
        assert (r.msgid, r.operation, r.setl_id, r.body) == (first.msgid, first.operation, first.setl_id, first.body)


def test_concurrent_retries_of_one_settlement(ready: Engine) -> None:
    svc = service(ready)
    cmd = SettleCommand("IDEM-1", INSTITUTION, card("P1"), bill(1000))
    outcome = Outcome()
    race(ready, "P1", [lambda: outcome.record(lambda: svc.settle(cmd)) for _ in range(WORKERS)])
    outcome.check_nothing_leaked(WORKERS)
    assert_identical(outcome.replies)
    assert count(ready, S.settlements) == 1
    assert count(ready, S.journal_entries, S.journal_entries.c.kind == "settlement") == 1
    assert count(ready, S.messages) == 1
    assert balance(ready, "P1") == START - 54500  # (1000 − 300) × 65 % pooled, 545 yuan from the account, once
    later = svc.settle(cmd)  # and long after: the stored reply again
    assert later.replayed and later.body == outcome.replies[0].body and later.setl_id == outcome.replies[0].setl_id
    assert_invariants(ready)


def test_same_msgid_other_payload_is_refused(ready: Engine) -> None:
    svc = service(ready)
    svc.settle(SettleCommand("IDEM-2", INSTITUTION, card("P1"), bill(1000)))
    before = snapshot(ready)
    others = [
        lambda: svc.settle(SettleCommand("IDEM-2", INSTITUTION, card("P1"), bill(999))),
        lambda: svc.settle(SettleCommand("IDEM-2", INSTITUTION, card("P1"), bill(1000, acct=False))),
        lambda: svc.settle(SettleCommand("IDEM-2", INSTITUTION, Credential("01", "EVP1"), bill(1000))),
        lambda: svc.settle(SettleCommand("IDEM-2", INSTITUTION, card("P1"), bill(1000), use_family=False)),
        lambda: svc.reverse("whatever", "IDEM-2", INSTITUTION),
        lambda: svc.undo("IDEM-2", "IDEM-2", INSTITUTION),
    ]
    for call in others:
        with pytest.raises(IdempotencyConflict):
            call()
    assert snapshot(ready) == before
    assert_invariants(ready)


def test_concurrent_first_attempts_with_two_payloads(ready: Engine) -> None:
    """Half the callers send one payload, half another, under one msgid: one wins, the rest conflict."""
    svc = service(ready)
    commands = [SettleCommand("IDEM-3", INSTITUTION, Credential("01", "EVP1"), bill(100 + 100 * (i % 2)))
                for i in range(WORKERS)]  # fmt: skip
    outcome = Outcome()
    hammer([(lambda c=c: outcome.record(lambda: svc.settle(c))) for c in commands])
    outcome.check_nothing_leaked(WORKERS)
    assert len(outcome.replies) == WORKERS // 2 and len(outcome.refusals) == WORKERS // 2
    assert all(isinstance(e, IdempotencyConflict) for e in outcome.refusals)
    assert sum(not r.replayed for r in outcome.replies) == 1
    assert len({json.dumps(r.body, sort_keys=True) for r in outcome.replies}) == 1
    assert count(ready, S.settlements) == 1
    assert_invariants(ready)


def test_concurrent_retries_of_one_reversal(ready: Engine) -> None:
    svc = service(ready)
    first = svc.settle(SettleCommand("IDEM-4", INSTITUTION, card("P1"), bill(1000)))
    outcome = Outcome()
    race(ready, "P1", [lambda: outcome.record(lambda: svc.reverse(first.setl_id or "", "IDEM-4R", INSTITUTION))
                       for _ in range(WORKERS)])  # fmt: skip
    outcome.check_nothing_leaked(WORKERS)
    assert_identical(outcome.replies)
    assert outcome.replies[0].body["setlinfo"]["reverses_setl_id"] == first.setl_id
    assert count(ready, S.settlements, S.settlements.c.kind == "reversal") == 1
    assert balance(ready, "P1") == START
    acc = transact(ready, lambda c: repo.get_accumulators(c, "P1", 2025, "310"))
    assert set(acc.values()) == {0}
    assert_invariants(ready)


def test_reverse_of_unknown_settlement_stores_nothing(ready: Engine) -> None:
    svc = service(ready)
    before = snapshot(ready)
    with pytest.raises(NotFound):
        svc.reverse("NO-SUCH-SETTLEMENT", "IDEM-5R", INSTITUTION)
    assert snapshot(ready) == before


def test_undo_of_a_settlement(ready: Engine) -> None:
    """冲正 of a settle msgid reverses it; retries replay; a second 冲正 is a no-op; reversal is then refused."""
    svc = service(ready)
    first = svc.settle(SettleCommand("IDEM-6", INSTITUTION, card("P1"), bill(1000)))
    undone = svc.undo("IDEM-6", "IDEM-6U", INSTITUTION)
    assert undone.operation == "undo" and undone.setl_id is not None and not undone.replayed
    assert undone.body["setlinfo"]["reverses_setl_id"] == first.setl_id
    assert undone.body["setlinfo"]["hifp_pay"] == "-455.00" and undone.body["setlinfo"]["acct_pay"] == "-545.00"
    assert balance(ready, "P1") == START
    again = svc.undo("IDEM-6", "IDEM-6U", INSTITUTION)
    assert again.replayed and again.body == undone.body and again.setl_id == undone.setl_id
    second = svc.undo("IDEM-6", "IDEM-6U2", INSTITUTION)
    assert second.setl_id is None and second.body["undone"] is False and second.body["setl_id"] == first.setl_id
    before = snapshot(ready)
    with pytest.raises(Exception, match="已冲销") as refused:
        svc.reverse(first.setl_id or "", "IDEM-6R", INSTITUTION)
    assert type(refused.value).__name__ == "Forbidden"
    assert snapshot(ready) == before
    rows = transact(ready, lambda c: repo.settlements_of(c, "P1"))
    assert sorted((r.kind, r.msgid) for r in rows) == [("reversal", "IDEM-6U"), ("settle", "IDEM-6")]
    assert_invariants(ready)


def test_undo_of_unknown_msgid_is_a_stored_noop(ready: Engine) -> None:
    svc = service(ready)
    reply = svc.undo("NEVER-SEEN", "IDEM-7U", INSTITUTION)
    assert reply.setl_id is None and reply.body["undone"] is False and reply.body["omsgid"] == "NEVER-SEEN"
    stored = transact(ready, lambda c: repo.get_message(c, INSTITUTION, "IDEM-7U"))
    assert stored is not None and stored.operation == "undo" and stored.setl_id is None
    again = svc.undo("NEVER-SEEN", "IDEM-7U", INSTITUTION)
    assert again.replayed and again.body == reply.body
    assert count(ready, S.settlements) == 0
    assert count(ready, S.journal_entries, S.journal_entries.c.kind != "employee_monthly") == 0
    assert_invariants(ready)


def test_concurrent_retries_of_one_undo(ready: Engine) -> None:
    svc = service(ready)
    first = svc.settle(SettleCommand("IDEM-8", INSTITUTION, card("P1"), bill(1000)))
    outcome = Outcome()
    race(ready, "P1", [lambda: outcome.record(lambda: svc.undo("IDEM-8", "IDEM-8U", INSTITUTION))
                       for _ in range(WORKERS)])  # fmt: skip
    outcome.check_nothing_leaked(WORKERS)
    assert_identical(outcome.replies)
    assert outcome.replies[0].body["setlinfo"]["reverses_setl_id"] == first.setl_id
    assert count(ready, S.settlements, S.settlements.c.kind == "reversal") == 1
    assert balance(ready, "P1") == START
    assert_invariants(ready)


def test_concurrent_undos_under_distinct_msgids(ready: Engine) -> None:
    """Many 冲正 messages for one settlement at once: one undoes it, every other one is a no-op reply."""
    svc = service(ready)
    svc.settle(SettleCommand("IDEM-9", INSTITUTION, card("P1"), bill(1000)))
    outcome = Outcome()
    race(ready, "P1", [(lambda i=i: outcome.record(lambda: svc.undo("IDEM-9", f"IDEM-9U{i}", INSTITUTION)))
                       for i in range(WORKERS)])  # fmt: skip
    outcome.check_nothing_leaked(WORKERS)
    assert count(ready, S.settlements, S.settlements.c.kind == "reversal") == 1
    assert balance(ready, "P1") == START
    assert_invariants(ready)
    # Sequentially, every later 冲正 is a no-op reply (test_undo_of_a_settlement); concurrency must not change that.
    assert not outcome.refusals, f"{len(outcome.refusals)} refused: {outcome.refusals[0]}"
    assert sum(r.setl_id is not None for r in outcome.replies) == 1
    assert sum(r.body.get("undone") is False for r in outcome.replies) == WORKERS - 1
