"""Schemathesis against the /v1 OpenAPI description: generated requests never get a 5xx.

Bounded for the suite: SQLite only, in-process through the ASGI app, derandomized, at
most 15 examples per operation and run. Each operation is run three times: schema-valid
data, schema-valid data with the path naming records that exist (so the handlers do
real work, not only 404s), and schema-invalid (negative) data. Every case carries a
fresh admin token minted straight into the sessions table, so requests reach the
handlers instead of stopping at 401. Besides "no 5xx", answers must match the documented
status codes, content types and response schemas, and invalid data must be refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Connection, Engine

from storage import builders as b
from storage.test_smoke_settlement import ENGINE, PAYLOAD
from yibao.api import create_staff, mount
from yibao.api.auth import issue_session
from yibao.db import make_engine, upgrade
from yibao.gateway import create_app
from yibao.service import accounts
from yibao.service.apikeys import issue_api_key
from yibao.service.credentials import Credential
from yibao.service.settlement import SettleCommand, SettlementService
from yibao.service.uow import transact

INST = "H21060000001"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]
MAX_EXAMPLES = 15


def clock() -> dt.datetime:
    return b.NOW


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, Engine, dict[str, Any]]]:
    path: Path = tmp_path_factory.mktemp("schemathesis") / "yibao.db"
    db = make_engine(f"sqlite:///{path}", pool_size=8)
    upgrade(db)

    def setup(conn: Connection) -> None:
        b.institution(conn, INST)
        b.region(conn, "310000", "上海市")
        b.person(conn, "P1", balance_fen=80000)
        b.person(conn, "P2", gend="2")

    transact(db, setup)
    service = SettlementService(db, ENGINE, clock=clock)
    settled = service.settle(SettleCommand("M1", INST, Credential("03", "CP1", "SNP1", b.PIN), PAYLOAD))
    policies = ENGINE.policies
    binding = accounts.bind_family(db, policies, holder_psn_no="P1", member_psn_no="P2", relation="spouse",
                                   consent_ref="FORM-1", actor="cli", clock=clock)  # fmt: skip
    asked = accounts.request_binding(db, policies, holder_psn_no="P2", member_psn_no="P1", relation="spouse",
                                     requester_psn_no="P2", clock=clock)  # fmt: skip
    filing = accounts.file_disease(db, psn_no="P1", dise_codg="I10", begn_date=dt.date(2025, 1, 1), clock=clock)
    create_staff(db, "admin", "correct horse battery staple", "admin", clock)
    create_staff(db, "clerk", "correct horse battery staple", "viewer", clock)
    access_key, _secret = issue_api_key(db, INST, clock=clock)
    app = create_app(db, service)
    mount(app, db, service, clock=clock)
    known = {
        "psn_no": "P1", "setl_id": settled.setl_id, "fixmedins_code": INST, "region": "210600",
        "binding_id": binding.id, "filing_id": filing.id, "username": "clerk", "request_id": asked.id,
        "access_key": access_key,
    }  # fmt: skip
    yield app, db, known
    db.dispose()


def _admin_token(db: Engine) -> str:
    login = transact(db, lambda c: issue_session(c, "staff", "admin", "admin", clock(), dt.timedelta(hours=1)))
    return login.token


def _fuzz(strategy: Any, checks: list[Any], db: Engine) -> None:
    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {_admin_token(db)}"})
        case.validate_response(response, checks=checks)

    run()


def test_no_server_errors(api_app: tuple[FastAPI, Engine, dict[str, Any]]) -> None:
    app, db, known = api_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path_regex="^/v1/")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        names = [p.name for p in operation.path_parameters]
        runs: list[tuple[str, Any, list[Any]]] = [
            ("positive", operation.as_strategy(), CHECKS),
            ("negative", operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), NEGATIVE_CHECKS),
        ]
        if names:
            fixed = {name: known[name] for name in names}
            runs.append(("existing records", operation.as_strategy(path_parameters=fixed), CHECKS))
        for label, strategy, checks in runs:
            try:
                _fuzz(strategy, checks, db)
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures, report them all
                failures.append(f"{operation.method.upper()} {operation.path} ({label}): {exc}")
    assert operations >= 25
    assert not failures, "\n\n".join(failures)
