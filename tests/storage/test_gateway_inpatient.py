"""The inpatient flow over real HTTP, on both databases: admission, interim (中途结算) and final
settlement, discharge, then reversal and cancel-discharge — the per-admission deductible is
charged once across all of the admission's settlements.

Reuses the signed HIS client and the uvicorn server of ``test_gateway_e2e``; the inpatient,
pharmacy, filing, rule-check, reconciliation and query handlers are merged into the dispatch
table for the duration of each test.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, select

from storage import builders as b
from storage.invariants import assert_invariants
from storage.test_gateway_e2e import INST, OTHER, Client, _client
from storage.test_gateway_e2e import server as e2e_server  # noqa: F401  (a fixture, used by name)
from yibao.db import repository as repo
from yibao.db import schema as S
from yibao.gateway import filings, inpatient, pharmacy, reconciliation, rule_check, settlement_queries, transactions
from yibao.service.uow import transact

CARD = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "card_sn": "SNP1"}
#: 住院诊查费 and 普通病房床位费(双人间): 甲类, no cap, no restriction in the demo catalogue.
CONSULT, BED = "001102000050000", "001109000010200"


@contextmanager
def handlers_merged() -> Iterator[None]:
    """The inpatient, pharmacy, filing, rule-check, reconciliation and query handlers in the dispatch
    table (restored after)."""
    saved = dict(transactions.HANDLERS)
    for module in (inpatient, pharmacy, filings, rule_check, reconciliation, settlement_queries):
        transactions.HANDLERS.update(module.HANDLERS)
    try:
        yield
    finally:
        transactions.HANDLERS.clear()
        transactions.HANDLERS.update(saved)


@pytest.fixture
def gateway(request: pytest.FixtureRequest, db: Engine) -> Iterator[tuple[str, Engine]]:
    """The e2e server (on this test's database) answering this work's transactions too."""
    with handlers_merged():
        yield request.getfixturevalue("e2e_server")


def signed(db: Engine, base: str, code: str = INST) -> Client:
    his = _client(db, base, code)
    reply = his.call("9001", {"signIn": {"opter": "001"}})
    assert reply["infcode"] == 0, reply
    his.sign_no = reply["output"]["signinoutb"]["sign_no"]
    return his


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["infcode"] == 0, reply
    output: dict[str, Any] = reply["output"]
    return output


def refused(reply: dict[str, Any], *words: str) -> str:
    assert reply["infcode"] == -1, reply
    message: str = reply["err_msg"]
    assert all(word in message for word in words), message
    return message


def line(mdtrt_id: str, sn: str, code: str, amount: str, cnt: str = "1") -> dict[str, Any]:
    pric = f"{round(float(amount) * 100 / float(cnt)) / 100:.2f}"
    return {"feedetl_sn": sn, "mdtrt_id": mdtrt_id, "psn_no": "P1", "med_list_codg": code, "cnt": cnt, "pric": pric,
            "det_item_fee_sumamt": amount, "fee_ocur_time": f"{dt.date.today()} 10:00:00"}  # fmt: skip


def msgid(tag: int) -> str:
    return f"{INST}{dt.datetime.now():%Y%m%d%H%M%S}{tag:04d}"


def live_dedc(db: Engine, mdtrt_id: str) -> int:
    """Σ act_pay_dedc of the admission's live settlements, in fen."""

    def work(conn: Any) -> int:
        rows = conn.execute(select(S.settlements).where(S.settlements.c.mdtrt_id == mdtrt_id)).all()
        reversed_ids = {r.reverses_setl_id for r in rows}
        total = 0
        for r in rows:
            if r.kind == "settle" and r.setl_id not in reversed_ids:
                whole, _, cents = json.loads(r.result_json)["setlinfo"]["act_pay_dedc"].partition(".")
                total += int(whole) * 100 + int(cents)
        return total

    return transact(db, work, readonly=True)


def inpatient_acc(db: Engine) -> dict[str, int]:
    acc = transact(db, lambda c: repo.get_accumulators(c, "P1", dt.date.today().year, "310"), readonly=True)
    return {k: v for k, v in acc.items() if k.startswith("inpatient.")}


def test_inpatient_flow_with_interim_settlement(gateway: tuple[str, Engine]) -> None:
    base, db = gateway
    his = signed(db, base)
    today = dt.date.today()
    admission = {**CARD, "psn_no": "P1", "insutype": "310", "med_type": "21", "begntime": f"{today} 08:00:00",
                 "ipt_no": "ZY0001"}  # fmt: skip
    refused(his.call("2401", {"mdtrtinfo": {**admission, "med_type": "11"}}), "住院类")
    refused(his.call("2401", {"mdtrtinfo": {**admission, "psn_no": "P9"}}), "冒名")
    adm = ok(his.call("2401", {"mdtrtinfo": admission, "diseinfo": [{"diag_code": "I63.9", "maindiag_flag": "1"}]}))
    mdtrt_id = adm["result"]["mdtrt_id"]
    assert adm["result"]["ipt_otp_no"] == "ZY0001"
    refused(his.call("2401", {"mdtrtinfo": admission}), "已有在院记录")

    # Day 1: 300 yuan of fees; a line the catalogue does not know is refused and nothing is stored.
    split = ok(his.call("2301", {"feedetail": [line(mdtrt_id, "1", CONSULT, "300.00")]}))["result"]
    assert (split[0]["feedetl_sn"], split[0]["inscp_scp_amt"], split[0]["mdtrt_id"]) == ("1", "300.00", mdtrt_id)
    refused(his.call("2301", {"feedetail": [line(mdtrt_id, "9", "SMARTWATCH0001", "999.00")]}), "目录中无此编码")
    pay = {"mdtrt_id": mdtrt_id, "psn_no": "P1", "insutype": "310", "acct_used_flag": "1", "pin": b.PIN}
    pre = ok(his.call("2303", {"data": {**pay, "mid_setl_flag": "1"}}))["setlinfo"]
    assert (pre["medfee_sumamt"], pre["act_pay_dedc"], pre["hifp_pay"]) == ("300.00", "300.00", "0.00")
    refused(his.call("2304", {"data": {**pay, "mid_setl_flag": "1", "medfee_sumamt": "999.00"}}), "不符")

    # Interim settlement (中途结算): the deductible 400 (level-1 hospital) is borne up to the 300 in scope.
    interim = ok(his.call("2304", {"data": {**pay, "mid_setl_flag": "1", "medfee_sumamt": "300.00"}}))["setlinfo"]
    assert (interim["act_pay_dedc"], interim["hifp_pay"], interim["acct_pay"], interim["psn_cash_pay"]) == (
        "300.00", "0.00", "300.00", "0.00",
    )  # fmt: skip
    refused(his.call("2402", {"dscginfo": {"mdtrt_id": mdtrt_id, "psn_no": "P1"}}), "尚未完成出院结算")
    refused(his.call("2302", {"data": [{"feedetl_sn": "1", "mdtrt_id": mdtrt_id, "psn_no": "P1"}]}), "已结算")
    refused(his.call("2304", {"data": {**pay, "mid_setl_flag": "1"}}), "没有未结算的费用明细")
    refused(his.call("2404", {"data": {"mdtrt_id": mdtrt_id, "psn_no": "P1"}}), "未撤销的结算")

    # Days 2–10: 1,000 yuan more. The final settlement settles only these lines, continues the admission
    # and owes only the rest of the deductible: 100; (1000 − 100) × 92 % (retired, level 1) = 828.
    ok(his.call("2301", {"feedetail": [line(mdtrt_id, "2", BED, "1000.00", "10")]}))
    pre = ok(his.call("2303", {"data": {**pay, "mid_setl_flag": "0"}}))["setlinfo"]
    assert (pre["medfee_sumamt"], pre["act_pay_dedc"], pre["hifp_pay"]) == ("1000.00", "100.00", "828.00")
    final_input = {"data": {**pay, "mid_setl_flag": "0", "medfee_sumamt": "1000.00"}}
    final_msgid = msgid(9001)
    final = ok(his.call("2304", final_input, msgid=final_msgid))
    info = final["setlinfo"]
    assert (info["medfee_sumamt"], info["act_pay_dedc"], info["hifp_pay"], info["acct_pay"]) == (
        "1000.00", "100.00", "828.00", "172.00",
    )  # fmt: skip
    assert ok(his.call("2304", final_input, msgid=final_msgid)) == final  # the HIS retries: the stored reply
    assert live_dedc(db, mdtrt_id) == 40000  # charged once across the interim and final settlements
    acc = inpatient_acc(db)  # one admission counted, its deductible once
    assert (acc["inpatient.visit_cnt"], acc["inpatient.dedc_amt"]) == (1, 40000)
    assert transact(db, lambda c: repo.balances(c, "P1")) == (80000 - 30000 - 17200, 0)
    refused(his.call("2301", {"feedetail": [line(mdtrt_id, "3", CONSULT, "10.00")]}), "已完成出院结算")

    # Discharge; a discharge cannot be cancelled while its final settlement stands.
    ok(his.call("2402", {"dscginfo": {"mdtrt_id": mdtrt_id, "psn_no": "P1", "endtime": f"{today} 16:00:00"}}))
    refused(his.call("2405", {"data": {"mdtrt_id": mdtrt_id, "psn_no": "P1"}}), "未撤销", "2305")

    # 2305: newest first, own institution only.
    refused(his.call("2305", {"data": {"mdtrt_id": mdtrt_id, "setl_id": interim["setl_id"]}}), "倒序", info["setl_id"])
    other_his = signed(db, base, OTHER)
    refused(other_his.call("2305", {"data": {"setl_id": info["setl_id"]}}), "不存在或不属于本机构")
    rev = ok(his.call("2305", {"data": {"mdtrt_id": mdtrt_id, "setl_id": info["setl_id"], "psn_no": "P1"}}))
    assert (rev["setlinfo"]["hifp_pay"], rev["setlinfo"]["acct_pay"]) == ("-828.00", "-172.00")
    refused(his.call("2305", {"data": {"setl_id": info["setl_id"]}}), "已撤销")
    assert transact(db, lambda c: repo.balances(c, "P1")) == (80000 - 30000, 0)
    acc = inpatient_acc(db)
    assert (acc["inpatient.visit_cnt"], acc["inpatient.dedc_amt"]) == (1, 30000)

    # The discharge can now be cancelled; the reversed lines are settleable again and the deductible
    # still counts what the standing interim settlement bore.
    refused(his.call("2304", {"data": {**pay, "mid_setl_flag": "0"}}), "已办理出院")
    ok(his.call("2405", {"data": {"mdtrt_id": mdtrt_id, "psn_no": "P1"}}))
    again = ok(his.call("2304", {"data": {**pay, "mid_setl_flag": "0"}}))["setlinfo"]
    assert (again["medfee_sumamt"], again["act_pay_dedc"], again["hifp_pay"]) == ("1000.00", "100.00", "828.00")
    assert live_dedc(db, mdtrt_id) == 40000
    acc = inpatient_acc(db)
    assert (acc["inpatient.visit_cnt"], acc["inpatient.dedc_amt"]) == (1, 40000)
    ok(his.call("2402", {"dscginfo": {"mdtrt_id": mdtrt_id, "psn_no": "P1"}}))
    status = select(S.visits.c.status).where(S.visits.c.mdtrt_id == mdtrt_id)
    assert transact(db, lambda c: c.execute(status).scalar()) == "settled"
    assert_invariants(db)


def test_cancel_admission_and_revoke_lines(gateway: tuple[str, Engine]) -> None:
    base, db = gateway
    his = signed(db, base)
    today = dt.date.today()
    admission = {**CARD, "psn_no": "P1", "insutype": "310", "med_type": "28", "begntime": f"{today} 08:00:00"}
    mdtrt_id = ok(his.call("2401", {"mdtrtinfo": admission}))["result"]["mdtrt_id"]
    ok(his.call("2301", {"feedetail": [line(mdtrt_id, "1", CONSULT, "50.00"), line(mdtrt_id, "2", BED, "86.20", "2")]}))
    refused(his.call("2404", {"data": {"mdtrt_id": mdtrt_id, "psn_no": "P1"}}), "2 条未撤销的费用明细")
    refused(his.call("2302", {"data": [{"feedetl_sn": "7", "mdtrt_id": mdtrt_id, "psn_no": "P1"}]}), "不存在")
    ok(his.call("2302", {"data": [{"feedetl_sn": "1", "mdtrt_id": mdtrt_id, "psn_no": "P1"}]}))
    refused(his.call("2301", {"feedetail": [line(mdtrt_id, "1", CONSULT, "50.00")]}), "已撤销")
    pre = ok(his.call("2303", {"data": {"mdtrt_id": mdtrt_id, "psn_no": "P1"}}))["setlinfo"]
    assert pre["medfee_sumamt"] == "86.20"
    ok(his.call("2302", {"data": {"feedetl_sn": "0000", "mdtrt_id": mdtrt_id, "psn_no": "P1"}}))
    refused(his.call("2303", {"data": {"mdtrt_id": mdtrt_id}}), "没有未结算的费用明细")
    # An outpatient visit is not an admission.
    reg = ok(his.call("2201", {"data": {**CARD, "psn_no": "P1", "insutype": "310", "begntime": f"{today} 09:00:00"}}))
    refused(his.call("2303", {"data": {"mdtrt_id": reg["data"]["mdtrt_id"]}}), "不是住院")
    # Another institution cannot touch the admission.
    refused(signed(db, base, OTHER).call("2404", {"data": {"mdtrt_id": mdtrt_id}}), "不属于本机构")
    ok(his.call("2404", {"data": {"mdtrt_id": mdtrt_id, "psn_no": "P1"}}))
    refused(his.call("2301", {"feedetail": [line(mdtrt_id, "3", CONSULT, "5.00")]}), "已撤销入院")
    assert transact(db, lambda c: repo.balances(c, "P1")) == (80000, 0)
    assert_invariants(db)
