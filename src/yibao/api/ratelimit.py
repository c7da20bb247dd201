"""A limit on failed logins per client address (per server process).

A wrong PIN for a known person counts towards that person's PIN lock, and a wrong
staff password towards the staff account's; neither stops one client trying many
ID numbers, card numbers or usernames. This limiter does: a client address with
:data:`MAX_FAILURES` failed logins within :data:`WINDOW_S` seconds is answered 429
until the oldest of them leaves the window. Each server process keeps its own
counts (with ``--workers N`` a client gets at most N times the limit).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["MAX_FAILURES", "WINDOW_S", "LoginLimiter"]

MAX_FAILURES = 20
WINDOW_S = 60.0
#: Client addresses remembered at most (the oldest is forgotten first).
MAX_CLIENTS = 10_000


class LoginLimiter:
    """Failed logins per client address in a sliding window; thread-safe and bounded."""

    def __init__(
        self, *, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        assert max_failures > 0 and window_s > 0
        self.max_failures, self.window_s, self.clock = max_failures, window_s, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after_s(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 if it may now."""
        with self._lock:
            times = self._recent(client)
            if times is None or len(times) < self.max_failures:
                return 0
            return max(1, int(times[0] + self.window_s - self.clock()) + 1)

    def failed(self, client: str) -> None:
        with self._lock:
            times = self._recent(client)
            if times is None:
                if len(self._failures) >= MAX_CLIENTS:
                    del self._failures[next(iter(self._failures))]
                times = self._failures[client] = deque(maxlen=self.max_failures)
            times.append(self.clock())

    def _recent(self, client: str) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        cutoff = self.clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times
