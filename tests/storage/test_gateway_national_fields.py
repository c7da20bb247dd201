"""The national fields real HIS clients store from answers: the 2206/2207 setlinfo's person and clearing
fields, the 1101 person fields, and 5206's 累计类别代码 (not internal keys)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from storage import builders as b
from storage.test_gateway_e2e import INST, _client
from storage.test_gateway_e2e import server as server  # the fixture
from yibao.service.queries import cum_type_code
from yibao.service.uow import transact

CRED = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "card_sn": "SNP1"}
CRED9 = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP9", "card_sn": "SNP9"}


def test_settlement_answers_carry_the_national_person_and_clearing_fields(server: tuple[str, Engine]) -> None:
    base, db = server
    his = _client(db, base)
    his.sign_no = his.call("9001", {"signIn": {"opter": "001"}})["output"]["signinoutb"]["sign_no"]
    info = his.call("1101", {"data": CRED})["output"]
    person = info["baseinfo"]
    assert person["psn_name"] == "参保人P1" and person["psn_cert_type"] == "01" and person["gend"] == "1"
    assert {"naty", "brdy", "age", "exp_content"} <= set(person)
    insured = info["insuinfo"][0]
    assert insured["cvlserv_flag"] == "0" and insured["psn_type"] == "1201" and "emp_name" in insured

    today = dt.date.today().isoformat()
    reg = his.call("2201", {"data": {**CRED, "psn_no": "P1", "insutype": "310", "begntime": f"{today} 09:00:00"}})
    mdtrt_id = reg["output"]["data"]["mdtrt_id"]
    fee = {"feedetl_sn": "1", "mdtrt_id": mdtrt_id, "psn_no": "P1", "med_list_codg": "001102000050000", "cnt": 1,
           "pric": 1000.0, "det_item_fee_sumamt": 1000.0}  # fmt: skip
    assert his.call("2204", {"feedetail": [fee]})["infcode"] == 0
    settle_input = {"data": {"psn_no": "P1", "mdtrt_id": mdtrt_id, "medfee_sumamt": 1000.0, "acct_used_flag": "0"}}
    pre = his.call("2206", settle_input)["output"]["setlinfo"]
    msgid = f"{INST}{dt.datetime.now():%Y%m%d%H%M%S}0001"
    done = his.call("2207", settle_input, msgid=msgid)
    assert done["infcode"] == 0, done
    setl = done["output"]["setlinfo"]
    expected = {
        "psn_name": "参保人P1", "psn_cert_type": "01", "certno": person["certno"], "gend": "1", "naty": "",
        "brdy": "1958-05-01", "psn_type": "1201", "cvlserv_flag": "0", "mdtrt_cert_type": "03",
        "medins_setl_id": msgid, "clr_optins": "210600", "clr_way": "1", "clr_type": "11", "insutype": "310",
        "med_type": "11",
    }  # fmt: skip
    assert {k: setl[k] for k in expected} == expected
    assert isinstance(setl["age"], int) and setl["age"] >= 60 and setl["setl_time"] and setl["setl_id"]
    # The pre-settlement answers the same fields, without a settlement id.
    assert {k: pre[k] for k in expected if k != "medins_setl_id"} == {
        k: v for k, v in expected.items() if k != "medins_setl_id"
    }

    year = his.call("5206", {"data": {**CRED, "psn_no": "P1"}})
    rows = year["output"]["cuminfo"]
    assert year["infcode"] == 0 and rows, year
    codes = {row["cum_type_code"]: row for row in rows}
    assert codes["Q0000_LABoutpatient_pooling"]["cum"] == "300.00"  # Dandong's 300 yuan deductible, paid
    assert codes["C0000_LABoutpatient_pooling"]["cum"] == 1
    assert all(row["insutype"] == "310" and row["year"] == str(dt.date.today().year) for row in rows)


def test_cum_type_codes_follow_the_national_prefixes() -> None:
    assert cum_type_code("inpatient.visit_cnt") == "C0000_LABinpatient"
    assert cum_type_code("critical_illness.elig_amt") == "S0001_LABcritical_illness"
    assert cum_type_code("employee_cap.fund_amt") == "D0000_LABemployee_cap"
    assert cum_type_code("odd") == "X0000_LABodd"


def test_pins_are_not_needed_when_the_account_is_not_used(server: tuple[str, Engine]) -> None:
    """2207 needs no pin field: without account payment nothing asks for the card password."""
    base, db = server
    his = _client(db, base)
    his.sign_no = his.call("9001", {"signIn": {"opter": "001"}})["output"]["signinoutb"]["sign_no"]
    today = dt.date.today().isoformat()
    reg = his.call("2201", {"data": {**CRED, "insutype": "310", "begntime": f"{today} 10:00:00"}})
    mdtrt_id = reg["output"]["data"]["mdtrt_id"]
    fee = {"feedetl_sn": "1", "mdtrt_id": mdtrt_id, "med_list_codg": "001102000050000", "cnt": "1", "pric": "50",
           "det_item_fee_sumamt": "50"}  # fmt: skip
    assert his.call("2204", {"feedetail": [fee]})["infcode"] == 0
    done = his.call("2207", {"data": {"psn_no": "P1", "mdtrt_id": mdtrt_id, "medfee_sumamt": "50.00"}})
    assert done["infcode"] == 0 and done["output"]["setlinfo"]["psn_cash_pay"] == "50.00", done
    assert b.PIN  # the person has a PIN; it was not asked for


def test_the_openapi_document_describes_the_gateway(server: tuple[str, Engine]) -> None:
    """An HIS vendor reads the headers and both envelopes from /openapi.json."""
    import httpx

    base, _db = server
    doc = httpx.get(f"{base}/openapi.json", timeout=10).json()
    operation = doc["paths"]["/fsi/api/rsfComIfsService/callService"]["post"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert {"_api_signature", "_api_timestamp", "x-tif-signature", "x-tif-nonce", "x-tif-paasid"} <= headers
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"infno", "msgid", "fixmedins_code", "input"} <= set(request["required"])
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"]["inf_refmsgid"]["minLength"] == 30 and "401" in operation["responses"]


def test_nationality_and_employer_are_answered_where_recorded(server: tuple[str, Engine]) -> None:
    """民族 (naty) and 单位名称 (emp_name), where the registry holds them: 1101, 2207 and 5201 carry them."""
    base, db = server
    transact(db, lambda conn: b.person(conn, "P9", balance_fen=1000, naty="11", emp_name="丹东市第一机床厂"))
    his = _client(db, base)
    his.sign_no = his.call("9001", {"signIn": {"opter": "001"}})["output"]["signinoutb"]["sign_no"]
    info = his.call("1101", {"data": CRED9})["output"]
    assert info["baseinfo"]["naty"] == "11" and info["insuinfo"][0]["emp_name"] == "丹东市第一机床厂", info
    today = dt.date.today().isoformat()
    reg = his.call("2201", {"data": {**CRED9, "insutype": "310", "begntime": f"{today} 11:00:00"}})
    mdtrt_id = reg["output"]["data"]["mdtrt_id"]
    fee = {"feedetl_sn": "1", "mdtrt_id": mdtrt_id, "med_list_codg": "001102000050000", "cnt": "1", "pric": "20",
           "det_item_fee_sumamt": "20"}  # fmt: skip
    assert his.call("2204", {"feedetail": [fee]})["infcode"] == 0
    done = his.call("2207", {"data": {"psn_no": "P9", "mdtrt_id": mdtrt_id}})
    assert done["infcode"] == 0 and done["output"]["setlinfo"]["naty"] == "11", done
    visits = his.call("5201", {"data": {"psn_no": "P9", "begntime": f"{today} 00:00:00",
                                        "endtime": f"{today} 23:59:59"}})  # fmt: skip
    assert visits["infcode"] == 0, visits
    row = visits["output"]["mdtrtinfo"][0]
    assert (row["naty"], row["emp_name"]) == ("11", "丹东市第一机床厂"), row


def test_registration_checks_the_nationality_code(db: Engine) -> None:
    import pytest

    from yibao.errors import RequestError
    from yibao.service import registry

    transact(db, lambda conn: b.region(conn))
    with pytest.raises(RequestError) as refused:
        registry.register_person(db, psn_no="PX", name="某", certno=b.certno("210600", dt.date(1990, 1, 1), 7, "1"),
                                 admdvs="210600", clock=dt.datetime.now, naty="57")  # fmt: skip
    assert refused.value.field == "naty" and "GB/T 3304" in refused.value.reason
    done = registry.register_person(db, psn_no="PX", name="某", certno=b.certno("210600", dt.date(1990, 1, 1), 7, "1"),
                                    admdvs="210600", clock=dt.datetime.now, naty="98")  # fmt: skip
    assert done.naty == "98" and registry.nationalities()["98"] == "外国血统中国籍人士"
