"""Storage fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL is the local server (127.0.0.1:5432, trust auth; override with
YIBAO_TEST_PG_URL). A migrated template database is made once per test process;
each test gets a throwaway copy. When the server is unreachable the tests fail
loudly — `.ci/run` starts it first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from yibao.db import make_engine, upgrade

PG_ADMIN_URL = os.environ.get("YIBAO_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
_TEMPLATE = f"yibao_tpl_{os.getpid()}"
_template_ready = False


def _admin() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def _pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"


def _ensure_template() -> None:
    global _template_ready
    if _template_ready:
        return
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{_TEMPLATE}"'))
        conn.execute(text(f'CREATE DATABASE "{_TEMPLATE}"'))
    engine = make_engine(_pg_url(_TEMPLATE), pool_size=2)
    upgrade(engine)
    engine.dispose()
    admin.dispose()
    _template_ready = True


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly migrated, empty database URL of each kind."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "yibao.db"
        engine = make_engine(f"sqlite:///{path}", pool_size=2)
        upgrade(engine)
        engine.dispose()
        yield f"sqlite:///{path}"
        return
    _ensure_template()
    name = f"yibao_t_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{_TEMPLATE}"'))
    try:
        yield _pg_url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=40)
    yield engine
    engine.dispose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _template_ready:
        admin = _admin()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)'))
        admin.dispose()
