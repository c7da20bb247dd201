"""Hand-computed settlement cases in ``tests/cases/*.yaml``, settled with the bundled presets.

A case file holds one case, or shared ``title``/``source`` plus a ``cases:`` list. Each case:

    title:        what it shows
    source:       preset file and the parameter/reference exercised (inherited from the file)
    computation:  the hand computation, step by step
    request:      the settlement request (docs: src/yibao/engine/request.py)
    expect:
      setlinfo:             {field: "decimal string"}  — only the listed fields are compared
      setldetail:           [{fund_pay_type, fund_payamt, crt_payb_lmt_amt?}] — matched by fund_pay_type;
                            funds not listed must pay 0.00
      lines:                [{feedetl_sn, fulamt_ownpay_amt?, overlmt_amt?, preselfpay_amt?, inscp_scp_amt?,
                              memo_contains?}]
      accumulators_delta:   {key: "amount" or count} — only the listed keys are compared
      error:                {type: SettlementRefused | RequestError, code: REASON_CODE}
    xfail:        reason — the engine is believed wrong here (strict xfail)

Amounts are strings: a float anywhere in a case file is an error.
"""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from yibao import Engine, PolicyStore, RequestError, SettlementRefused, load_demo_catalog, parse_request

CASES_DIR = Path(__file__).parent / "cases"
FUND_FIELDS = ("hifp_pay", "cvlserv_pay", "hifes_pay", "hifmi_pay", "hifob_pay", "maf_pay", "oth_pay")
AMOUNT_FIELDS = (
    *FUND_FIELDS, "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
    "fund_pay_sumamt", "psn_part_amt", "acct_pay", "acct_mulaid_pay", "psn_cash_pay", "hosp_part_amt", "balc",
)  # fmt: skip
CASE_KEYS = {"title", "source", "computation", "request", "expect", "xfail"}
EXPECT_KEYS = {"setlinfo", "setldetail", "lines", "accumulators_delta", "error"}


def _no_floats(node: Any, where: str) -> None:
    if isinstance(node, float):
        raise AssertionError(f"{where}: amounts must be strings, found float {node!r}")
    if isinstance(node, dict):
        for key, value in node.items():
            _no_floats(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _no_floats(value, f"{where}[{i}]")


def _load_cases() -> list[Any]:
    params = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text("utf-8"))
        _no_floats(doc, path.name)
        cases = doc.get("cases", [doc])
        for i, case in enumerate(cases):
            case = {"source": doc.get("source"), **case}
            unknown = set(case) - CASE_KEYS
            assert not unknown, f"{path.name}[{i}]: unknown keys {sorted(unknown)}"
            assert case.get("title") and case.get("source") and case.get("computation"), f"{path.name}[{i}]"
            assert not set(case["expect"]) - EXPECT_KEYS, f"{path.name}[{i}]: unknown expect keys"
            marks = [pytest.mark.xfail(strict=True, reason=case["xfail"])] if case.get("xfail") else []
            params.append(pytest.param(case, id=f"{path.stem}[{i}]", marks=marks))
    return params


@pytest.fixture(scope="module")
def engine() -> Engine:
    policies = Path(str(resources.files("yibao").joinpath("data/policies")))
    return Engine(PolicyStore.load_dir(policies), load_demo_catalog())


def _check_identities(info: dict[str, Any], details: list[dict[str, Any]]) -> None:
    amt = {k: Decimal(info[k]) for k in AMOUNT_FIELDS}
    parts = amt["fulamt_ownpay_amt"] + amt["overlmt_selfpay"] + amt["preselfpay_amt"] + amt["inscp_scp_amt"]
    assert amt["medfee_sumamt"] == parts
    assert amt["medfee_sumamt"] == amt["fund_pay_sumamt"] + amt["psn_part_amt"] + amt["hosp_part_amt"]
    assert amt["fund_pay_sumamt"] == sum(amt[f] for f in FUND_FIELDS)
    assert amt["fund_pay_sumamt"] == sum(Decimal(d["fund_payamt"]) for d in details)
    assert amt["psn_part_amt"] == amt["acct_pay"] + amt["psn_cash_pay"]
    assert Decimal(0) <= amt["acct_mulaid_pay"] <= amt["acct_pay"]


@pytest.mark.parametrize("case", _load_cases())
def test_case(case: dict[str, Any], engine: Engine) -> None:
    expect = case["expect"]
    request = parse_request(case["request"])
    if "error" in expect:
        want = expect["error"]
        kind = {"SettlementRefused": SettlementRefused, "RequestError": RequestError}[want["type"]]
        with pytest.raises(kind) as caught:
            engine.settle(request)
        exc = caught.value
        codes = [r.code for r in exc.reasons] if isinstance(exc, SettlementRefused) else [exc.code]
        assert want["code"] in codes, codes
        return

    out = engine.settle(request).to_json(trace=False)
    info, details = out["setlinfo"], out["setldetail"]
    _check_identities(info, details)
    for field, value in (expect.get("setlinfo") or {}).items():
        assert info[field] == value, f"setlinfo.{field}: engine {info[field]}, hand {value}"

    if "setldetail" in expect:
        by_type = {d["fund_pay_type"]: d for d in details}
        listed = set()
        for row in expect["setldetail"]:
            listed.add(row["fund_pay_type"])
            got = by_type.get(row["fund_pay_type"])
            assert got is not None, f"no setldetail row {row['fund_pay_type']}: {sorted(by_type)}"
            for key, value in row.items():
                assert got[key] == value, f"setldetail[{row['fund_pay_type']}].{key}: engine {got[key]}, hand {value}"
        for d in details:
            if d["fund_pay_type"] not in listed:
                assert d["fund_payamt"] == "0.00", f"unexpected payment {d['fund_pay_type']}: {d['fund_payamt']}"

    lines = {line["feedetl_sn"]: line for line in out["detlcutinfo"]}
    for row in expect.get("lines") or []:
        got = lines[str(row["feedetl_sn"])]
        for key, value in row.items():
            if key == "memo_contains":
                assert value in got["memo"], f"line {row['feedetl_sn']} memo {got['memo']!r}"
            elif key != "feedetl_sn":
                assert got[key] == value, f"line {row['feedetl_sn']}.{key}: engine {got[key]}, hand {value}"

    delta = out["accumulators"]["delta"]
    for key, value in (expect.get("accumulators_delta") or {}).items():
        assert delta.get(key) == value, f"accumulators.delta.{key}: engine {delta.get(key)}, hand {value}"
