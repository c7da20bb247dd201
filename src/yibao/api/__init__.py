"""The resource API under ``/v1`` for the portal and the agency (OpenAPI-documented).

``mount(app, db, service, clock=...)`` adds the routes to an existing FastAPI app
(the national gateway's); ``create_staff`` seeds staff accounts (the bootstrap
admin). See ``docs/api.md``.
"""

from __future__ import annotations

import datetime as dt

from fastapi import FastAPI
from sqlalchemy import Engine

from ..service.settlement import SettlementService
from . import problems, routes_admin, routes_family, routes_persons, routes_sessions, routes_settlements
from .auth import ROLES, StaffRecord, create_staff
from .context import Clock, Context
from .ratelimit import TrustedProxies
from .routing import Registrar

__all__ = ["PERSON_TTL", "ROLES", "STAFF_TTL", "StaffRecord", "TrustedProxies", "create_staff", "mount"]

#: Lifetime of an insured person's token (the portal).
PERSON_TTL = dt.timedelta(minutes=30)
#: Lifetime of a staff token (a working day).
STAFF_TTL = dt.timedelta(hours=8)


def mount(
    app: FastAPI,
    db: Engine,
    service: SettlementService,
    *,
    clock: Clock,
    person_ttl: dt.timedelta = PERSON_TTL,
    staff_ttl: dt.timedelta = STAFF_TTL,
    trusted_proxies: TrustedProxies | None = None,
) -> None:
    """Add the ``/v1`` routes to ``app``; errors under ``/v1`` become ``application/problem+json``.

    ``trusted_proxies``: the reverse proxies whose ``X-Forwarded-For`` names the client
    (default: ``YIBAO_TRUSTED_PROXIES``, else none: the TCP peer is the client).
    """
    if getattr(app.state, "yibao_api_mounted", False):
        raise RuntimeError("the /v1 API is already mounted on this app")
    proxies = TrustedProxies.from_env() if trusted_proxies is None else trusted_proxies
    app.state.yibao_api_mounted = True
    ctx = Context(db, service, clock, person_ttl, staff_ttl, trusted_proxies=proxies)
    registrar = Registrar(app, ctx)
    for module in (routes_sessions, routes_persons, routes_settlements, routes_family, routes_admin):
        module.register(registrar)
    problems.install(app)
    app.openapi_tags = [*(app.openapi_tags or []), *TAGS]
    app.openapi_schema = None  # regenerate with the new routes


TAGS = [
    {"name": "sessions", "description": "Log in and out: insured persons (ID/card number + PIN) and agency staff"},
    {"name": "persons", "description": "Insured persons: identity, enrolments, identities, settlement PIN"},
    {"name": "accounts", "description": "Personal account balances (current year, historical)"},
    {"name": "ledger", "description": "Journal entries of a person's accounts (read-only)"},
    {"name": "settlements", "description": "Settlements and reversals; reversal moves money (Idempotency-Key)"},
    {"name": "family", "description": "Family mutual-aid bindings (家庭共济)"},
    {"name": "filings", "description": "Off-site care (异地就医) and chronic disease (门诊慢特病) filings"},
    {"name": "institutions", "description": "Designated hospitals and pharmacies"},
    {"name": "policies", "description": "Resolved policy parameters with their sources"},
    {"name": "staff", "description": "Agency staff accounts and roles (admin)"},
    {"name": "audit", "description": "Who changed what, when (admin)"},
]
