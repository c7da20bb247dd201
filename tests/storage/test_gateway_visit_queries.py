"""5201 (visits), 5202 (diagnoses), 5205 (chronic-disease drug records) and 5302 (designated institutions) over
real HTTP: the national field names, who may see what, and every input refused by its field."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, select

from storage import builders as b
from storage.test_gateway_e2e import INST, OTHER, Client, start_server
from storage.test_smoke_settlement import ENGINE
from yibao.db import schema as S
from yibao.gateway import create_app
from yibao.gateway.app import INTERNAL_ERROR
from yibao.service import accounts
from yibao.service import visit_history as history
from yibao.service.apikeys import issue_api_key
from yibao.service.settlement import SettlementService
from yibao.service.uow import transact

CARD = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "card_sn": "SNP1"}
TODAY = dt.date.today().isoformat()
#: The national dictionary's name of category J06. (the diagnosis J06.900 is named by its category).
J06 = "多发性和未特指部位的急性上呼吸道感染"
DAY = {"begntime": f"{TODAY} 00:00:00", "endtime": f"{TODAY} 23:59:59"}
#: The 61 fields of a 5201 mdtrtinfo row, in the order of the national interface.
MDTRTINFO_FIELDS = (
    "mdtrt_id", "psn_no", "psn_cert_type", "certno", "psn_name", "gend", "naty", "brdy", "age", "coner_name", "tel",
    "insutype", "psn_type", "maf_psn_flag", "cvlserv_flag", "flxempe_flag", "nwb_flag", "insu_optins", "emp_name",
    "begntime", "endtime", "mdtrt_cert_type", "med_type", "ars_year_ipt_flag", "pre_pay_flag", "ipt_otp_no",
    "medrcdno", "atddr_no", "chfpdr_name", "adm_dept_codg", "adm_dept_name", "adm_bed", "dscg_maindiag_code",
    "dscg_maindiag_name", "dscg_dept_codg", "dscg_dept_name", "dscg_bed", "dscg_way", "main_cond_dscr", "dise_codg",
    "dise_name", "oprn_oprt_code", "oprn_oprt_name", "otp_diag_info", "inhosp_stas", "die_date", "ipt_days",
    "fpsc_no", "matn_type", "birctrl_type", "latechb_flag", "geso_val", "fetts", "fetus_cnt", "pret_flag",
    "birctrl_matn_date", "cop_flag", "opter_id", "opter_name", "opt_time", "memo",
)  # fmt: skip


class World:
    """Two signed-in hospitals; P1 (retired employee, filed for hypertension) has an outpatient visit at INST
    with a diagnosis and a settled chronic-disease visit (140104) at OTHER with a drug and a service line."""

    def __init__(self, db: Engine, his: Client, other: Client) -> None:
        self.db, self.his, self.other = db, his, other
        reg = his.call("2201", {"data": {**CARD, "psn_no": "P1", "insutype": "310", "med_type": "11",
                                         "begntime": f"{TODAY} 09:00:00", "ipt_otp_no": "MZ0001"}})  # fmt: skip
        assert reg["infcode"] == 0, reg
        self.outpatient = reg["output"]["data"]["mdtrt_id"]
        info = his.call("2203", {"mdtrtinfo": {"mdtrt_id": self.outpatient, "psn_no": "P1", "med_type": "11"},
                                 "diseinfo": [{"diag_type": "1", "diag_srt_no": 1, "diag_code": "J06.900",
                                               "diag_name": "急性上呼吸道感染"}]})  # fmt: skip
        assert info["infcode"] == 0, info
        reg = other.call("2201", {"data": {**CARD, "psn_no": "P1", "insutype": "310", "med_type": "140104",
                                           "begntime": f"{TODAY} 08:30:00", "ipt_otp_no": "MT0001"}})  # fmt: skip
        assert reg["infcode"] == 0, reg
        self.chronic = reg["output"]["data"]["mdtrt_id"]
        assert other.call("2203", {"mdtrtinfo": {"mdtrt_id": self.chronic, "psn_no": "P1", "med_type": "140104",
                                                 "dise_codg": "I10.x00"}})["infcode"] == 0  # fmt: skip
        fees = [
            {"feedetl_sn": "D1", "mdtrt_id": self.chronic, "psn_no": "P1", "med_list_codg": "XC01EBG072B002010100151",
             "cnt": "2", "pric": "313.90", "det_item_fee_sumamt": "627.80", "rx_drord_no": "RX01",
             "fee_ocur_time": f"{TODAY} 08:40:00", "medins_list_codg": "YP001",
             "medins_list_name": "葛根素注射液(院内)", "hosp_appr_flag": "1"},
            {"feedetl_sn": "S1", "mdtrt_id": self.chronic, "psn_no": "P1", "med_list_codg": "001102000050000",
             "cnt": "1", "pric": "10.00", "det_item_fee_sumamt": "10.00"},
        ]  # fmt: skip
        assert other.call("2204", {"feedetail": fees})["infcode"] == 0
        settled = other.call("2207", {"data": {"psn_no": "P1", "mdtrt_id": self.chronic, "insutype": "310",
                                               "acct_used_flag": "0"}})  # fmt: skip
        assert settled["infcode"] == 0, settled
        self.setl_id = settled["output"]["setlinfo"]["setl_id"]

    def setl_time(self) -> str:
        def read(conn: Connection) -> dt.datetime:
            query = select(S.settlements.c.setl_time).where(S.settlements.c.setl_id == self.setl_id)
            return conn.execute(query).one()[0]

        return transact(self.db, read).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def world(db: Engine) -> Iterator[World]:
    def setup(conn: Connection) -> None:
        b.institution(conn, INST)
        b.institution(conn, OTHER)
        b.person(conn, "P1", balance_fen=50000)
        b.person(conn, "P2", balance_fen=0, psn_type="1102")

    transact(db, setup)
    accounts.file_disease(db, psn_no="P1", dise_codg="I10.x00", begn_date=dt.date(2020, 1, 1), clock=dt.datetime.now)
    base, stop = start_server(create_app(db, SettlementService(db, ENGINE, clock=dt.datetime.now)))
    signed = []
    for code in (INST, OTHER):
        key, secret = issue_api_key(db, code, clock=dt.datetime.now)
        his = Client(base, key, secret, code)
        his.sign_no = his.call("9001", {"signIn": {"opter": "001"}})["output"]["signinoutb"]["sign_no"]
        signed.append(his)
    yield World(db, signed[0], signed[1])
    stop()


def _ok(answer: dict[str, Any]) -> Any:
    assert answer["infcode"] == 0, answer
    return answer["output"]


def _refused(answer: dict[str, Any], *fragments: str) -> None:
    assert answer["infcode"] == -1 and answer["output"] is None, answer
    assert answer["err_msg"] != INTERNAL_ERROR
    for fragment in fragments:
        assert fragment in answer["err_msg"], answer["err_msg"]


# -- 5201 ---------------------------------------------------------------------------------------------------
def test_5201_answers_the_institutions_own_visits_with_every_national_field(world: World) -> None:
    [row] = _ok(world.his.call("5201", {"data": {"psn_no": "P1", **DAY}}))["mdtrtinfo"]
    assert list(row) == list(MDTRTINFO_FIELDS)
    expected = dict.fromkeys(MDTRTINFO_FIELDS, "")
    expected.update({
        "mdtrt_id": world.outpatient, "psn_no": "P1", "psn_cert_type": "01", "certno": b.certno("210600",
        dt.date(1958, 5, 1), 1, "1"), "psn_name": "参保人P1", "gend": "1", "brdy": "1958-05-01",
        "age": dt.date.today().year - 1958 - ((dt.date.today().month, dt.date.today().day) < (5, 1)),
        "insutype": "310", "psn_type": "1201", "cvlserv_flag": "0", "flxempe_flag": "0", "insu_optins": "210600",
        "begntime": f"{TODAY} 09:00:00", "mdtrt_cert_type": "03", "med_type": "11", "ipt_otp_no": "MZ0001",
        "dise_codg": "J06.900", "dise_name": J06, "otp_diag_info": J06,
    })  # fmt: skip
    assert row == expected
    # The settled chronic visit is the other hospital's: its end is its settlement time.
    [chronic] = _ok(world.other.call("5201", {"data": {"psn_no": "P1", **DAY}}))["mdtrtinfo"]
    assert (chronic["mdtrt_id"], chronic["med_type"], chronic["dise_codg"], chronic["dise_name"]) == (
        world.chronic, "140104", "I10.x00", "特发性（原发性）高血压")  # fmt: skip
    assert (chronic["begntime"], chronic["endtime"]) == (f"{TODAY} 08:30:00", world.setl_time())


def test_5201_filters_and_leaves_out_cancelled_registrations(world: World) -> None:
    his = world.his
    by_type = his.call("5201", {"data": {"psn_no": "P1", **DAY, "med_type": "140104"}})
    assert _ok(by_type) == {"mdtrtinfo": []}
    by_id = his.call("5201", {"data": {"psn_no": "P1", **DAY, "mdtrt_id": world.outpatient, "med_type": "11"}})
    assert [r["mdtrt_id"] for r in _ok(by_id)["mdtrtinfo"]] == [world.outpatient]
    # A bare date covers its whole day; another day finds nothing.
    whole_day = his.call("5201", {"data": {"psn_no": "P1", "begntime": TODAY, "endtime": TODAY}})
    assert len(_ok(whole_day)["mdtrtinfo"]) == 1
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    assert _ok(his.call("5201", {"data": {"psn_no": "P1", "begntime": tomorrow, "endtime": tomorrow}})) == {
        "mdtrtinfo": []}  # fmt: skip
    assert _ok(his.call("2202", {"data": {"psn_no": "P1", "mdtrt_id": world.outpatient}})) is not None
    assert _ok(his.call("5201", {"data": {"psn_no": "P1", **DAY}})) == {"mdtrtinfo": []}


def test_5201_another_institution_sees_none_of_them(world: World) -> None:
    # OTHER sees only its own chronic visit of P1, never INST's outpatient visit; nobody's visits of P2.
    rows = _ok(world.other.call("5201", {"data": {"psn_no": "P1", **DAY}}))["mdtrtinfo"]
    assert [r["mdtrt_id"] for r in rows] == [world.chronic]
    mine = world.other.call("5201", {"data": {"psn_no": "P1", **DAY, "mdtrt_id": world.outpatient}})
    assert _ok(mine) == {"mdtrtinfo": []}
    assert _ok(world.his.call("5201", {"data": {"psn_no": "P2", **DAY}})) == {"mdtrtinfo": []}


def test_5201_civil_servant_flag_and_bound(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def visits(conn: Connection) -> None:
        conn.execute(insert(S.visits), [
            {"mdtrt_id": f"VB{i:03d}", "psn_no": "P2", "fixmedins_code": INST, "insutype": "310", "med_type": "11",
             "begntime": f"{TODAY} 10:{i:02d}:00", "cert_type": "03", "cert_no": "CP2", "card_sn": "SNP2",
             "ipt_otp_no": f"MZ{i}", "dise_codg": None, "status": "open", "created_at": dt.datetime.now()}
            for i in range(3)
        ])  # fmt: skip

    transact(world.db, visits)
    rows = _ok(world.his.call("5201", {"data": {"psn_no": "P2", **DAY}}))["mdtrtinfo"]
    assert [(r["mdtrt_id"], r["psn_type"], r["cvlserv_flag"], r["endtime"]) for r in rows] == [
        (f"VB{i:03d}", "1102", "1", "") for i in range(3)]  # fmt: skip
    monkeypatch.setattr(history, "MAX_VISITS", 2)
    _refused(world.his.call("5201", {"data": {"psn_no": "P2", **DAY}}), "[input.data.endtime]", "超过 2 条")
    narrower = {"begntime": f"{TODAY} 10:01:00", "endtime": f"{TODAY} 10:02:00"}
    assert len(_ok(world.his.call("5201", {"data": {"psn_no": "P2", **narrower}}))["mdtrtinfo"]) == 2


# -- 5202 ---------------------------------------------------------------------------------------------------
def test_5202_the_visits_diagnosis(world: World) -> None:
    answer = world.his.call("5202", {"data": {"psn_no": "P1", "mdtrt_id": world.outpatient}})
    assert _ok(answer) == {"diseinfo": [{
        "diag_info_id": f"{world.outpatient}-1", "mdtrt_id": world.outpatient, "psn_no": "P1",
        "inout_diag_type": "", "diag_type": "1", "maindiag_flag": "1", "diag_srt_no": 1, "diag_code": "J06.900",
        "diag_name": J06, "adm_cond": "", "diag_dept": "", "dise_dor_no": "", "dise_dor_name": "",
        "diag_time": "", "opter_id": "", "opter_name": "", "opt_time": "",
    }]}  # fmt: skip


def test_5202_admission_diagnosis_and_a_visit_without_one(world: World) -> None:
    def visits(conn: Connection) -> None:
        base = {"psn_no": "P1", "fixmedins_code": INST, "insutype": "310", "begntime": f"{TODAY} 07:00:00",
                "cert_type": "03", "cert_no": "CP1", "card_sn": "SNP1", "created_at": dt.datetime.now()}  # fmt: skip
        conn.execute(insert(S.visits), [
            {**base, "mdtrt_id": "ZY-1", "med_type": "21", "ipt_otp_no": "ZY1", "dise_codg": "I10.x00",
             "status": "open"},
            {**base, "mdtrt_id": "MZ-2", "med_type": "11", "ipt_otp_no": "MZ2", "dise_codg": None, "status": "open"},
        ])  # fmt: skip

    transact(world.db, visits)
    [row] = _ok(world.his.call("5202", {"data": {"psn_no": "P1", "mdtrt_id": "ZY-1"}}))["diseinfo"]
    assert (row["inout_diag_type"], row["diag_type"], row["diag_code"], row["diag_name"]) == (
        "1", "1", "I10.x00", "特发性（原发性）高血压")  # fmt: skip
    assert _ok(world.his.call("5202", {"data": {"psn_no": "P1", "mdtrt_id": "MZ-2"}})) == {"diseinfo": []}
    # An admission is in hospital until discharged (inhosp_stas 1); its end is not recorded.
    [admission] = _ok(world.his.call("5201", {"data": {"psn_no": "P1", **DAY, "med_type": "21"}}))["mdtrtinfo"]
    assert (admission["inhosp_stas"], admission["endtime"], admission["otp_diag_info"]) == ("1", "", "")


def test_5202_only_the_institutions_own_visit(world: World) -> None:
    _refused(world.other.call("5202", {"data": {"psn_no": "P1", "mdtrt_id": world.outpatient}}),
             f"就诊 {world.outpatient} 不存在或不属于本机构")  # fmt: skip
    _refused(world.his.call("5202", {"data": {"psn_no": "P1", "mdtrt_id": "V-nobody"}}), "不存在或不属于本机构")
    _refused(world.his.call("5202", {"data": {"psn_no": "P2", "mdtrt_id": world.outpatient}}), "psn_no 与就诊登记不符")


# -- 5205 ---------------------------------------------------------------------------------------------------
DRUG_ROW = {
    "feedetl_sn": "D1", "rx_drord_no": "RX01", "fixmedins_code": OTHER, "fixmedins_name": f"机构{OTHER}",
    "psn_no": "P1", "med_type": "140104", "fee_ocur_time": f"{TODAY} 08:40:00", "cnt": "2", "pric": "313.90",
    "chrgitm_lv": "02", "hilist_code": "XC01EBG072B002010100151", "hilist_name": "葛根素注射液", "list_type": "101",
    "med_list_codg": "XC01EBG072B002010100151", "medins_list_codg": "YP001", "medins_list_name": "葛根素注射液(院内)",
    "med_chrgitm_type": "09", "prodname": "", "spec": "", "dosform_name": "", "lmt_used_flag": "1",
    "hosp_prep_flag": "", "hosp_appr_flag": "1", "tcmdrug_used_way": "", "prodplac_type": "", "bas_medn_flag": "",
    "hi_nego_drug_flag": "", "chld_medc_flag": "", "etip_flag": "", "etip_hosp_code": "", "dscg_tkdrug_flag": "",
    "list_sp_item_flag": "", "matn_fee_flag": "",
}  # fmt: skip


def test_5205_drug_lines_of_chronic_settlements_anywhere(world: World) -> None:
    # INST asks with the card: the drug line of the chronic visit at OTHER, not its service line.
    begin = {"begntime": f"{TODAY} 00:00:00"}
    assert _ok(world.his.call("5205", {"data": {"psn_no": "P1", **CARD, **begin}})) == {"feedetail": [DRUG_ROW]}
    # INST has an open visit of P1, so the person's psn_no is enough; for P2, of whom it has none, it must see
    # the card.
    assert _ok(world.his.call("5205", {"data": {"psn_no": "P1", **begin}})) == {"feedetail": [DRUG_ROW]}
    _refused(world.his.call("5205", {"data": {"psn_no": "P2", **begin}}), "无权查询人员 P2 的慢特病用药记录")
    # Outside the period: nothing.
    before = {"begntime": f"{TODAY} 00:00:00", "endtime": f"{TODAY} 00:00:01"}
    assert _ok(world.his.call("5205", {"data": {"psn_no": "P1", **CARD, **before}})) == {"feedetail": []}
    # A reversed settlement's lines are no record.
    reverse = {"psn_no": "P1", "mdtrt_id": world.chronic, "setl_id": world.setl_id}
    reversed_ = world.other.call("2208", {"data": reverse})
    assert reversed_["infcode"] == 0, reversed_
    assert _ok(world.his.call("5205", {"data": {"psn_no": "P1", **CARD, **begin}})) == {"feedetail": []}


def test_5205_refuses_a_stranger_whether_or_not_the_person_exists(world: World) -> None:
    _ok(world.his.call("2202", {"data": {"psn_no": "P1", "mdtrt_id": world.outpatient}}))
    for psn_no in ("P1", "NOBODY"):
        _refused(world.his.call("5205", {"data": {"psn_no": psn_no, "begntime": TODAY}}), "无权查询")
    _refused(world.his.call("5205", {"data": {"psn_no": "P2", **CARD, "begntime": TODAY}}), "凭证无效或与 psn_no 不符")


def test_5205_bound(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "MAX_DRUG_LINES", 0)
    _refused(world.his.call("5205", {"data": {"psn_no": "P1", **CARD, "begntime": TODAY}}), "[input.data.endtime]",
             "超过 0 条")  # fmt: skip


# -- 5302 ---------------------------------------------------------------------------------------------------
def test_5302_designated_institutions(world: World) -> None:
    assert _ok(world.other.call("5302", {"data": {"psn_no": "P1", **CARD, "biz_appy_type": "03"}})) == {
        "psnfixmedin": []}  # fmt: skip
    assert _ok(world.his.call("5302", {"data": {"psn_no": "P1", "biz_appy_type": "05"}})) == {"psnfixmedin": []}
    # Of a person with no visit at the caller, without the card: refused, whether or not the person exists.
    _refused(world.other.call("5302", {"data": {"psn_no": "P2", "biz_appy_type": "03"}}), "无权查询人员 P2 的定点信息")
    _refused(world.other.call("5302", {"data": {"psn_no": "NOBODY", "biz_appy_type": "03"}}), "无权查询")
    _ok(world.his.call("2202", {"data": {"psn_no": "P1", "mdtrt_id": world.outpatient}}))
    _refused(world.his.call("5302", {"data": {"psn_no": "P1", "biz_appy_type": "03"}}), "无权查询人员 P1 的定点信息")


# -- inputs -------------------------------------------------------------------------------------------------
BAD_INPUTS = [
    ("5201", {"begntime": TODAY, "endtime": TODAY}, "[input.data.psn_no] 缺少必填字段"),
    ("5201", {"psn_no": ["P1"], "begntime": TODAY, "endtime": TODAY}, "[input.data.psn_no] 须为字符串"),
    ("5201", {"psn_no": "P1", "endtime": TODAY}, "[input.data.begntime] 缺少必填字段"),
    ("5201", {"psn_no": "P1", "begntime": TODAY}, "[input.data.endtime] 缺少必填字段"),
    ("5201", {"psn_no": "P1", "begntime": "2026-13-01", "endtime": TODAY}, "[input.data.begntime] 不是合法日期时间"),
    ("5201", {"psn_no": "P1", "begntime": "２０２６-01-01", "endtime": TODAY}, "[input.data.begntime] 不是合法"),
    ("5201", {"psn_no": "P1", "begntime": TODAY, "endtime": "tomorrow"}, "[input.data.endtime] 不是合法日期时间"),
    ("5201", {"psn_no": "P1", "begntime": "2026-03-02", "endtime": "2026-03-01"}, "[input.data.endtime] 结束时间早于"),
    ("5201", {"psn_no": "P1", "begntime": "2024-01-01", "endtime": "2025-01-02"}, "[input.data.endtime] 查询时间跨度"),
    ("5201", {"psn_no": "P1", **DAY, "med_type": "1" * 7}, "[input.data.med_type] 过长"),
    ("5201", {"psn_no": "P1", **DAY, "mdtrt_id": {"a": 1}}, "[input.data.mdtrt_id] 须为字符串"),
    ("5202", {"psn_no": "P1"}, "[input.data.mdtrt_id] 缺少必填字段"),
    ("5202", {"mdtrt_id": "V1"}, "[input.data.psn_no] 缺少必填字段"),
    ("5202", {"mdtrt_id": "V" * 41, "psn_no": "P1"}, "[input.data.mdtrt_id] 过长"),
    ("5205", {"begntime": TODAY}, "[input.data.psn_no] 缺少必填字段"),
    ("5205", {"psn_no": "P1"}, "[input.data.begntime] 缺少必填字段"),
    ("5205", {"psn_no": "P1", "begntime": "2020-01-01"}, "[input.data.endtime] 查询时间跨度至多 366 天"),
    ("5205", {"psn_no": "P1", "mdtrt_cert_type": "09", "mdtrt_cert_no": "X", "begntime": TODAY},
     "[input.data.mdtrt_cert_type]"),
    ("5205", {"psn_no": "P1", "mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "begntime": TODAY},
     "[input.data.card_sn]"),
    ("5302", {"psn_no": "P1", **CARD}, "[input.data.biz_appy_type] 缺少必填字段"),
    ("5302", {"psn_no": "P1", **CARD, "biz_appy_type": "21"}, "[input.data.biz_appy_type] 不是有效的业务申请类型"),
    ("5302", {"biz_appy_type": "03"}, "[input.data.psn_no] 缺少必填字段"),
]  # fmt: skip


def test_malformed_inputs_are_refused_by_field(world: World) -> None:
    for infno, data, message in BAD_INPUTS:
        _refused(world.his.call(infno, {"data": data}), message)
    # The fields may also come directly under input, as for every query.
    assert len(_ok(world.his.call("5201", {"psn_no": "P1", **DAY}))["mdtrtinfo"]) == 1
    # Odd shapes never make an internal error.
    for infno in ("5201", "5202", "5205", "5302"):
        for data in ({"data": []}, {"data": "x"}, {"data": {"psn_no": 12, "begntime": 20260101}}, {}):
            answer = world.his.call(infno, data)
            assert answer["err_msg"] != INTERNAL_ERROR, answer
