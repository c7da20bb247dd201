"""Admission control: at most N units of work on one database at once in this process.

Two cores run Python and PostgreSQL together. Past a few transactions in flight, more
only add lock hand-offs, context switches and cache misses: each settlement then costs
more CPU and throughput falls (32 threads settled about a third fewer per second than
two). So callers beyond the limit wait here — in arrival order, each permit handed
straight to the longest waiter, so no caller is starved and latency grows evenly —
rather than all at once in the database.

A thread already inside a unit of work may open another (it holds its permit); a waiter
gives up after ``timeout_ms`` with :class:`Overloaded`.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque

from sqlalchemy import Engine

from ..errors import YibaoError

__all__ = ["DEFAULT_TIMEOUT_MS", "InFlightLimit", "Overloaded", "limit_for", "limit_units_of_work"]

#: How long a unit of work waits for its turn before the caller is told to retry later.
DEFAULT_TIMEOUT_MS = 10_000
#: Upper bound on waiters, so an overload cannot grow the queue without end.
MAX_WAITERS = 10_000


class Overloaded(YibaoError):
    """Too many units of work waited too long for the database: retry later."""

    code = "OVERLOADED"


class InFlightLimit:
    """A counting semaphore whose permits go to waiters first come, first served."""

    def __init__(self, limit: int, *, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        assert limit >= 1 and timeout_ms > 0, (limit, timeout_ms)
        self.limit = limit
        self.timeout_ms = timeout_ms
        self._free = limit
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = threading.local()

    def acquire(self) -> bool:
        """Take a permit (True), or note that this thread already holds one (False)."""
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            return False
        with self._mutex:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                self._held.depth = 1
                return True
            if len(self._waiters) >= MAX_WAITERS:
                raise Overloaded(f"系统繁忙: 已有 {len(self._waiters)} 笔业务等待数据库, 请稍后重试")
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        if not turn.acquire(timeout=self.timeout_ms / 1000):
            with self._mutex:
                if turn in self._waiters:  # still queued: give up the place
                    self._waiters.remove(turn)
                    raise Overloaded(f"系统繁忙: {self.timeout_ms} ms 内未轮到数据库, 请稍后重试")
            # Handed a permit between the timeout and the mutex: it is ours.
        self._held.depth = 1
        return True

    def release(self) -> None:
        depth = getattr(self._held, "depth", 0)
        assert depth > 0, "released without a permit"
        self._held.depth = depth - 1
        if depth > 1:
            return
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # straight to the longest waiter: no barging
            else:
                self._free += 1
                assert self._free <= self.limit

    @property
    def waiting(self) -> int:
        return len(self._waiters)


_LIMITS: weakref.WeakKeyDictionary[Engine, InFlightLimit] = weakref.WeakKeyDictionary()


def limit_units_of_work(engine: Engine, limit: int | None, *, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
    """Admit at most ``limit`` units of work on ``engine`` at once in this process (None: no limit)."""
    if limit is None:
        _LIMITS.pop(engine, None)
    else:
        _LIMITS[engine] = InFlightLimit(limit, timeout_ms=timeout_ms)


def limit_for(engine: Engine) -> InFlightLimit | None:
    return _LIMITS.get(engine)
