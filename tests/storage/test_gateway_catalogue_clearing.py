"""1201 (designated institutions), 1312 (the catalogue, paged), 1301/9102 (unsupported) and
3203/3204 (clearing application and its revocation, with the 3203A/3204A spellings) over real
HTTP, on both databases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

from storage import builders as b
from storage.test_gateway_e2e import INST, OTHER
from storage.test_gateway_e2e import server as e2e_server  # noqa: F401  (a fixture, used by name)
from storage.test_gateway_inpatient import CARD, line, ok, refused, signed
from yibao.db import schema as S
from yibao.money import parse_fen
from yibao.service.clearing import mark_processed
from yibao.service.uow import transact

PHARMACY = "P21060000001"
CLOSED = "H21060000009"  # no longer designated
#: The national row of 急诊诊查费 (Tianjin has its own row from 2023-07-01).
EMERGENCY_NATIONAL = {
    "hilist_code": "001102000030000", "hilist_name": "急诊诊查费", "insu_admdvs": "", "begndate": "2020-01-01",
    "enddate": "", "med_chrgitm_type": "02", "chrgitm_lv": "01", "lmt_used_flag": "0", "list_type": "201",
    "med_use_flag": "1", "matn_used_flag": "1", "hilist_use_type": "", "lmt_cpnd_type": "", "wubi": "", "pinyin": "",
    "memo": "", "vali_flag": "1", "rid": "001102000030000-000000-20200101", "updt_time": "", "crter_id": "",
    "crter_name": "", "crte_time": "", "crte_optins_no": "", "opter_id": "", "opter_name": "", "opt_time": "",
    "optins_no": "", "poolarea_no": "",
}  # fmt: skip


@pytest.fixture
def gateway(request: pytest.FixtureRequest, db: Engine) -> Iterator[tuple[str, Engine]]:
    def setup(conn: Connection) -> None:
        b.institution(conn, PHARMACY, kind="pharmacy", hosp_lv="11")
        b.institution(conn, CLOSED)
        conn.execute(S.institutions.update().where(S.institutions.c.fixmedins_code == CLOSED).values(designated=False))

    base, engine = request.getfixturevalue("e2e_server")
    transact(engine, setup)
    yield base, engine


def _applications(db: Engine) -> list[Any]:
    return transact(db, lambda c: c.execute(select(S.clearing_applications)).all())


# -- 1201 -----------------------------------------------------------------------------------
def test_designated_institutions_1201(gateway: tuple[str, Engine]) -> None:
    base, db = gateway
    his = signed(db, base)
    # The institution no longer designated is not listed.
    hospitals = ok(his.call("1201", {"medinsinfo": {"fixmedins_type": "1"}}))["medinsinfo"]
    assert hospitals == [
        {"fixmedins_code": INST, "fixmedins_name": f"机构{INST}", "uscc": "", "fixmedins_type": "1", "hosp_lv": "08"},
        {"fixmedins_code": OTHER, "fixmedins_name": f"机构{OTHER}", "uscc": "", "fixmedins_type": "1",
         "hosp_lv": "08"},
    ]  # fmt: skip
    by_name = ok(his.call("1201", {"medinsinfo": {"fixmedins_type": 1, "fixmedins_name": "0000002"}}))
    assert [i["fixmedins_code"] for i in by_name["medinsinfo"]] == [OTHER]
    # A fragment with LIKE's wildcards matches them literally, not everything.
    for fragment in ("%", "_", "机构%"):
        assert ok(his.call("1201", {"medinsinfo": {"fixmedins_type": "1", "fixmedins_name": fragment}})) == {
            "medinsinfo": []
        }
    shops = ok(his.call("1201", {"data": {"fixmedins_type": "2", "fixmedins_code": PHARMACY}}))["medinsinfo"]
    assert [(s["fixmedins_code"], s["fixmedins_type"], s["hosp_lv"]) for s in shops] == [(PHARMACY, "2", "11")]
    refused(his.call("1201", {"medinsinfo": {"fixmedins_type": "3"}}), "[input.medinsinfo.fixmedins_type]")
    refused(his.call("1201", {"medinsinfo": {}}), "[input.medinsinfo.fixmedins_type]", "缺少必填字段")
    long_name = {"fixmedins_type": "1", "fixmedins_name": "院" * 101}
    refused(his.call("1201", {"medinsinfo": long_name}), "[input.medinsinfo.fixmedins_name]", "过长")


# -- 1312 / 1301 ----------------------------------------------------------------------------
def test_catalogue_query_1312(gateway: tuple[str, Engine]) -> None:
    base, db = gateway
    his = signed(db, base)
    page = {"page_num": 1, "page_size": 10}
    both = ok(his.call("1312", {"data": {"hilist_code": "001102000030000", **page}}))
    assert [(r["insu_admdvs"], r["begndate"]) for r in both["data"]] == [("", "2020-01-01"), ("120000", "2023-07-01")]
    assert both["data"][0] == EMERGENCY_NATIONAL
    paging = ("recordCounts", "pages", "size", "pageNum", "pageSize", "firstPage", "lastPage")
    assert {k: both[k] for k in paging} == {
        "recordCounts": 2, "pages": 1, "size": 2, "pageNum": 1, "pageSize": 10, "firstPage": 1, "lastPage": 1,
    }  # fmt: skip
    # A region sees its own rows and the national ones; a date sees the rows in force on it.
    dandong = ok(his.call("1312", {"data": {"hilist_code": "001102000030000", "insu_admdvs": "210600", **page}}))
    assert dandong["data"] == [EMERGENCY_NATIONAL]
    tianjin_2022 = {"hilist_code": "001102000030000", "insu_admdvs": "120000", "query_date": "2022-06-30", **page}
    assert [r["insu_admdvs"] for r in ok(his.call("1312", {"data": tianjin_2022}))["data"]] == [""]
    # Dated national versions: the bed fee's cap changed on 2025-01-01.
    bed = ok(his.call("1312", {"data": {"hilist_code": "001109000010000", **page}}))["data"]
    assert [(r["begndate"], r["enddate"]) for r in bed] == [("2020-01-01", "2024-12-31"), ("2025-01-01", "")]
    # A restricted drug: 限制使用 with its indication text as memo, 101 西药中成药.
    drug = ok(his.call("1312", {"data": {"hilist_code": "XB05BAD252B002010101415", **page}}))["data"][0]
    assert (drug["list_type"], drug["lmt_used_flag"], drug["med_chrgitm_type"]) == ("101", "1", "09")

    # Paging: every row once, in order, across pages of 7.
    query = {"hilist_name": "注射液", "query_date": "2026-01-01"}
    first = ok(his.call("1312", {"data": {**query, "page_num": 1, "page_size": 7}}))
    total, pages = first["recordCounts"], first["pages"]
    assert total > 14 and pages == -(-total // 7) and first["size"] == 7 and first["lastPage"] == pages
    seen = []
    for n in range(1, pages + 1):
        got = ok(his.call("1312", {"data": {**query, "page_num": n, "page_size": 7}}))
        assert got["pageNum"] == n and got["recordCounts"] == total
        seen += [r["rid"] for r in got["data"]]
    assert len(seen) == len(set(seen)) == total
    all_at_once = ok(his.call("1312", {"data": {**query, "page_num": "1", "page_size": "1000"}}))
    assert [r["rid"] for r in all_at_once["data"]] == seen
    beyond = ok(his.call("1312", {"data": {**query, "page_num": pages + 1, "page_size": 7}}))
    assert (beyond["data"], beyond["size"], beyond["recordCounts"]) == ([], 0, total)
    nothing = ok(his.call("1312", {"data": {"hilist_code": "NOSUCHCODE", **page}}))
    assert {k: nothing[k] for k in ("data", "recordCounts", "pages", "firstPage", "lastPage")} == {
        "data": [], "recordCounts": 0, "pages": 0, "firstPage": 0, "lastPage": 0}  # fmt: skip

    for data, field in [
        ({"page_num": 1, "page_size": 1001}, "page_size"), ({"page_num": 0, "page_size": 10}, "page_num"),
        ({"page_size": 10}, "page_num"), ({"page_num": 1}, "page_size"), ({**page, "page_size": "1e3"}, "page_size"),
        ({**page, "query_date": "2026-02-30"}, "query_date"), ({**page, "insu_admdvs": "21"}, "insu_admdvs"),
        ({**page, "chrgitm_lv": "05"}, "chrgitm_lv"), ({**page, "hilist_name": "药" * 201}, "hilist_name"),
        ({**page, "hilist_code": "X B"}, "hilist_code"), ({**page, "updt_time": "yesterday"}, "updt_time"),
    ]:  # fmt: skip
        refused(his.call("1312", {"data": data}), f"[input.data.{field}]")
    for infno in ("1301", "9102"):
        refused(his.call(infno, {"data": {"ver": "0"}}), "不支持", "1312")


# -- 3203 / 3204 ----------------------------------------------------------------------------
def _settle_today(his: Any) -> dict[str, Any]:
    today = dt.date.today()
    reg = ok(his.call("2201", {"data": {**CARD, "psn_no": "P1", "insutype": "310", "begntime": f"{today} 09:00:00"}}))
    mdtrt_id = reg["data"]["mdtrt_id"]
    ok(his.call("2204", {"feedetail": [line(mdtrt_id, "1", "001102000050000", "100.00"),
                                       line(mdtrt_id, "2", "001109000010500", "75.70")]}))  # fmt: skip
    done = ok(his.call("2207", {"data": {"mdtrt_id": mdtrt_id, "psn_no": "P1", "acct_used_flag": "0"}}))
    info: dict[str, Any] = done["setlinfo"]
    return info


def test_clearing_application_and_revocation(gateway: tuple[str, Engine]) -> None:
    base, db = gateway
    his, other = signed(db, base), signed(db, base, OTHER)
    info = _settle_today(his)
    # 住院诊查费 100.00 (甲类) and a 丙类 bed 75.70 (全自费), paid in cash: the platform's figures.
    assert (info["medfee_sumamt"], info["inscp_scp_amt"], info["clr_type"]) == ("175.70", "100.00", "11")
    today = dt.date.today().isoformat()
    fund, cash = info["fund_pay_sumamt"], info["psn_cash_pay"]
    assert parse_fen(fund) + parse_fen(cash) == 17570 and info["acct_pay"] == "0.00"
    period = {"clr_type": "11", "clr_way": "1", "begndate": today, "enddate": today, "setlym": today[:4] + today[5:7]}
    totals = {"medfee_sumamt": "175.70", "med_sumfee": "100.00", "fund_appy_sum": fund, "cash_payamt": cash,
              "acct_pay": "0"}  # fmt: skip

    # Mismatched totals are refused, naming each field with both amounts; nothing is written.
    wrong = {**period, **totals, "medfee_sumamt": "180.00", "acct_pay": 5}
    message = refused(his.call("3203", {"data": wrong}), "不符")
    assert "[input.data.medfee_sumamt] 申报 180.00 / 中心 175.70" in message
    assert "[input.data.acct_pay] 申报 5.00 / 中心 0.00" in message and "fund_appy_sum" not in message
    refused(his.call("3203", {"data": {**period, **totals, "psntime": 2}}), "[input.data.psntime] 申报 2 / 中心 1")
    assert _applications(db) == []

    # The application, retried under its msgid: the stored answer, one row.
    msgid = f"{INST}{dt.datetime.now():%Y%m%d%H%M%S}3203"
    applied = ok(his.call("3203", {"data": {**period, **totals, "psntime": "1"}}, msgid=msgid))
    evt = applied["result"]["clr_appy_evt_id"]
    assert evt.startswith("CLR") and len(evt) == 30
    assert ok(his.call("3203", {"data": {**period, **totals, "psntime": "1"}}, msgid=msgid)) == applied
    refused(his.call("3203", {"data": {**period, **totals, "clr_way": "2"}}, msgid=msgid), "已用于另一清算申请")
    [row] = _applications(db)
    assert (row.fixmedins_code, row.status, row.medfee_sumamt, row.med_sumfee, row.acct_pay, row.setl_cnt,
            row.psntime, row.setlym) == (INST, "applied", 17570, 10000, 0, 1, 1, today[:4] + today[5:7])  # fmt: skip
    # One standing application per institution, clearing type and (overlapping) period.
    refused(his.call("3203A", {"data": {**period, **totals, "medsumfee": "100.00"}}), "已有未撤销的清算申请", evt)

    # Another institution neither sees nor revokes it, and has nothing of its own to clear.
    for infno in ("3204", "3204A"):
        refused(other.call(infno, {"data": {"clr_appy_evt_id": evt}}), "不存在或不属于本机构")
    refused(other.call("3203", {"data": {**period, **totals}}), "无清算类别 11 的结算")
    assert [r.status for r in _applications(db)] == ["applied"]

    # Revoked by its institution (a retry answers the same), then a new application may be made.
    revoke_id = f"{INST}{dt.datetime.now():%Y%m%d%H%M%S}3204"
    assert ok(his.call("3204", {"data": {"clr_appy_evt_id": evt, "clr_optins": "210600"}}, msgid=revoke_id)) == {}
    assert ok(his.call("3204", {"data": {"clr_appy_evt_id": evt}}, msgid=revoke_id)) == {}
    refused(his.call("3204", {"data": {"clr_appy_evt_id": evt}}), "已撤销")
    again = ok(his.call("3203A", {"data": {**period, **totals, "medsumfee": "100.00", "clr_optins": "210600"}}))
    second = again["result"]["clr_appy_evt_id"]
    assert second != evt
    # Once the agency has taken it up, it can no longer be revoked.
    assert mark_processed(db, second, dt.datetime.now)
    refused(his.call("3204A", {"data": {"clr_apply_evt_id": second}}), "已受理", "不能撤销")
    assert sorted((r.clr_appy_evt_id, r.status) for r in _applications(db)) == sorted(
        [(evt, "revoked"), (second, "processed")]
    )


def test_clearing_fields_are_bounded(gateway: tuple[str, Engine]) -> None:
    base, db = gateway
    his = signed(db, base)
    good = {"clr_type": "11", "clr_way": "1", "begndate": "2026-01-01", "enddate": "2026-01-31",
            "medfee_sumamt": "1.00", "med_sumfee": "1.00", "fund_appy_sum": "1.00", "cash_payamt": "0",
            "acct_pay": "0"}  # fmt: skip
    cases = [
        ({"clr_type": None}, "clr_type", "缺少必填字段"), ({"clr_way": ""}, "clr_way", "缺少必填字段"),
        ({"clr_type": "门诊"}, "clr_type", "半角"), ({"begndate": "2026-13-01"}, "begndate", "日期"),
        ({"enddate": "2025-12-31"}, "enddate", "早于"), ({"enddate": "2027-01-02"}, "enddate", "366"),
        ({"medfee_sumamt": "1.234"}, "medfee_sumamt", "金额"), ({"acct_pay": None}, "acct_pay", "缺少必填字段"),
        ({"fund_appy_sum": "１.00"}, "fund_appy_sum", "金额"), ({"psntime": "-1"}, "psntime", "整数"),
        ({"setlym": "202613"}, "setlym", "yyyyMM"), ({"clr_optins": "21"}, "clr_optins", "6 位"),
        ({"medsumfee": "2.00"}, "med_sumfee", "medsumfee"), ({"cash_payamt": True}, "cash_payamt", "字符串"),
        ({"clr_type": "1" * 31}, "clr_type", "过长"),
    ]  # fmt: skip
    for change, field, words in cases:
        data = {k: v for k, v in {**good, **change}.items() if v is not None}
        refused(his.call("3203", {"data": data}), f"[input.data.{field}]", words)
    refused(his.call("3204", {"data": {}}), "[input.data.clr_appy_evt_id]", "缺少必填字段")
    refused(his.call("3204", {"data": {"clr_appy_evt_id": "x" * 41}}), "[input.data.clr_appy_evt_id]", "过长")
    assert transact(db, lambda c: c.execute(select(func.count()).select_from(S.clearing_applications)).scalar()) == 0
