"""The gateway's HTTP front: the raw endpoint, its answers and headers, and the per-process sign-in cache.

The endpoint is answered ahead of FastAPI's middleware and router; these tests pin what
that must not change (envelope, headers, UTF-8 Chinese err_msg, the 405 to other methods,
the OpenAPI document, the log line) and the bounds of the sign-in cache: a 9002 sign-out
takes effect at once in the process that answers it, a sign-out elsewhere within the TTL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, update

from storage import builders as b
from storage.test_gateway_e2e import INST, Client
from storage.test_smoke_settlement import ENGINE
from yibao.db import schema as S
from yibao.gateway import GATEWAY_PATH, create_app
from yibao.gateway import app as gateway_app
from yibao.gateway.app import _SignInCache
from yibao.service.apikeys import issue_api_key
from yibao.service.settlement import SettlementService
from yibao.service.uow import transact

CARD = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "card_sn": "SNP1"}
NOT_SIGNED_IN = "未签到或签到已失效"


def _setup(db: Engine, **kw: Any) -> tuple[TestClient, Client]:
    def setup(conn: Connection) -> None:
        b.institution(conn, INST)
        b.person(conn, "P1", balance_fen=50000)

    transact(db, setup)
    key, secret = issue_api_key(db, INST, clock=dt.datetime.now)
    client = TestClient(create_app(db, SettlementService(db, ENGINE, clock=dt.datetime.now), **kw))
    return client, Client("http://unused", key, secret, INST)


def _call(client: TestClient, his: Client, infno: str, data: dict[str, Any]) -> dict[str, Any]:
    response = client.post(GATEWAY_PATH, json=his.envelope(infno, data), headers=his.headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _sign_in(client: TestClient, his: Client, opter: str = "001") -> str:
    signed = _call(client, his, "9001", {"signIn": {"opter": opter}})
    assert signed["infcode"] == 0, signed
    sign_no: str = signed["output"]["signinoutb"]["sign_no"]
    return sign_no


def _signed_out_elsewhere(db: Engine, sign_no: str) -> None:
    signins = S.signins
    transact(db, lambda c: c.execute(update(signins).where(signins.c.sign_no == sign_no).values(signed_out_at=b.NOW)))


def test_sign_out_takes_effect_at_once_in_this_process(db: Engine) -> None:
    client, his = _setup(db, signin_ttl=3600)  # however long the cache would trust a sign-in
    his.sign_no = _sign_in(client, his)
    assert _call(client, his, "1101", {"data": CARD})["infcode"] == 0  # the sign-in is now cached
    assert _call(client, his, "9002", {"signOut": {"sign_no": his.sign_no}})["infcode"] == 0
    refused = _call(client, his, "1101", {"data": CARD})
    assert refused["infcode"] == -1 and NOT_SIGNED_IN in refused["err_msg"]
    # A new sign-in works again.
    his.sign_no = _sign_in(client, his, "002")
    assert _call(client, his, "1101", {"data": CARD})["infcode"] == 0


def test_sign_out_elsewhere_takes_effect_within_the_ttl(db: Engine) -> None:
    client, his = _setup(db, signin_ttl=0.5)
    his.sign_no = _sign_in(client, his)
    assert _call(client, his, "1101", {"data": CARD})["infcode"] == 0
    _signed_out_elsewhere(db, his.sign_no)  # by another server process, whose cache is not ours
    time.sleep(0.6)
    refused = _call(client, his, "1101", {"data": CARD})
    assert refused["infcode"] == -1 and NOT_SIGNED_IN in refused["err_msg"]


def test_without_cache_every_check_reads_the_database(db: Engine) -> None:
    client, his = _setup(db, signin_ttl=0)
    his.sign_no = _sign_in(client, his)
    assert _call(client, his, "1101", {"data": CARD})["infcode"] == 0
    _signed_out_elsewhere(db, his.sign_no)
    assert NOT_SIGNED_IN in _call(client, his, "1101", {"data": CARD})["err_msg"]
    # No sign_no, or an unknown one, is refused as before.
    his.sign_no = ""
    assert NOT_SIGNED_IN in _call(client, his, "1101", {"data": CARD})["err_msg"]
    his.sign_no = "S-not-a-sign-no"
    assert NOT_SIGNED_IN in _call(client, his, "1101", {"data": CARD})["err_msg"]


def test_sign_in_cache_is_bounded_and_ignores_stale_checks() -> None:
    cache = _SignInCache(ttl=60, size=3)
    for n in range(5):
        cache.remember(f"S{n}", "H1", cache.generation)
    assert [cache.fresh(f"S{n}", "H1") for n in range(5)] == [False, False, True, True, True]
    assert not cache.fresh("S4", "H2")  # another institution's envelope naming this sign_no
    # A check that read the database before a sign-out of the institution must not be stored after it.
    before = cache.generation
    cache.forget("H1")
    assert not any(cache.fresh(f"S{n}", "H1") for n in range(5))
    cache.remember("S9", "H1", before)
    assert not cache.fresh("S9", "H1")
    cache.remember("S9", "H1", cache.generation)
    assert cache.fresh("S9", "H1")
    expired = _SignInCache(ttl=0.01, size=3)
    expired.remember("S1", "H1", expired.generation)
    time.sleep(0.02)
    assert not expired.fresh("S1", "H1")


def test_answer_bytes_headers_and_log_line(db: Engine, caplog: pytest.LogCaptureFixture) -> None:
    client, his = _setup(db)
    envelope = his.envelope("9001", {"signIn": {"opter": "001"}})
    with caplog.at_level(logging.INFO, logger="yibao.gateway"):
        response = client.post(GATEWAY_PATH, json=envelope, headers=his.headers(secret="wrong"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    # Compact JSON, Chinese readable as UTF-8 (not \\u escapes), the national envelope's fields in order.
    assert "签名不符".encode() in response.content and b"\\u" not in response.content
    body = json.loads(response.content)
    assert list(body) == ["infcode", "inf_refmsgid", "refmsg_time", "respond_time", "err_msg", "warn_msg", "output"]
    # Refused before its body was read: no envelope field is known to the answer or the log.
    assert body["infcode"] == -1 and body["output"] is None and body["inf_refmsgid"].startswith("000000")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "yibao.gateway"]
    assert lines == [{"msgid": "", "infno": "", "fixmedins_code": None, "status": 200, "infcode": -1,
                      "ms": lines[0]["ms"]}]  # fmt: skip
    # A signed request's answer and log line carry its envelope's fields.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yibao.gateway"):
        body = client.post(GATEWAY_PATH, json=envelope, headers=his.headers()).json()
    assert body["infcode"] == 0 and body["inf_refmsgid"].startswith("210600")
    # National formats: a 30-character inf_refmsgid, times as yyyyMMddHHmmssSSS.
    assert len(body["inf_refmsgid"]) == 30 and body["inf_refmsgid"].isdigit()
    for key in ("refmsg_time", "respond_time"):
        assert len(body[key]) == 17 and body[key].isdigit()
        dt.datetime.strptime(body[key][:14], "%Y%m%d%H%M%S")
    assert body["refmsg_time"] <= body["respond_time"]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "yibao.gateway"]
    assert lines == [{"msgid": envelope["msgid"], "infno": "9001", "fixmedins_code": INST, "status": 200,
                      "infcode": 0, "ms": lines[0]["ms"]}]  # fmt: skip


def test_other_methods_openapi_and_v1_untouched(db: Engine) -> None:
    client, _ = _setup(db)
    assert client.get(GATEWAY_PATH).status_code == 405
    spec = client.get("/openapi.json").json()
    assert "post" in spec["paths"][GATEWAY_PATH]
    assert client.get("/docs").status_code == 200
    assert client.get("/nowhere").status_code == 404


def test_malformed_and_oversized_bodies(db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    client, his = _setup(db)
    for payload in (b"", b"not json", b"[1]", b'"x"', "\u00ff".encode("latin-1")):
        response = client.post(GATEWAY_PATH, content=payload, headers=his.headers())
        assert response.status_code == 200 and response.json()["infcode"] == -1, payload
    monkeypatch.setattr(gateway_app, "MAX_BODY_BYTES", 100)
    big = json.dumps(his.envelope("9001", {"signIn": {"opter": "001", "pad": "x" * 200}})).encode()
    answer = client.post(GATEWAY_PATH, content=big, headers=his.headers()).json()
    assert answer["infcode"] == -1 and "报文超过 100 字节" in answer["err_msg"]


def _asgi(app: Any, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """Drive the app with the given request messages; the messages it sends back."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": GATEWAY_PATH, "raw_path": GATEWAY_PATH.encode(), "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}  # fmt: skip
    pending = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("read past the end of the request")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    return sent


