"""The gateway over real HTTP: a signed HIS client runs the outpatient flow end to end.

A uvicorn server runs in a background thread on a loopback port, against each
database; the client signs every request as provincial HIS clients do.
"""

from __future__ import annotations

import datetime as dt
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Connection, Engine

from storage import builders as b
from storage.invariants import assert_invariants
from storage.test_smoke_settlement import ENGINE
from yibao.db import repository as repo
from yibao.gateway import GATEWAY_PATH, create_app, sign
from yibao.service.apikeys import issue_api_key
from yibao.service.settlement import SettlementService
from yibao.service.uow import transact

INST = "H21060000001"
OTHER = "H21060000002"


class Client:
    """A HIS-side client: signs headers, numbers messages, keeps the sign_no."""

    def __init__(self, base: str, access_key: str, secret: str, fixmedins_code: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)
        self.access_key, self.secret, self.code = access_key, secret, fixmedins_code
        self.sign_no = ""
        self.seq = itertools.count(1)
        self.last_ms = 0

    def headers(self, *, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        if timestamp is None:
            # Each signature is accepted once: two requests within one millisecond need two timestamps.
            timestamp = self.last_ms = max(int(time.time() * 1000), self.last_ms + 1)
        fields = {
            "_api_access_key": self.access_key,
            "_api_name": "hssServives",
            "_api_timestamp": str(timestamp),
            "_api_version": "1.0.0",
        }
        return {**fields, "_api_signature": sign(secret or self.secret, fields)}

    def envelope(self, infno: str, data: dict[str, Any], msgid: str | None = None) -> dict[str, Any]:
        return {
            "infno": infno,
            "msgid": msgid or f"{self.code}{dt.datetime.now():%Y%m%d%H%M%S}{next(self.seq):04d}",
            "mdtrtarea_admvs": "210600",
            "insuplc_admdvs": "210600",
            "recer_sys_code": "YBXT",
            "infver": "V1.0",
            "opter_type": "1",
            "opter": "001",
            "opter_name": "收费员",
            "inf_time": dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "fixmedins_code": self.code,
            "fixmedins_name": "测试医院",
            "sign_no": self.sign_no,
            "input": data,
        }

    def call(self, infno: str, data: dict[str, Any], **kw: Any) -> dict[str, Any]:
        headers = kw.pop("headers", None) or self.headers()
        response = self.http.post(GATEWAY_PATH, json=self.envelope(infno, data, kw.pop("msgid", None)), headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(db: Engine) -> Iterator[tuple[str, Engine]]:
    def setup(conn: Connection) -> None:
        b.institution(conn, INST)
        b.institution(conn, OTHER)
        b.person(conn, "P1", balance_fen=80000)

    transact(db, setup)
    base, stop = start_server(create_app(db, SettlementService(db, ENGINE, clock=dt.datetime.now)))
    yield base, db
    stop()


def start_server(app: Any) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread: (base URL, stop)."""
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not srv.started and time.time() < deadline:
        time.sleep(0.02)
    assert srv.started

    def stop() -> None:
        srv.should_exit = True
        thread.join(timeout=10)

    return f"http://127.0.0.1:{port}", stop


def _client(db: Engine, base: str, code: str = INST) -> Client:
    key, secret = issue_api_key(db, code, clock=dt.datetime.now)
    return Client(base, key, secret, code)


def test_outpatient_flow_over_http(server: tuple[str, Engine]) -> None:
    base, db = server
    his = _client(db, base)
    signed = his.call("9001", {"signIn": {"opter": "001", "mac": "00-00", "ip": "127.0.0.1"}})
    assert signed["infcode"] == 0, signed
    his.sign_no = signed["output"]["signinoutb"]["sign_no"]

    cred = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "card_sn": "SNP1"}
    info = his.call("1101", {"data": cred})
    assert info["infcode"] == 0, info
    assert info["output"]["baseinfo"]["psn_no"] == "P1" and info["output"]["insuinfo"][0]["balc"] == "800.00"
    today = dt.date.today().isoformat()
    ok = his.call("2001", {"data": {"psn_no": "P1", "insutype": "310", "med_type": "11", "begntime": today}})
    assert ok["infcode"] == 0 and ok["output"]["trt_enjymnt_flag"] == "1", ok

    reg = his.call("2201", {"data": {**cred, "psn_no": "P1", "insutype": "310", "begntime": f"{today} 09:00:00",
                                     "ipt_otp_no": "MZ0001"}})  # fmt: skip
    assert reg["infcode"] == 0, reg
    mdtrt_id = reg["output"]["data"]["mdtrt_id"]
    visit = his.call("2203", {"mdtrtinfo": {"mdtrt_id": mdtrt_id, "psn_no": "P1", "med_type": "11"}, "diseinfo": []})
    assert visit["infcode"] == 0, visit
    fees = [
        {"feedetl_sn": "1", "mdtrt_id": mdtrt_id, "psn_no": "P1", "med_list_codg": "001102000050000", "cnt": "1",
         "pric": "1000.00", "det_item_fee_sumamt": "1000.00"},
        {"feedetl_sn": "2", "mdtrt_id": mdtrt_id, "psn_no": "P1", "med_list_codg": "001109000010500", "cnt": "1",
         "pric": "75.70", "det_item_fee_sumamt": "75.70"},
    ]  # fmt: skip
    upload = his.call("2204", {"feedetail": fees})
    assert upload["infcode"] == 0, upload
    split = {row["feedetl_sn"]: row for row in upload["output"]["result"]}
    assert split["2"]["fulamt_ownpay_amt"] == "75.70"  # 套间病房床位费 is 丙类
    settle_input = {"data": {"psn_no": "P1", "mdtrt_id": mdtrt_id, "medfee_sumamt": "1075.70", "acct_used_flag": "1",
                             "insutype": "310", "pin": b.PIN}}  # fmt: skip
    pre = his.call("2206", settle_input)
    assert pre["infcode"] == 0, pre
    # Dandong retiree, level 1: (1000 − 300) × 65 % = 455.00 from the fund.
    assert pre["output"]["setlinfo"]["hifp_pay"] == "455.00"
    msgid = f"{INST}{dt.datetime.now():%Y%m%d%H%M%S}9999"
    done = his.call("2207", settle_input, msgid=msgid)
    assert done["infcode"] == 0, done
    info = done["output"]["setlinfo"]
    assert (info["hifp_pay"], info["acct_pay"], info["psn_cash_pay"]) == ("455.00", "620.70", "0.00")
    again = his.call("2207", settle_input, msgid=msgid)  # the HIS timed out and retries
    assert again["output"] == done["output"]
    acc = transact(db, lambda c: repo.get_accumulators(c, "P1", dt.date.today().year, "310"))
    assert acc["outpatient_pooling.dedc_amt"] == 30000
    rev = his.call("2208", {"data": {"psn_no": "P1", "mdtrt_id": mdtrt_id, "setl_id": info["setl_id"]}})
    assert rev["infcode"] == 0 and rev["output"]["setlinfo"]["hifp_pay"] == "-455.00", rev
    assert transact(db, lambda c: repo.balances(c, "P1")) == (80000, 0)
    assert_invariants(db)


def test_authentication_and_cross_institution(server: tuple[str, Engine]) -> None:
    base, db = server
    his = _client(db, base)
    other = _client(db, base, OTHER)
    bad_signature = his.call("9001", {"signIn": {"opter": "001"}}, headers=his.headers(secret="wrong"))
    assert bad_signature["infcode"] == -1 and "签名不符" in bad_signature["err_msg"]
    stale = his.call(
        "9001", {"signIn": {"opter": "001"}}, headers=his.headers(timestamp=int(time.time() * 1000) - 10**6)
    )
    assert stale["infcode"] == -1 and "时间窗口" in stale["err_msg"]
    unknown = Client(base, "AKnobody", "x", INST).call("9001", {"signIn": {"opter": "001"}})
    assert unknown["infcode"] == -1 and "access_key" in unknown["err_msg"]
    # A key may only speak for its own institution.
    wrong_owner = other.call("9001", {"signIn": {"opter": "001"}}, headers=his.headers())
    assert wrong_owner["infcode"] == -1 and "不属于该密钥" in wrong_owner["err_msg"]
    # Business transactions need a sign-in.
    unsigned = his.call("1101", {"data": {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "card_sn": "SNP1"}})
    assert unsigned["infcode"] == -1 and "签到" in unsigned["err_msg"]
    his.sign_no = his.call("9001", {"signIn": {"opter": "001"}})["output"]["signinoutb"]["sign_no"]
    other.sign_no = other.call("9001", {"signIn": {"opter": "002"}})["output"]["signinoutb"]["sign_no"]
    today = dt.date.today().isoformat()
    cred = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "card_sn": "SNP1"}
    reg = his.call("2201", {"data": {**cred, "psn_no": "P1", "insutype": "310", "begntime": f"{today} 09:00:00"}})
    mdtrt_id = reg["output"]["data"]["mdtrt_id"]
    # Another institution cannot touch this visit.
    foreign = other.call("2204", {"feedetail": [{"feedetl_sn": "1", "mdtrt_id": mdtrt_id, "med_list_codg": "X",
                                                 "cnt": "1", "pric": "1", "det_item_fee_sumamt": "1.00"}]})  # fmt: skip
    assert foreign["infcode"] == -1 and "不属于本机构" in foreign["err_msg"]
    # An unknown transaction is answered, not crashed on.
    odd = his.call("9999", {})
    assert odd["infcode"] == -1 and "9999" in odd["err_msg"]
