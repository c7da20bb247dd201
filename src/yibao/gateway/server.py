"""Building the gateway application from the environment (used by ``yibao serve``)."""

from __future__ import annotations

import datetime as dt
import os
from importlib import resources
from pathlib import Path

from fastapi import FastAPI

from ..api import mount
from ..catalog import load_demo_catalog
from ..db import make_engine
from ..engine import Engine
from ..policy import PolicyStore
from ..service.settlement import SettlementService
from .app import create_app

__all__ = ["build"]


def build() -> FastAPI:
    """The app for ``YIBAO_DATABASE_URL`` (default: the embedded SQLite file), bundled policies and catalogue."""
    db = make_engine(os.environ.get("YIBAO_DATABASE_URL") or None, pool_size=int(os.environ.get("YIBAO_POOL", "20")))
    policies = PolicyStore.load_dir(Path(str(resources.files("yibao").joinpath("data/policies"))))
    service = SettlementService(db, Engine(policies, load_demo_catalog()), clock=dt.datetime.now)
    app = create_app(db, service)
    mount(app, db, service, clock=dt.datetime.now)  # the /v1 resource API beside the gateway
    return app