def test_body_in_chunks_and_client_gone(db: Engine) -> None:
    client, his = _setup(db)
    app = client.app
    body = json.dumps(his.envelope("9001", {"signIn": {"opter": "001"}}), ensure_ascii=False).encode()
    headers = [(k.encode(), v.encode()) for k, v in his.headers().items()]
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]
    sent = _asgi(app, [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
                 + [{"type": "http.request", "body": b"", "more_body": False}], headers)  # fmt: skip
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    answer = json.loads(sent[1]["body"])
    assert answer["infcode"] == 0 and answer["output"]["signinoutb"]["sign_no"].startswith("S"), answer
    # The HIS went away before its request arrived: nothing is answered, nothing fails.
    fresh = [(k.encode(), v.encode()) for k, v in his.headers().items()]  # each signature is accepted once
    gone = _asgi(app, [{"type": "http.request", "body": body[:10], "more_body": True}, {"type": "http.disconnect"}],
                 fresh)  # fmt: skip
    assert gone == []


def test_every_published_path_reaches_the_same_handlers(db: Engine) -> None:
    """callService, callService/{infno} and the per-transaction service paths HIS code configures."""
    client, his = _setup(db)
    signed = client.post(GATEWAY_PATH + "/9001", json=his.envelope("9001", {"signIn": {"opter": "001"}}),
                         headers=his.headers()).json()  # fmt: skip
    assert signed["infcode"] == 0, signed
    his.sign_no = signed["output"]["signinoutb"]["sign_no"]
    info = client.post("/fsi/api/fsiPsnInfoService/queryPsnInfo", json=his.envelope("1101", {"data": CARD}),
                       headers=his.headers()).json()  # fmt: skip
    assert info["infcode"] == 0 and info["output"]["baseinfo"]["psn_no"] == "P1", info
    # The envelope may leave infno to the path; a different one is refused by name.
    bare = {k: v for k, v in his.envelope("1101", {"data": CARD}).items() if k != "infno"}
    assert client.post(GATEWAY_PATH + "/1101", json=bare, headers=his.headers()).json()["infcode"] == 0
    crossed = client.post("/fsi/api/outpatientSettleService/saveSettletmentV2", json=his.envelope("1101", {}),
                          headers=his.headers()).json()  # fmt: skip
    assert crossed["infcode"] == -1 and "2207" in crossed["err_msg"] and "[infno]" in crossed["err_msg"], crossed


def test_an_unknown_path_under_fsi_api_gets_the_national_envelope(db: Engine) -> None:
    client, his = _setup(db)
    for method, path in (("POST", "/fsi/api/noSuchService/doThing"), ("GET", "/fsi/api/fsiPsnInfoService/queryPsnInfo"),
                         ("POST", "/fsi/api/" + "x" * 500)):  # fmt: skip
        response = client.request(method, path, json=his.envelope("1101", {}), headers=his.headers())
        assert response.status_code == 200, (method, path)
        body = response.json()
        assert body["infcode"] == -1 and body["err_msg"] and set(body) >= {"inf_refmsgid", "output"}, body
    assert client.get(GATEWAY_PATH).status_code == 405  # the documented endpoint keeps its 405 to GET
