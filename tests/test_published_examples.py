"""The two published worked examples of domain.md §10, reproduced exactly through the CLI.

Each example gets its own policy directory, written here the way a user would write
it in the policy language: a minimal national root (region 000000) declaring the
code tables and the one scheme/benefit needed, and the region file inheriting from
it and overriding only the published figures.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from yibao.cli import app

FUND_FIELDS = ("hifp_pay", "cvlserv_pay", "hifes_pay", "hifmi_pay", "hifob_pay", "maf_pay", "oth_pay")
AMOUNT_FIELDS = (
    *FUND_FIELDS, "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
    "fund_pay_sumamt", "psn_part_amt", "acct_pay", "acct_mulaid_pay", "psn_cash_pay", "hosp_part_amt", "balc",
)  # fmt: skip

# --- Dandong (丹东): employee outpatient pooling -------------------------------------

DANDONG_NATIONAL = """\
region: "000000"
name: 全国模板 (最小)
valid_from: 2021-01-01
references:
  nhsa-codes:
    title: 医疗保障信息平台 定点医药机构接口规范 代码表
    status: published
  template:
    title: 测试用全国模板取值
    status: assumption
policy:
  person_categories:
    value:
      "1101": in_service
      "1201": retired
    reference: nhsa-codes
  level_groups:
    value:
      "01": level_3
      "05": level_2
      "08": level_1
    reference: nhsa-codes
  schemes:
    "310":
      title: 职工基本医疗保险
      benefits:
        outpatient_pooling:
          title: 普通门诊统筹
          med_types: ["11"]
          fund:
            title: 职工门诊统筹基金
            fund_pay_type: "310100"
            deductible:
              value: {period: year, amount_yuan: 500}
              reference: template
            ratio: {value: "0.50", reference: template}
            caps:
              - name: outpatient_pool
                title: 门诊统筹年度支付限额
                amount_yuan: {value: 3000, reference: template}
"""

DANDONG_REGION = """\
region: "210600"
name: 丹东市
parent: "000000"
valid_from: 2021-01-01
references:
  dandong-example:
    title: 丹东市职工医保门诊统筹报销算例 (退休人员一级医院, 年度起付标准300元, 报销65%)
    status: published
policy:
  schemes:
    "310":
      benefits:
        outpatient_pooling:
          fund:
            deductible:
              value: {period: year, amount_yuan: 300}
              reference: dandong-example
            ratio:
              value:
                - {person: retired, level: level_1, value: "0.65"}
                - "0.50"
              reference: dandong-example
"""

# --- Guangzhou (广州, older rules): employee inpatient ----------------------------------

GUANGZHOU_NATIONAL = """\
region: "000000"
name: 全国模板 (最小)
valid_from: 2015-01-01
references:
  nhsa-codes:
    title: 医疗保障信息平台 定点医药机构接口规范 代码表
    status: published
  template:
    title: 测试用全国模板取值
    status: assumption
policy:
  person_categories:
    value:
      "1101": in_service
      "1201": retired
    reference: nhsa-codes
  level_groups:
    value:
      "01": level_3
      "05": level_2
      "08": level_1
    reference: nhsa-codes
  schemes:
    "310":
      title: 职工基本医疗保险
      benefits:
        inpatient:
          title: 住院
          med_types: ["21"]
          clr_type: "21"
          fund:
            title: 职工基本医疗保险统筹基金
            fund_pay_type: "310100"
            deductible:
              value:
                period: visit
                amount_yuan:
                  - {level: level_3, value: 1000}
                  - 500
              reference: template
            ratio: {value: "0.85", reference: template}
"""

GUANGZHOU_REGION = """\
region: "440100"
name: 广州市
parent: "000000"
valid_from: 2015-01-01
references:
  gz-inpatient-example:
    title: 广州市职工医保住院报销算例 (退休人员三级医院, 起付线1400元, 个人自付14%)
    status: published
policy:
  schemes:
    "310":
      benefits:
        inpatient:
          fund:
            deductible:
              value:
                period: visit
                amount_yuan:
                  - {level: level_3, value: 1400}
                  - 500
              reference: gz-inpatient-example
            ratio:
              value:
                - {person: retired, level: level_3, value: "0.86"}
                - "0.85"
              reference: gz-inpatient-example
