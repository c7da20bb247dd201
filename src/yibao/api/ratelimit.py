"""A limit on failed logins per client address (per server process), and who the client is.

A wrong PIN for a known person counts towards that person's portal throttle, and a
wrong staff password towards the staff account's lock; neither stops one client trying
many ID numbers, card numbers or usernames. This limiter does: a client address with
:data:`MAX_FAILURES` failed logins within :data:`WINDOW_S` seconds is answered 429
until the oldest of them leaves the window. Each server process keeps its own
counts (with ``--workers N`` a client gets at most N times the limit).

The client address is the TCP peer's, unless the peer is a configured trusted proxy
(:class:`TrustedProxies`, ``YIBAO_TRUSTED_PROXIES`` or ``yibao serve --trusted-proxy``):
then it is the right-most ``X-Forwarded-For`` hop that is not itself a trusted proxy,
the one address a trusted proxy vouches for. Whatever a client writes into the header
itself stands to the left of that hop and is never read. IPv6 clients are counted per
/64 network, the smallest block one subscriber commonly gets.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = ["MAX_FAILURES", "TRUSTED_PROXIES_ENV", "WINDOW_S", "LoginLimiter", "TrustedProxies"]

#: Comma-separated addresses or CIDR networks of the reverse proxies in front of the server.
TRUSTED_PROXIES_ENV = "YIBAO_TRUSTED_PROXIES"

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


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> IPAddress | None:
    """An IP address, or None; IPv4-mapped IPv6 addresses become IPv4, a port or brackets are dropped."""
    text = text.strip()
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # 203.0.113.7:5678
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _key(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class TrustedProxies:
    """The reverse proxies whose ``X-Forwarded-For`` is believed (none by default)."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        networks: list[IPNetwork] = []
        for entry in entries:
            text = entry.strip()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"not an IP address or CIDR network: {text!r}") from None
        self.networks: tuple[IPNetwork, ...] = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """From a comma-separated list (the form of ``YIBAO_TRUSTED_PROXIES``)."""
        return cls(text.split(","))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrustedProxies:
        """From ``YIBAO_TRUSTED_PROXIES``; ValueError names the variable if it is malformed."""
        text = (os.environ if environ is None else environ).get(TRUSTED_PROXIES_ENV, "")
        try:
            return cls.parse(text)
        except ValueError as exc:
            raise ValueError(f"{TRUSTED_PROXIES_ENV}: {exc}") from None

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __str__(self) -> str:
        return ", ".join(str(n) for n in self.networks) or "none"

    def trusts(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> str:
        """The address to count a login against: ``peer`` is the TCP peer, ``forwarded_for`` the
        ``X-Forwarded-For`` header values in order."""
        if peer is None:
            return "unknown"
        peer_address = _address(peer)
        if peer_address is None:
            return peer[:64]  # not an IP socket (a Unix socket, a test transport)
        if not self.trusts(peer_address):
            return _key(peer_address)
        hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
        first: IPAddress | None = None
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                # The hop a trusted proxy vouches for is no address: count the proxy itself.
                return _key(peer_address)
            if not self.trusts(address):
                return _key(address)
            first = address
        return _key(first or peer_address)
