"""The gateway rules a region's policy sets (policy ``gateway``): whether ``sign_no`` is required, and whether an
authentication failure is answered as the national envelope or as HTTP 401 the way some provincial gateways do."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, Engine

from storage import builders as b
from storage.test_gateway_e2e import INST, Client, start_server
from yibao import PolicyStore, load_demo_catalog
from yibao.engine import Engine as SettlementEngine
from yibao.gateway import GATEWAY_PATH, create_app
from yibao.service.apikeys import issue_api_key
from yibao.service.settlement import SettlementService
from yibao.service.uow import transact

POLICIES = Path("src/yibao/data/policies")
CARD = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "card_sn": "SNP1"}


def _engine(**rules: Any) -> SettlementEngine:
    """The bundled policies, with the Dandong file (the test institution's region) setting gateway rules."""
    texts = {p.name: p.read_text(encoding="utf-8") for p in POLICIES.glob("*.yaml")}
    name = "210600-dandong.yaml"
    value = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in rules.items())
    texts[name] = texts[name].replace(
        "policy:\n", f"policy:\n  gateway:\n    value: {{{value}}}\n    reference: dandong-example\n", 1
    )
    return SettlementEngine(PolicyStore.from_texts(texts), load_demo_catalog())


def _serve(db: Engine, engine: SettlementEngine, **kw: Any) -> tuple[str, Any]:
    def setup(conn: Connection) -> None:
        b.institution(conn, INST)
        b.person(conn, "P1", balance_fen=50000)

    transact(db, setup)
    return start_server(create_app(db, SettlementService(db, engine, clock=dt.datetime.now), **kw))


@pytest.fixture
def optional_sign_no(db: Engine) -> Iterator[str]:
    base, stop = _serve(db, _engine(sign_no_required=False))
    yield base
    stop()


def test_a_region_may_make_sign_no_optional(db: Engine, optional_sign_no: str) -> None:
    key, secret = issue_api_key(db, INST, clock=dt.datetime.now)
    his = Client(optional_sign_no, key, secret, INST)
    answer = his.call("1101", {"data": CARD})  # no 9001 before it, no sign_no in the envelope
    assert answer["infcode"] == 0 and answer["output"]["baseinfo"]["psn_no"] == "P1", answer
    # A sign_no that is sent is still checked.
    his.sign_no = "S-made-up"
    refused = his.call("1101", {"data": CARD})
    assert refused["infcode"] == -1 and "sign_no" in refused["err_msg"], refused


def test_sign_no_is_required_by_default(db: Engine) -> None:
    base, stop = _serve(db, _engine())
    try:
        key, secret = issue_api_key(db, INST, clock=dt.datetime.now)
        refused = Client(base, key, secret, INST).call("1101", {"data": CARD})
        assert refused["infcode"] == -1 and "9001" in refused["err_msg"], refused
    finally:
        stop()


def test_a_region_may_answer_authentication_failures_with_http_401(db: Engine) -> None:
    base, stop = _serve(db, _engine(auth_failure="http401"), home_admdvs="210600")
    try:
        key, secret = issue_api_key(db, INST, clock=dt.datetime.now)
        his = Client(base, key, secret, INST)
        envelope = his.envelope("9001", {"signIn": {"opter": "001"}})
        cases = [
            his.headers(secret="wrong"),  # a known key, a bad signature: the key's region decides
            {**his.headers(), "_api_access_key": "AKnobody"},  # an unknown key: the home region decides
            {},  # no headers at all
        ]
        for headers in cases:
            response = httpx.post(f"{base}{GATEWAY_PATH}", json=envelope, headers=headers, timeout=10)
            assert response.status_code == 401, response.text
            body = response.json()
            assert body["code"] == 401 and body["message"].startswith("鉴权失败"), body
        # A signed request is answered as always.
        ok = httpx.post(f"{base}{GATEWAY_PATH}", json=envelope, headers=his.headers(), timeout=10)
        assert ok.status_code == 200 and ok.json()["infcode"] == 0, ok.text
    finally:
        stop()


def test_authentication_failures_are_envelopes_by_default(db: Engine) -> None:
    base, stop = _serve(db, _engine())
    try:
        response = httpx.post(f"{base}{GATEWAY_PATH}", json={"infno": "9001"}, timeout=10)
        assert response.status_code == 200
        assert response.json()["infcode"] == -1 and "鉴权失败" in response.json()["err_msg"]
    finally:
        stop()
