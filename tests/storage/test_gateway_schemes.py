"""Both provincial signature schemes over real HTTP, chosen per institution key, and key revocation.

The x-tif headers are built as public HIS code builds them (newtouch-cloud/openhis
``WinServiceAPI/YiBaoInterface/ClassHelper.cs``): ``x-tif-paasid``, ``x-tif-timestamp`` in
seconds, ``x-tif-nonce`` (a GUID) and ``x-tif-signature`` = lower-case hex SHA-256 of
timestamp + token + nonce + timestamp. Each signature is accepted once, as with ``_api_*``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine

from storage import builders as b
from storage.test_gateway_e2e import INST, Client, start_server
from storage.test_smoke_settlement import ENGINE
from yibao.gateway import app as gateway_app
from yibao.gateway import create_app
from yibao.service.apikeys import issue_api_key, revoke_api_key
from yibao.service.settlement import SettlementService
from yibao.service.uow import transact

CARD = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "card_sn": "SNP1"}


class TifClient(Client):
    """A HIS signing with the x-tif headers (the token is the key's secret)."""

    def headers(self, *, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        stamp = str(timestamp if timestamp is not None else int(time.time()))
        nonce = str(uuid.uuid4())
        digest = hashlib.sha256(f"{stamp}{secret or self.secret}{nonce}{stamp}".encode()).hexdigest()
        return {"x-tif-paasid": self.access_key, "x-tif-timestamp": stamp, "x-tif-nonce": nonce,
                "x-tif-signature": digest.upper()}  # fmt: skip  (compared without regard to case)


@pytest.fixture
def base(db: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(gateway_app, "KEY_TTL_S", 0.0)  # every request reads its key (revocation at once)

    def setup(conn: Connection) -> None:
        b.institution(conn, INST)
        b.person(conn, "P1", balance_fen=50000)

    transact(db, setup)
    url, stop = start_server(create_app(db, SettlementService(db, ENGINE, clock=dt.datetime.now)))
    yield url
    stop()


def _signed_in(his: Client) -> dict[str, Any]:
    answer = his.call("9001", {"signIn": {"opter": "001"}})
    if answer["infcode"] == 0:
        his.sign_no = answer["output"]["signinoutb"]["sign_no"]
    return answer


def test_an_x_tif_client_runs_a_transaction(db: Engine, base: str) -> None:
    key, token = issue_api_key(db, INST, clock=dt.datetime.now, scheme="tif")
    his = TifClient(base, key, token, INST)
    assert _signed_in(his)["infcode"] == 0
    info = his.call("1101", {"data": CARD})
    assert info["infcode"] == 0 and info["output"]["baseinfo"]["psn_no"] == "P1", info
    # Each signature once: the same headers with another body are refused.
    headers = his.headers()
    assert his.call("1101", {"data": CARD}, headers=headers)["infcode"] == 0
    replay = his.call("1101", {"data": {**CARD, "card_sn": "X"}}, headers=headers)
    assert replay["infcode"] == -1 and "签名已使用" in replay["err_msg"], replay


def test_x_tif_refusals_name_the_header(db: Engine, base: str) -> None:
    key, token = issue_api_key(db, INST, clock=dt.datetime.now, scheme="tif")
    his = TifClient(base, key, token, INST)
    cases = [
        (his.headers(secret="wrong-token"), "x-tif-signature 签名不符"),
        (his.headers(timestamp=int(time.time()) - 3600), "x-tif-timestamp 超出"),
        (his.headers(timestamp=int(time.time() * 1000)), "x-tif-timestamp 须为10位"),
        ({k: v for k, v in his.headers().items() if k != "x-tif-nonce"}, "x-tif-nonce"),
        (TifClient(base, "TIFnobody", token, INST).headers(), "x-tif-paasid"),
    ]
    for headers, expected in cases:
        answer = his.call("9001", {"signIn": {"opter": "001"}}, headers=headers)
        assert answer["infcode"] == -1 and expected in answer["err_msg"], (expected, answer)


def test_a_key_signs_only_with_its_own_scheme(db: Engine, base: str) -> None:
    api_key, api_secret = issue_api_key(db, INST, clock=dt.datetime.now)
    tif_key, token = issue_api_key(db, INST, clock=dt.datetime.now, scheme="tif")
    crossed = TifClient(base, api_key, api_secret, INST)
    answer = crossed.call("9001", {"signIn": {"opter": "001"}})
    assert answer["infcode"] == -1 and "_api_*" in answer["err_msg"], answer
    answer = Client(base, tif_key, token, INST).call("9001", {"signIn": {"opter": "001"}})
    assert answer["infcode"] == -1 and "x-tif-*" in answer["err_msg"], answer


def test_a_revoked_key_is_refused(db: Engine, base: str) -> None:
    for scheme, client in (("api", Client), ("tif", TifClient)):
        key, secret = issue_api_key(db, INST, clock=dt.datetime.now, scheme=scheme)
        his = client(base, key, secret, INST)
        assert _signed_in(his)["infcode"] == 0
        assert revoke_api_key(db, key, clock=dt.datetime.now)
        assert not revoke_api_key(db, key, clock=dt.datetime.now)  # once
        refused = his.call("1101", {"data": CARD})
        assert refused["infcode"] == -1 and "已停用" in refused["err_msg"], refused


def test_keys_are_issued_and_revoked_with_the_cli(db_url: str, db: Engine) -> None:
    from typer.testing import CliRunner

    from yibao.cli import app
    from yibao.service.apikeys import active_key

    transact(db, lambda conn: b.institution(conn, INST))
    runner = CliRunner()
    issued = runner.invoke(app, ["keys", "issue", INST, "--scheme", "tif", "--database-url", db_url])
    assert issued.exit_code == 0, issued.output
    key = json.loads(issued.output)
    assert key["scheme"] == "tif" and key["access_key"].startswith("TIF") and len(key["secret"]) >= 32
    found = active_key(db, key["access_key"])
    assert found is not None and (found.fixmedins_code, found.scheme) == (INST, "tif")
    assert runner.invoke(app, ["keys", "revoke", key["access_key"], "--database-url", db_url]).exit_code == 0
    assert active_key(db, key["access_key"]) is None
    again = runner.invoke(app, ["keys", "revoke", key["access_key"], "--database-url", db_url])
    assert again.exit_code == 2
    for bad in (["keys", "issue", INST, "--scheme", "md5"], ["keys", "issue", "H00000000000"]):
        refused = runner.invoke(app, [*bad, "--database-url", db_url])
        assert refused.exit_code == 2, refused.output


def test_the_demo_curl_line_signs_in(db: Engine, base: str) -> None:
    """What `make run` prints: one shell line that performs a signed 9001 against the running server."""
    import subprocess

    from typer.testing import CliRunner

    from yibao.cli import app
    from yibao.service.apikeys import demo_key

    transact(db, lambda conn: b.institution(conn, "H21060200001"))
    paasid, token = demo_key("H21060200001", "tif")
    issue_api_key(db, "H21060200001", clock=dt.datetime.now, access_key=paasid, secret=token, scheme="tif")
    port = base.rsplit(":", 1)[1]
    line = CliRunner().invoke(app, ["demo-curl", "--port", port]).output.strip()
    assert "\n" not in line
    done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30, check=True)
    answer = json.loads(done.stdout)
    assert answer["infcode"] == 0 and answer["output"]["signinoutb"]["sign_no"], answer["err_msg"]
