"""Building the gateway application from the environment (used by ``yibao serve``)."""

from __future__ import annotations

import datetime as dt
import os
from importlib import resources
from pathlib import Path

from fastapi import FastAPI

from ..api import mount
from ..catalog import load_demo_catalog
from ..engine import Engine
from ..policy import PolicyStore
from ..service.admission import limit_units_of_work
from ..service.settlement import SettlementService
from ..service.uow import open_database
from .app import create_app

__all__ = ["build"]


def _nodelay_on_accepted_sockets() -> None:
    """Disable Nagle on every accepted TCP connection, as asyncio does for sockets it creates.

    With ``--workers`` > 1 uvicorn shares a listening socket made without an explicit
    protocol number; asyncio then skips TCP_NODELAY on the connections it accepts, and a
    response written in two parts waits for the client's delayed ACK: ≈ 40 ms per request.
    """
    import asyncio.base_events as base_events
    import socket

    def set_nodelay(sock: socket.socket) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    base_events._set_nodelay = set_nodelay  # type: ignore[attr-defined]


def build() -> FastAPI:
    """The app for ``YIBAO_DATABASE_URL`` (default: the embedded SQLite file), bundled policies and catalogue."""
    _nodelay_on_accepted_sockets()
    db = open_database(os.environ.get("YIBAO_DATABASE_URL") or None, pool_size=int(os.environ.get("YIBAO_POOL", "20")))
    # SQLite has one writer at a time: callers queue in order here rather than in its
    # busy handler, whose sleeps let late callers overtake (p99 of seconds at 32 callers).
    in_flight = os.environ.get("YIBAO_DB_IN_FLIGHT") or ("1" if db.dialect.name == "sqlite" else "")
    limit_units_of_work(db, int(in_flight) if in_flight else None)
    policies = PolicyStore.load_dir(Path(str(resources.files("yibao").joinpath("data/policies"))))
    service = SettlementService(db, Engine(policies, load_demo_catalog()), clock=dt.datetime.now)
    # The region whose gateway rules answer a caller that names no known key (policy gateway.auth_failure).
    app = create_app(db, service, home_admdvs=os.environ.get("YIBAO_HOME_REGION") or None)
    mount(app, db, service, clock=dt.datetime.now)  # the /v1 resource API beside the gateway
    return app
