"""Admission control (service.admission): a limit, first come first served, bounded waits."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Connection

from yibao.db import make_engine
from yibao.service.admission import InFlightLimit, Overloaded, limit_units_of_work
from yibao.service.uow import transact


def test_permits_go_to_waiters_in_arrival_order() -> None:
    limit = InFlightLimit(1)
    assert limit.acquire()
    order: list[int] = []
    threads = []
    for n in range(5):
        thread = threading.Thread(target=lambda n=n: (limit.acquire(), order.append(n), limit.release()))
        thread.start()
        threads.append(thread)
        while limit.waiting < n + 1:  # queued before the next one starts
            time.sleep(0.001)
    limit.release()
    assert limit.acquire()  # no barging: this thread queues behind the five
    assert order == [0, 1, 2, 3, 4]
    limit.release()
    for thread in threads:
        thread.join(5)


def test_a_thread_holding_a_permit_may_nest() -> None:
    limit = InFlightLimit(1)
    assert limit.acquire() is True
    assert limit.acquire() is False  # already held: no second permit taken, no deadlock
    limit.release()
    limit.release()
    assert limit.acquire() is True
    limit.release()
    with pytest.raises(AssertionError):
        limit.release()


def test_a_waiter_gives_up_after_its_timeout() -> None:
    limit = InFlightLimit(1, timeout_ms=50)
    limit.acquire()
    failed: list[BaseException] = []

    def wait() -> None:
        try:
            limit.acquire()
        except Overloaded as exc:
            failed.append(exc)

    thread = threading.Thread(target=wait)
    started = time.monotonic()
    thread.start()
    thread.join(5)
    assert len(failed) == 1 and failed[0].code == "OVERLOADED"
    assert 0.04 <= time.monotonic() - started < 2
    assert limit.waiting == 0
    limit.release()
    assert limit.acquire()  # the permit was not lost with the waiter
    limit.release()


def test_units_of_work_never_exceed_the_limit(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}", pool_size=16)
    limit_units_of_work(engine, 2)
    inside, peak = 0, 0
    mutex = threading.Lock()

    def work(_conn: Connection) -> None:
        nonlocal inside, peak
        with mutex:
            inside += 1
            peak = max(peak, inside)
        time.sleep(0.005)
        with mutex:
            inside -= 1

    def caller() -> None:
        for _ in range(5):
            transact(engine, work, readonly=True)

    threads = [threading.Thread(target=caller) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert peak == 2
    limit_units_of_work(engine, None)
    engine.dispose()


def test_a_failing_unit_of_work_returns_its_permit(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'b.db'}", pool_size=4)
    limit_units_of_work(engine, 1, timeout_ms=1000)

    def boom(_conn: Connection) -> None:
        raise ValueError("refused")

    for _ in range(3):
        with pytest.raises(ValueError):
            transact(engine, boom)
    assert transact(engine, lambda _conn: 42) == 42
    limit_units_of_work(engine, None)
    engine.dispose()