"""


def _policy_dir(root: Path, national: str, region_file: str, region_text: str) -> Path:
    directory = root / "policies"
    directory.mkdir()
    (directory / "000000-national.yaml").write_text(national, "utf-8")
    (directory / region_file).write_text(region_text, "utf-8")
    result = CliRunner().invoke(app, ["policy", "check", str(directory)])
    assert result.exit_code == 0, result.stderr or result.stdout
    return directory


def _settle(tmp_path: Path, policy_dir: Path, request: dict[str, Any], name: str) -> dict[str, Any]:
    path = tmp_path / name
    path.write_text(json.dumps(request, ensure_ascii=False), "utf-8")
    result = CliRunner().invoke(app, ["settle", str(path), "--policy-dir", str(policy_dir), "--no-trace"])
    assert result.exit_code == 0, result.stderr or result.stdout
    out: dict[str, Any] = json.loads(result.stdout)
    _assert_identities(out)
    return out


def _assert_identities(out: dict[str, Any]) -> None:
    """domain.md §9: the identities every result must satisfy."""
    info = {k: Decimal(out["setlinfo"][k]) for k in AMOUNT_FIELDS}
    parts = info["fulamt_ownpay_amt"] + info["overlmt_selfpay"] + info["preselfpay_amt"] + info["inscp_scp_amt"]
    assert info["medfee_sumamt"] == parts
    assert info["medfee_sumamt"] == info["fund_pay_sumamt"] + info["psn_part_amt"] + info["hosp_part_amt"]
    assert info["fund_pay_sumamt"] == sum(info[f] for f in FUND_FIELDS)
    assert info["fund_pay_sumamt"] == sum(Decimal(row["fund_payamt"]) for row in out["setldetail"])
    assert info["psn_part_amt"] == info["acct_pay"] + info["psn_cash_pay"]
    assert Decimal(0) <= info["acct_mulaid_pay"] <= info["acct_pay"]


def _line(sn: str, lv: str, cnt: str, pric: str, amount: str, name: str) -> dict[str, str]:
    """A fee line without a catalogue code, classed by chrgitm_lv (01 甲类, 03 丙类)."""
    return {"feedetl_sn": sn, "hilist_name": name, "chrgitm_lv": lv, "cnt": cnt, "pric": pric,
            "det_item_fee_sumamt": amount}  # fmt: skip


def _dandong_request(lines: list[dict[str, str]], accumulators: dict[str, Any], current: str, historical: str,
                     begntime: str) -> dict[str, Any]:  # fmt: skip
    return {
        "psn_no": "21060000000000000001",
        "gend": "1",
        "age": 66,
        "insutype": "310",
        "psn_type": "1201",
        "med_type": "11",
        "hosp_lv": "08",
        "insuplc_admdvs": "210600",
        "mdtrtarea_admvs": "210600",
        "begntime": begntime,
        "acct_used_flag": "1",
        "feedetail": lines,
        "accumulators": {"year": 2024, "values": accumulators},
        "accounts": {"current_year": current, "historical": historical},
    }


def test_dandong_outpatient_pooling(tmp_path: Path) -> None:
    """Retiree, level-1 hospital, bill 1,050 of which 50 丙类, threshold 300 unpaid, 65%.

    inscope 1000 - threshold 300 = 700; 700 × 65% = 455.00 fund; 1050 - 455 = 595.00 person,
    all from the personal account (balance 800 + 1200 suffices) → balance 2000 - 595 = 1405.
    """
    policies = _policy_dir(tmp_path, DANDONG_NATIONAL, "210600-dandong.yaml", DANDONG_REGION)
    first = _settle(
        tmp_path,
        policies,
        _dandong_request(
            [
                _line("1", "01", "1", "1000.00", "1000.00", "诊疗及药品 (甲类)"),
                _line("2", "03", "2", "25.00", "50.00", "自费药品 (丙类)"),
            ],
            {},
            "800.00",
            "1200.00",
            "2024-03-05 09:30:00",
        ),
        "first.json",
    )
    info = first["setlinfo"]
    assert info["medfee_sumamt"] == "1050.00"
    assert info["fulamt_ownpay_amt"] == "50.00"
    assert info["overlmt_selfpay"] == "0.00"
    assert info["preselfpay_amt"] == "0.00"
    assert info["inscp_scp_amt"] == "1000.00"
    assert info["act_pay_dedc"] == "300.00"
    assert info["pool_prop_selfpay"] == "0.6500"
    assert info["hifp_pay"] == "455.00"
    assert info["fund_pay_sumamt"] == "455.00"
    assert info["psn_part_amt"] == "595.00"
    assert info["acct_pay"] == "595.00"
    assert info["acct_mulaid_pay"] == "0.00"
    assert info["psn_cash_pay"] == "0.00"
    assert info["hosp_part_amt"] == "0.00"
    assert info["balc"] == "1405.00"
    for field in ("cvlserv_pay", "hifes_pay", "hifmi_pay", "hifob_pay", "maf_pay", "oth_pay"):
        assert info[field] == "0.00", field
    assert [(d["fund_pay_type"], d["fund_payamt"], d["crt_payb_lmt_amt"]) for d in first["setldetail"]] == [
        ("310100", "455.00", "3000.00")
    ]
    after = first["accumulators"]["after"]
    assert after["outpatient_pooling.dedc_amt"] == "300.00"
    assert after["outpatient_pool.fund_amt"] == "455.00"

    # Second visit the same year: feed the first result's accumulators "after" back in.
    # The threshold is already paid: 200 × 65% = 130.00 fund, 70.00 person from the account
    # (current-year balance 800 - 595 = 205 left) → balance 1405 - 70 = 1335.
    second = _settle(
        tmp_path,
        policies,
        _dandong_request(
            [_line("1", "01", "4", "50.00", "200.00", "诊疗及药品 (甲类)")],
            after,
            "205.00",
            "1200.00",
            "2024-09-18 10:00:00",
        ),
        "second.json",
    )
    info = second["setlinfo"]
    assert info["medfee_sumamt"] == "200.00"
    assert info["inscp_scp_amt"] == "200.00"
    assert info["act_pay_dedc"] == "0.00"
    assert info["hifp_pay"] == "130.00"
    assert info["fund_pay_sumamt"] == "130.00"
    assert info["psn_part_amt"] == "70.00"
    assert info["acct_pay"] == "70.00"
    assert info["psn_cash_pay"] == "0.00"
    assert info["balc"] == "1335.00"
    assert second["setldetail"][0]["crt_payb_lmt_amt"] == "2545.00"
    assert "outpatient_pooling.dedc_amt" not in second["accumulators"]["delta"]
    assert second["accumulators"]["after"]["outpatient_pooling.dedc_amt"] == "300.00"
    assert second["accumulators"]["after"]["outpatient_pool.fund_amt"] == "585.00"
    assert second["accumulators"]["after"]["outpatient_pooling.visit_cnt"] == 2


def test_dandong_without_account_pays_cash(tmp_path: Path) -> None:
    """The same first visit with acct_used_flag=0: the 595.00 is paid in cash, balance untouched."""
    policies = _policy_dir(tmp_path, DANDONG_NATIONAL, "210600-dandong.yaml", DANDONG_REGION)
    request = _dandong_request(
        [
            _line("1", "01", "1", "1000.00", "1000.00", "诊疗及药品 (甲类)"),
            _line("2", "03", "2", "25.00", "50.00", "自费药品 (丙类)"),
        ],
        {},
        "800.00",
        "1200.00",
        "2024-03-05 09:30:00",
    )
    request["acct_used_flag"] = "0"
    info = _settle(tmp_path, policies, request, "cash.json")["setlinfo"]
    assert (info["hifp_pay"], info["psn_part_amt"], info["acct_pay"], info["psn_cash_pay"]) == (
        "455.00", "595.00", "0.00", "595.00",
    )  # fmt: skip
    assert info["balc"] == "2000.00"


@pytest.mark.parametrize("acct_used_flag", ["0", "1"])
def test_guangzhou_inpatient_older_rules(tmp_path: Path, acct_used_flag: str) -> None:
    """Retiree, level-3 hospital, bill 17,000 of which 2,000 self-pay, deductible 1,400, co-pay 14%.

    inscope 15000 - 1400 = 13600; 13600 × 86% = 11696.00 fund; 17000 - 11696 = 5304.00 person
    (= 2000 self-pay + 1400 deductible + 13600 × 14% = 1904).
    """
    policies = _policy_dir(tmp_path, GUANGZHOU_NATIONAL, "440100-guangzhou.yaml", GUANGZHOU_REGION)
    request = {
        "psn_no": "44010000000000000001",
        "gend": "2",
        "age": 68,
        "insutype": "310",
        "psn_type": "1201",
        "med_type": "21",
        "hosp_lv": "01",
        "insuplc_admdvs": "440100",
        "mdtrtarea_admvs": "440100",
        "begntime": "2019-05-06 08:00:00",
        "acct_used_flag": acct_used_flag,
        "feedetail": [
            _line("1", "01", "1", "15000.00", "15000.00", "住院费用 (政策范围内)"),
            _line("2", "03", "1", "2000.00", "2000.00", "自费项目 (丙类)"),
        ],
        "accumulators": {"year": 2019, "values": {}},
        "accounts": {"current_year": "6000.00", "historical": "0.00"},
    }
    out = _settle(tmp_path, policies, request, "gz.json")
    info = out["setlinfo"]
    assert info["clr_type"] == "21"
    assert info["medfee_sumamt"] == "17000.00"
    assert info["fulamt_ownpay_amt"] == "2000.00"
    assert info["overlmt_selfpay"] == "0.00"
    assert info["preselfpay_amt"] == "0.00"
    assert info["inscp_scp_amt"] == "15000.00"
    assert info["act_pay_dedc"] == "1400.00"
    assert info["pool_prop_selfpay"] == "0.8600"
    assert info["hifp_pay"] == "11696.00"
    assert info["fund_pay_sumamt"] == "11696.00"
    assert info["psn_part_amt"] == "5304.00"
    assert info["hosp_part_amt"] == "0.00"
    if acct_used_flag == "1":
        # The account (6000) covers the whole personal share: 6000 - 5304 = 696 left.
        assert (info["acct_pay"], info["psn_cash_pay"], info["balc"]) == ("5304.00", "0.00", "696.00")
    else:
        assert (info["acct_pay"], info["psn_cash_pay"], info["balc"]) == ("0.00", "5304.00", "6000.00")
    assert [(d["fund_pay_type"], d["fund_payamt"]) for d in out["setldetail"]] == [("310100", "11696.00")]
    assert out["accumulators"]["delta"]["inpatient.dedc_amt"] == "1400.00"
