"""Pharmacy purchases (2101–2103), family mutual aid, the rule check (3101), reconciliation
(3201/3202), settlement queries (5203/5204) and filings (2501–2504) over real HTTP, on both databases.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, select

from storage import builders as b
from storage.invariants import INSTITUTION, assert_invariants
from storage.test_gateway_e2e import OTHER
from storage.test_gateway_e2e import server as e2e_server  # noqa: F401  (a fixture, used by name)
from storage.test_gateway_inpatient import CARD, handlers_merged, line, ok, refused, signed
from yibao.db import repository as repo
from yibao.db import schema as S
from yibao.service.uow import transact

PHARMACY = "P21060000001"
#: 小儿咳嗽糖浆 (甲类) and 艾附暖宫丸 (甲类, female only) in the demo catalogue.
SYRUP, FEMALE_ONLY = "ZA06BBX0439010100465", "ZD03AAA0043010100220"
#: Inpatient-only infusion (限医疗类别 21/210104/28), a 丙类 bed, a female-only examination.
INPATIENT_ONLY, CLASS_C, FEMALE_EXAM = "XB05BAD252B002010101415", "001109000010500", "002101030300000"


@pytest.fixture
def gateway(request: pytest.FixtureRequest, db: Engine) -> Iterator[tuple[str, Engine]]:
    """The e2e server (on this test's database) answering this work's transactions too."""
    with handlers_merged():
        yield request.getfixturevalue("e2e_server")


def _drug(sn: str, code: str, pric: str, cnt: str = "1") -> dict[str, Any]:
    amount = f"{float(pric) * float(cnt):.2f}"
    return {"feedetl_sn": sn, "med_list_codg": code, "cnt": cnt, "pric": pric, "det_item_fee_sumamt": amount}


def test_pharmacy_purchase_and_family_mutual_aid(gateway: tuple[str, Engine]) -> None:
    base, db = gateway

    def setup(conn: Connection) -> None:
        b.institution(conn, PHARMACY, kind="pharmacy")
        b.person(conn, "P2", psn_type="1101", birth=dt.date(1985, 3, 1))  # no balance of their own
        conn.execute(insert(S.family_bindings).values(
            holder_psn_no="P1", member_psn_no="P2", relation="spouse", bound_at=b.NOW))  # fmt: skip

    transact(db, setup)
    shop = signed(db, base, PHARMACY)
    buyer = {**CARD, "psn_no": "P1", "insutype": "310", "acct_used_flag": "1", "pin": b.PIN}
    basket = [_drug("1", SYRUP, "71.80", "2")]
    pre = ok(shop.call("2101", {"data": {**buyer, "medfee_sumamt": "143.60"}, "feedetail": basket}))
    assert (pre["setlinfo"]["fund_pay_sumamt"], pre["setlinfo"]["acct_pay"]) == ("0.00", "143.60")
    # A smart watch is not in the catalogue: the whole purchase is refused, nothing is paid.
    watch = [*basket, {"feedetl_sn": "2", "med_list_codg": "SMARTWATCH0001", "cnt": "1", "pric": "1299.00",
                       "det_item_fee_sumamt": "1299.00"}]  # fmt: skip
    refused(shop.call("2102", {"data": buyer, "feedetail": watch}), "目录中无此编码", "SMARTWATCH0001")
    refused(shop.call("2102", {"data": {**buyer, "med_type": "11"}, "feedetail": basket}), "41")
    refused(shop.call("2102", {"data": {**buyer, "psn_no": "P2"}, "feedetail": basket}), "冒名")
    refused(signed(db, base).call("2102", {"data": buyer, "feedetail": basket}), "不是定点零售药店")

    msgid = f"{PHARMACY}{dt.datetime.now():%Y%m%d%H%M%S}9101"
    sold = ok(shop.call("2102", {"data": {**buyer, "medfee_sumamt": 143.6}, "feedetail": basket}, msgid=msgid))
    info = sold["setlinfo"]
    assert (info["medfee_sumamt"], info["hifp_pay"], info["acct_pay"], info["psn_cash_pay"], info["clr_type"]) == (
        "143.60", "0.00", "143.60", "0.00", "41",
    )  # fmt: skip
    assert ok(shop.call("2102", {"data": {**buyer, "medfee_sumamt": 143.6}, "feedetail": basket}, msgid=msgid)) == sold
    assert transact(db, lambda c: repo.balances(c, "P1")) == (80000 - 14360, 0)

    # Family mutual aid: P2 has no balance; the bound holder P1's account pays P2's share.
    member = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP2", "card_sn": "SNP2", "psn_no": "P2", "insutype": "310",
              "acct_used_flag": "1", "pin": b.PIN}  # fmt: skip
    numbers = [{"feedetl_sn": 1, "med_list_codg": SYRUP, "cnt": 2, "pric": 25.0, "det_item_fee_sumamt": 50.0}]
    aid = ok(shop.call("2102", {"data": member, "feedetail": numbers}))["setlinfo"]  # HIS sending JSON numbers
    assert (aid["psn_no"], aid["acct_pay"], aid["acct_mulaid_pay"], aid["psn_cash_pay"]) == (
        "P2", "50.00", "50.00", "0.00",
    )  # fmt: skip
    balances = transact(db, lambda c: (repo.balances(c, "P1"), repo.balances(c, "P2")))
    assert balances == ((80000 - 14360 - 5000, 0), (0, 0))

    # 2103: own pharmacy settlements only, once.
    refused(signed(db, base, OTHER).call("2103", {"data": {"setl_id": info["setl_id"]}}), "不是定点零售药店")
    back = ok(shop.call("2103", {"data": {"setl_id": info["setl_id"], "psn_no": "P1"}}))["setlinfo"]
    assert (back["acct_pay"], back["reverses_setl_id"]) == ("-143.60", info["setl_id"])
    refused(shop.call("2103", {"data": {"setl_id": info["setl_id"]}}), "已撤销")
    assert transact(db, lambda c: repo.balances(c, "P1")) == (80000 - 5000, 0)
    assert_invariants(db)


def test_rule_check_reconciliation_and_queries(gateway: tuple[str, Engine]) -> None:
    base, db = gateway
    his = signed(db, base)
    today = dt.date.today()
    reg = ok(his.call("2201", {"data": {**CARD, "psn_no": "P1", "insutype": "310", "begntime": f"{today} 09:00:00"}}))
    mdtrt_id = reg["data"]["mdtrt_id"]
    fees = [line(mdtrt_id, "1", "001102000050000", "100.00"), line(mdtrt_id, "2", INPATIENT_ONLY, "474.60"),
            line(mdtrt_id, "3", CLASS_C, "75.70"), line(mdtrt_id, "4", FEMALE_EXAM, "244.60")]  # fmt: skip
    ok(his.call("2204", {"feedetail": fees}))

    # 3101 over the visit's uploaded lines: the catalogue restrictions that make lines 全自费.
    found = ok(his.call("3101", {"data": {"mdtrt_id": mdtrt_id}}))["result"]
    rules = {(r["feedetl_sn"], r["rule_id"]) for r in found}
    assert rules == {("2", "LMT_MED_TYPE"), ("3", "CLASS_C"), ("4", "LMT_GEND")}, found
    gend = next(r for r in found if r["rule_id"] == "LMT_GEND")
    assert "限女性使用" in gend["vola_cont"] and gend["vola_amt"] == "244.60" and gend["mdtrt_id"] == mdtrt_id
    # … or over lines given in the input, in the visit's context.
    given = ok(his.call("3101", {"data": {"mdtrt_id": mdtrt_id}, "feedetail": [line(mdtrt_id, "9", CLASS_C, "10.00")]}))
    assert [(r["feedetl_sn"], r["rule_id"]) for r in given["result"]] == [("9", "CLASS_C")]
    refused(signed(db, base, OTHER).call("3101", {"data": {"mdtrt_id": mdtrt_id}}), "不属于本机构")

    # Settle (cash), then reverse: the platform's figures for today.
    done = ok(his.call("2207", {"data": {"mdtrt_id": mdtrt_id, "psn_no": "P1", "acct_used_flag": "0"}}))["setlinfo"]
    rev = ok(his.call("2208", {"data": {"mdtrt_id": mdtrt_id, "psn_no": "P1", "setl_id": done["setl_id"]}}))
    rev_id = rev["setlinfo"]["setl_id"]
    span = {"setl_optins": "210600", "stmt_begndate": today.isoformat(), "stmt_enddate": today.isoformat()}
    zero = {"medfee_sumamt": "0.00", "fund_pay_sumamt": 0, "acct_pay": "0", "fixmedins_setl_cnt": 2}
    assert ok(his.call("3201", {"data": {**span, **zero}}))["stmtinfo"]["stmt_rslt"] == "0"
    off = ok(his.call("3201", {"data": {**span, **zero, "fixmedins_setl_cnt": "1", "medfee_sumamt": "894.90"}}))
    stmt = off["stmtinfo"]
    assert (stmt["stmt_rslt"], stmt["medfee_sumamt"], stmt["fixmedins_setl_cnt"]) == ("1", "0.00", 2)
    assert "medfee_sumamt" in stmt["stmt_rslt_dscr"] and "fixmedins_setl_cnt" in stmt["stmt_rslt_dscr"]
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    empty = {"data": {**span, "stmt_begndate": yesterday, "stmt_enddate": yesterday, **zero, "fixmedins_setl_cnt": 0}}
    assert ok(his.call("3201", empty))["stmtinfo"]["stmt_rslt"] == "0"

    # 3202: a matching row, a row with the wrong amount, one the platform never made; the reversal is missing.
    amounts = {k: done[k] for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay")}
    missing = {"setl_id": "NOSUCHSETTLEMENT", "medfee_sumamt": "1.00", "fund_pay_sumamt": "0", "acct_pay": "0"}
    detail = [{"setl_id": done["setl_id"], **amounts}, missing]
    out = ok(his.call("3202", {"data": span, "detail": detail}))
    assert out["stmt_rslt"] == "1"
    assert {(r["setl_id"], r["stmt_rslt"]) for r in out["result"]} == {("NOSUCHSETTLEMENT", "3"), (rev_id, "2")}
    wrong = [{**detail[0], "medfee_sumamt": "1.00"}]
    row = ok(his.call("3202", {"data": span, "detail": wrong}))["result"]
    assert {(r["setl_id"], r["stmt_rslt"]) for r in row} == {(done["setl_id"], "1"), (rev_id, "2")}
    negated = {k: f"-{v}" if v != "0.00" else v for k, v in amounts.items()}
    whole = ok(his.call("3202", {"data": span, "detail": [detail[0], {"setl_id": rev_id, **negated}]}))
    assert whole == {"stmt_rslt": "0", "result": []}

    # 5203 / 5204: own settlements only.
    got = ok(his.call("5203", {"data": {"setl_id": done["setl_id"], "psn_no": "P1"}}))
    assert got["setlinfo"]["setl_id"] == done["setl_id"] and got["setlinfo"]["medfee_sumamt"] == "894.90"
    assert got["setldetail"] and got["setlinfo"]["refd_setl_flag"] == "0"
    assert ok(his.call("5203", {"data": {"setl_id": rev_id}}))["setlinfo"]["refd_setl_flag"] == "1"
    lines = ok(his.call("5204", {"data": {"setl_id": done["setl_id"]}}))["feedetail"]
    assert sorted(r["feedetl_sn"] for r in lines) == ["1", "2", "3", "4"]
    assert all(r["setl_id"] == done["setl_id"] for r in lines)
    other = signed(db, base, OTHER)
    refused(other.call("5203", {"data": {"setl_id": done["setl_id"]}}), "不存在或不属于本机构")
    refused(other.call("5204", {"data": {"setl_id": done["setl_id"]}}), "不存在或不属于本机构")
    assert_invariants(db)


def test_filings(gateway: tuple[str, Engine]) -> None:
    base, db = gateway

    def setup(conn: Connection) -> None:
        b.region(conn, "120000", "天津市")
        b.person(conn, "P2")

    transact(db, setup)
    his = signed(db, base)
    today = dt.date.today().isoformat()
    referral = {**CARD, "psn_no": "P1", "insutype": "310", "mdtrtarea_admdvs": "120000", "begndate": today}
    filed = ok(his.call("2501", {"data": referral}))["result"]
    assert (filed["offsite_type"], filed["mdtrtarea_admdvs"], filed["enddate"] != "") == ("referral", "120000", True)
    refused(his.call("2501", {"data": referral}), "时间重叠", filed["trt_dcla_detl_sn"])
    refused(his.call("2501", {"data": {**referral, "mdtrtarea_admdvs": "210600"}}), "无需办理异地就医备案")
    refused(his.call("2501", {"data": {**referral, "offsite_type": "holiday"}}), "offsite_type")
    # Without a credential the person must have a visit here.
    refused(his.call("2501", {"data": {"psn_no": "P2", "mdtrtarea_admdvs": "120000"}}), "本机构无参保人")
    sn = filed["trt_dcla_detl_sn"]
    refused(signed(db, base, OTHER).call("2502", {"data": {"psn_no": "P1", "trt_dcla_detl_sn": sn}}), "本机构无参保人")
    ok(his.call("2502", {"data": {**CARD, "psn_no": "P1", "trt_dcla_detl_sn": sn}}))
    refused(his.call("2502", {"data": {**CARD, "psn_no": "P1", "trt_dcla_detl_sn": sn}}), "已撤销")
    rows = transact(db, lambda c: c.execute(S.filings.select()).all())
    assert [(r.kind, r.status) for r in rows] == [("offsite", "cancelled")]

    disease = ok(his.call("2503", {"data": {**CARD, "psn_no": "P1", "opsp_dise_code": "E11.9", "begndate": today}}))
    dsn = disease["result"]["trt_dcla_detl_sn"]
    refused(his.call("2503", {"data": {**CARD, "psn_no": "P1", "opsp_dise_code": "E11.9"}}), "时间重叠")
    refused(his.call("2502", {"data": {**CARD, "psn_no": "P1", "trt_dcla_detl_sn": dsn}}), "没有流水号")
    ok(his.call("2504", {"data": {**CARD, "psn_no": "P1", "trt_dcla_detl_sn": dsn}}))


def test_one_visit_settles_once_under_concurrent_messages(gateway: tuple[str, Engine]) -> None:
    """Two 2207 with different msgids for the same visit at once: one settles, the other is refused."""
    base, db = gateway
    his = signed(db, base)
    today = dt.date.today().isoformat()
    reg = ok(his.call("2201", {"data": {**CARD, "psn_no": "P1", "insutype": "310", "begntime": f"{today} 09:00:00"}}))
    mdtrt_id = reg["data"]["mdtrt_id"]
    ok(his.call("2204", {"feedetail": [line(mdtrt_id, "1", "001102000050000", "300.00")]}))
    body = {"data": {"psn_no": "P1", "mdtrt_id": mdtrt_id, "acct_used_flag": "0"}}
    replies: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def settle(tag: int) -> None:
        client = signed(db, base)
        barrier.wait()
        replies.append(client.call("2207", body, msgid=f"{INSTITUTION}{dt.datetime.now():%Y%m%d%H%M%S}77{tag:02d}"))

    threads = [threading.Thread(target=settle, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(r["infcode"] for r in replies) == [-1, 0], replies
    loser = next(r for r in replies if r["infcode"] == -1)
    assert "不能结算" in loser["err_msg"], loser
    settled = transact(db, lambda c: c.execute(select(S.settlements.c.setl_id).where(
        S.settlements.c.mdtrt_id == mdtrt_id)).all())  # fmt: skip
    assert len(settled) == 1
    assert_invariants(db)


def test_accumulators_5206(gateway: tuple[str, Engine]) -> None:
    base, db = gateway
    his = signed(db, base)
    year = dt.date.today().year
    card = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "card_sn": "SNP1"}  # the person is at the till
    out = ok(his.call("5206", {"data": {"psn_no": "P1", "cum_ym": f"{year}01", "insutype": "310", **card}}))
    assert isinstance(out, dict)
    # A cum_ym that does not start with a year is the caller's error, named, not an internal one.
    message = refused(his.call("5206", {"data": {"psn_no": "P1", "cum_ym": "x2025"}}), "cum_ym")
    assert "平台内部错误" not in message
