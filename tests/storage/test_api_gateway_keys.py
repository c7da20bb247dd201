"""The agency issues and revokes institutions' gateway keys over /v1; a key issued there signs gateway calls at
once, and a revoked one is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from storage.test_api import INST, Api, audit_rows, populate, problem, serving
from storage.test_gateway_e2e import Client
from storage.test_gateway_schemes import TifClient
from yibao.gateway import app as gateway_app


@pytest.fixture
def api(db: Engine) -> Iterator[Api]:
    with serving(db, populate(db)) as client:
        yield client


def _sign_in(client: Client) -> dict[str, Any]:
    return client.call("9001", {"signIn": {"opter": "001"}})


@pytest.mark.parametrize("scheme", ["api", "tif"])
def test_keys_issued_over_v1_sign_gateway_calls_until_revoked(
    api: Api, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_app, "KEY_TTL_S", 0.0)  # every request reads its key: the revocation shows at once
    admin, oper = api.staff("admin"), api.staff("oper")
    url = f"/v1/institutions/{INST}/gateway-keys"
    problem(api.post(url, oper, {"scheme": scheme}), 403, "ROLE_FORBIDDEN")
    issued = api.post(url, admin, {"scheme": scheme}, key=f"issue-{scheme}")
    assert issued.status_code == 201, issued.text
    key = issued.json()
    assert key["scheme"] == scheme and key["secret"] and key["revoked_at"] is None
    # A retry with the same Idempotency-Key returns the same key, not a second one.
    again = api.post(url, admin, {"scheme": scheme}, key=f"issue-{scheme}")
    assert again.json()["access_key"] == key["access_key"]
    listed = api.get(url, admin).json()
    assert [k["access_key"] for k in listed] == [key["access_key"]] and listed[0]["secret"] is None

    base = str(api.http.base_url).rstrip("/")
    his = (TifClient if scheme == "tif" else Client)(base, key["access_key"], key["secret"], INST)
    assert _sign_in(his)["infcode"] == 0

    revoke = f"{url}/{key['access_key']}/revoke"
    problem(api.post(revoke, oper), 403, "ROLE_FORBIDDEN")
    revoked = api.post(revoke, admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    problem(api.post(revoke, admin), 404, "GATEWAY_KEY_UNKNOWN")  # once
    refused = _sign_in(his)
    assert refused["infcode"] == -1 and "已停用" in refused["err_msg"], refused

    # The audit log names the keys but never holds a secret.
    rows = audit_rows(api.db, "gateway_key.issue") + audit_rows(api.db, "gateway_key.revoke")
    assert len(rows) == 2 and all(key["secret"] not in str(tuple(row)) for row in rows)


def test_keys_of_unknown_institutions_and_other_institutions(api: Api) -> None:
    admin = api.staff("admin")
    problem(api.post("/v1/institutions/H99999999999/gateway-keys", admin, {"scheme": "api"}), 404,
            "INSTITUTION_UNKNOWN")  # fmt: skip
    problem(api.get("/v1/institutions/H99999999999/gateway-keys", admin), 404, "INSTITUTION_UNKNOWN")
    problem(api.post(f"/v1/institutions/{INST}/gateway-keys", admin, {"scheme": "rsa"}), 422, "INVALID_INPUT")
    key = api.post(f"/v1/institutions/{INST}/gateway-keys", admin, {}).json()
    assert key["scheme"] == "api"
    # A key is revoked only under its own institution's path.
    problem(api.post(f"/v1/institutions/H21060000009/gateway-keys/{key['access_key']}/revoke", admin), 404,
            "GATEWAY_KEY_UNKNOWN")  # fmt: skip
