"""5301 (chronic/special-disease filings) and 5303 (in-hospital status) over real HTTP, with 5206's access rule."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, insert

from storage import builders as b
from storage.test_gateway_e2e import INST, OTHER, Client, start_server
from storage.test_smoke_settlement import ENGINE
from yibao.db import schema as S
from yibao.gateway import create_app
from yibao.service import accounts
from yibao.service.apikeys import issue_api_key
from yibao.service.settlement import SettlementService
from yibao.service.uow import transact

CARD = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "card_sn": "SNP1"}


@pytest.fixture
def clients(db: Engine) -> Iterator[tuple[Client, Client]]:
    def setup(conn: Connection) -> None:
        b.institution(conn, INST)
        b.institution(conn, OTHER)
        b.person(conn, "P1", balance_fen=50000)
        conn.execute(insert(S.visits).values(
            mdtrt_id="ZY-1", psn_no="P1", fixmedins_code=OTHER, insutype="310", med_type="21",
            begntime="2026-11-30 08:00:00", cert_type="03", cert_no="CP1", card_sn="SNP1", ipt_otp_no="ZY0001",
            dise_codg=None, status="open", created_at=dt.datetime.now()))  # fmt: skip

    transact(db, setup)
    accounts.file_disease(db, psn_no="P1", dise_codg="I10.x00", begn_date=dt.date(2026, 1, 1), clock=dt.datetime.now)
    base, stop = start_server(create_app(db, SettlementService(db, ENGINE, clock=dt.datetime.now)))
    signed = []
    for code in (INST, OTHER):
        key, secret = issue_api_key(db, code, clock=dt.datetime.now)
        his = Client(base, key, secret, code)
        his.sign_no = his.call("9001", {"signIn": {"opter": "001"}})["output"]["signinoutb"]["sign_no"]
        signed.append(his)
    yield signed[0], signed[1]
    stop()


def test_disease_filings_5301(clients: tuple[Client, Client]) -> None:
    his, _ = clients
    refused = his.call("5301", {"data": {"psn_no": "P1"}})
    assert refused["infcode"] == -1 and "无权查询" in refused["err_msg"], refused
    answer = his.call("5301", {"data": {"psn_no": "P1", **CARD}})
    assert answer["infcode"] == 0, answer
    assert answer["output"]["feedetail"] == [
        {"opsp_dise_code": "I10.x00", "opsp_dise_name": "特发性（原发性）高血压", "begndate": "2026-01-01",
         "enddate": ""}
    ]  # fmt: skip


def test_in_hospital_5303_shows_admissions_elsewhere(clients: tuple[Client, Client]) -> None:
    his, hospital = clients
    assert his.call("5303", {"data": {"psn_no": "P1"}})["infcode"] == -1  # no visit here, no card shown
    answer = his.call("5303", {"data": {"psn_no": "P1", **CARD}})
    assert answer["infcode"] == 0, answer
    [row] = answer["output"]["data"]
    assert (row["mdtrt_id"], row["fixmedins_code"], row["med_type"], row["ipt_otp_no"], row["out_flag"]) == (
        "ZY-1", OTHER, "21", "ZY0001", "0")  # fmt: skip
    assert row["begndate"] == "2026-11-30" and row["psn_name"] and row["certno"]
    # The admitting hospital may ask with the open admission alone.
    assert hospital.call("5303", {"data": {"psn_no": "P1"}})["output"]["data"] == [row]
