"""What every route of the API needs: the database, the settlement service, the clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Connection, Engine

from ..policy import PolicyStore
from ..service.settlement import SettlementService
from ..service.uow import transact
from .ratelimit import LoginLimiter, TrustedProxies

__all__ = ["Clock", "Context"]

Clock = Callable[[], dt.datetime]
T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    db: Engine
    service: SettlementService
    clock: Clock
    person_ttl: dt.timedelta
    staff_ttl: dt.timedelta
    login_limiter: LoginLimiter = field(default_factory=LoginLimiter)
    #: Whose X-Forwarded-For names the client (default: YIBAO_TRUSTED_PROXIES, else nobody's).
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies.from_env)

    @property
    def policies(self) -> PolicyStore:
        return self.service.engine.policies

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a read-only unit of work."""
        return transact(self.db, work, readonly=True)
