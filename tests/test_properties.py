"""Property tests of the settlement engine on random policies, catalogues and bills.

The scenarios come from ``tests/strategies.py``: a national root and a child region
with random deductibles, ratio tables, bands, adjustments, caps and later layers; a
random catalogue; a random bill; random year-to-date accumulators and accounts.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import strategies as S
from yibao import (
    Catalog,
    CatalogItem,
    PolicyStore,
    SettlementRefused,
    SettlementResult,
    check_identities,
    parse_request,
    settle,
)
from yibao.engine.result import FUND_FIELDS
from yibao.money import format_fen, parse_fen
from yibao.policy.model import Facts

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "src" / "yibao" / "data" / "policies"
EXAMPLE = ROOT / "examples" / "dandong-outpatient.json"
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
AMOUNT_FIELDS = (
    "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt", "act_pay_dedc",
    *FUND_FIELDS, "fund_pay_sumamt", "psn_part_amt", "acct_pay", "acct_mulaid_pay", "psn_cash_pay", "hosp_part_amt",
    "balc",
)  # fmt: skip


# -- helpers -------------------------------------------------------------------------


def run(scn: S.Scenario, request: Mapping[str, Any] | None = None, spec: S.PolicySpec | None = None) -> Any:
    """Settle; returns the result, or the refusal when an eligibility gate refuses."""
    store = S.store_for(spec or scn.spec)
    req = parse_request(dict(request if request is not None else scn.request))
    try:
        return settle(store, scn.catalog, req)
    except SettlementRefused as exc:
        return exc


def offsite_kind(request: Mapping[str, Any]) -> str:
    if request["mdtrtarea_admvs"] == request["insuplc_admdvs"]:
        return "local"
    return (request.get("filings") or {}).get("offsite") or "unfiled"


def expect_refusal(scn: S.Scenario, request: Mapping[str, Any] | None = None) -> bool:
    request = request or scn.request
    return offsite_kind(request) == "unfiled" and scn.spec.gates["offsite_unfiled"] == "refuse"


def settled(scn: S.Scenario, request: Mapping[str, Any] | None = None, spec: S.PolicySpec | None = None) -> Any:
    out = run(scn, request, spec)
    if isinstance(out, SettlementRefused):
        assert expect_refusal(scn, request), out
        assert [r.code for r in out.reasons] == ["OFFSITE_UNFILED"]
        return None
    assert not expect_refusal(scn, request), "an unfiled off-site visit was settled although the policy refuses"
    assert isinstance(out, SettlementResult)
    return out


def fen(value: Any) -> int:
    return parse_fen(value)


def before_values(request: Mapping[str, Any]) -> dict[str, int]:
    values = (request.get("accumulators") or {}).get("values") or {}
    return {k: int(v) if k.endswith("_cnt") else fen(v) for k, v in values.items()}


def facts_of(request: Mapping[str, Any]) -> Facts:
    return Facts(
        person=S.PERSONS[request["psn_type"]], psn_type=request["psn_type"], level=S.LEVELS[request["hosp_lv"]],
        hosp_lv=request["hosp_lv"], age=request["age"], identities=frozenset(request["psn_idet_types"]),
        offsite=offsite_kind(request), med_type=request["med_type"],
    )  # fmt: skip


def balances(request: Mapping[str, Any]) -> int:
    accounts = request["accounts"]
    return fen(accounts["current_year"]) + fen(accounts["historical"])


def account_used(scn: S.Scenario) -> bool:
    return scn.request.get("acct_used_flag") == "1" and scn.spec.account["enabled"]


# -- (a) identities and bounds ----------------------------------------------------------


@PROPERTY
@given(S.scenarios())
def test_identities_and_bounds(scn: S.Scenario) -> None:
    r = settled(scn)
    if r is None:
        return
    check_identities(r)
    info = r.setlinfo()
    a = {k: fen(info[k]) for k in AMOUNT_FIELDS}
    # domain.md §9, explicitly, on the rendered decimal strings.
    assert (
        a["medfee_sumamt"] == a["fulamt_ownpay_amt"] + a["overlmt_selfpay"] + a["preselfpay_amt"] + a["inscp_scp_amt"]
    )
    assert a["medfee_sumamt"] == a["fund_pay_sumamt"] + a["psn_part_amt"] + a["hosp_part_amt"]
    assert a["fund_pay_sumamt"] == sum(a[f] for f in FUND_FIELDS)
    out = r.to_json()
    assert a["fund_pay_sumamt"] == sum(fen(d["fund_payamt"]) for d in out["setldetail"])
    assert a["psn_part_amt"] == a["acct_pay"] + a["psn_cash_pay"]
    assert all(v >= 0 for v in a.values()), a
    assert a["medfee_sumamt"] == sum(fen(line["det_item_fee_sumamt"]) for line in scn.request["feedetail"])

    # Each line splits into parts that add back to it; a fully self-paid line has no other part.
    assert len(out["detlcutinfo"]) == len(scn.request["feedetail"])
    for line, raw in zip(out["detlcutinfo"], scn.request["feedetail"], strict=True):
        parts = [fen(line[k]) for k in ("fulamt_ownpay_amt", "overlmt_amt", "preselfpay_amt", "inscp_scp_amt")]
        assert all(p >= 0 for p in parts)
        assert sum(parts) == fen(line["det_item_fee_sumamt"]) == fen(raw["det_item_fee_sumamt"])
        assert parts[0] in (0, sum(parts))
        if line["chrgitm_lv"] == "03":
            assert parts[0] == sum(parts)
        if line["chrgitm_lv"] != "02":
            assert parts[2] == 0, "only 乙类 has a self-pay-first part (domain.md §2)"

    # Funds: never above their base, never above their remaining cap, never above the in-scope total.
    assert a["act_pay_dedc"] <= a["inscp_scp_amt"]
    assert a["hifp_pay"] <= a["inscp_scp_amt"]
    assert a["fund_pay_sumamt"] <= a["inscp_scp_amt"]
    assert 0 <= r.pool_prop_selfpay <= 10_000
    for d in r.details:
        assert 0 <= d.fund_payamt_fen <= d.inscp_scp_fen
        if d.crt_payb_lmt_fen is not None:
            assert d.fund_payamt_fen <= d.crt_payb_lmt_fen
    _check_caps_independently(scn, r)
    _check_one_stop_chain(scn, r)

    # The personal account only pays the person's share, from balances it has.
    assert a["acct_mulaid_pay"] <= a["acct_pay"] <= a["psn_part_amt"]
    own = a["acct_pay"] - a["acct_mulaid_pay"]
    if not account_used(scn):
        # No own account in play: at most a bound relative's account pays (residents' 家庭共济).
        assert own == 0
        family_may_pay = scn.request.get("acct_used_flag") == "1" and scn.spec.account["family"]["enabled"]
        if not family_may_pay:
            assert a["acct_pay"] == 0
    assert a["balc"] == balances(scn.request) - own
    family = sum(fen(rel["current_year"]) + fen(rel["historical"]) for rel in scn.request["accounts"]["family"])
    assert a["acct_mulaid_pay"] <= family
    assert sum(fen(p["acct_mulaid_pay"]) for p in out["acct_mulaid"]) == a["acct_mulaid_pay"]
    if account_used(scn) and scn.spec.account_first is None:
        payable = a["psn_part_amt"]
        if not scn.spec.account["pays_fulamt_ownpay"]:
            payable -= a["fulamt_ownpay_amt"]
        if not scn.spec.account["pays_overlmt"]:
            payable -= a["overlmt_selfpay"]
        payable = max(0, payable)
        assert a["acct_pay"] <= payable
        # The own account pays as much as its sources hold, relatives only top up the rest.
        sources = sum(fen(scn.request["accounts"][source]) for source in scn.spec.account["sources"])
        assert own == min(payable, sources)
        assert a["acct_mulaid_pay"] <= payable - own


def _check_one_stop_chain(scn: S.Scenario, r: SettlementResult) -> None:
    """The pool pays first; each later layer pays on what is left, if its conditions hold."""
    details = list(r.details)
    event(f"funds paying: {len([d for d in details if d.fund_payamt_fen])}")
    if r.gates:  # a no_fund gate: no fund computes at all
        assert not details and r.fund_pay_sumamt == 0
        return
    scheme = S.store_for(scn.spec).resolve(S.CHILD, parse_request(scn.request).service_date).params.schemes["310"]
    pool = details.pop(0)
    assert pool.fund_pay_type == S.POOL_TYPE and pool.fund_payamt_fen == r.funds["hifp_pay"]
    if scn.spec.account_first is None or not account_used(scn):
        assert pool.inscp_scp_fen == r.inscp_scp_amt
    remaining = pool.inscp_scp_fen - pool.fund_payamt_fen
    facts = facts_of(scn.request)
    ordinal = before_values(scn.request).get(f"{S.BENEFIT}.visit_cnt", 0) + 1
    paid_by_field = dict.fromkeys(FUND_FIELDS, 0)
    paid_by_field["hifp_pay"] = pool.fund_payamt_fen
    for layer in scheme.layers:
        if remaining == 0 or (layer.when is not None and not layer.when.matches(facts, ordinal)):
            assert all(d.fund_pay_type != layer.fund_pay_type for d in details), layer.name
            continue
        d = details.pop(0)
        assert d.fund_pay_type == layer.fund_pay_type
        if layer.base == "remaining":
            assert d.inscp_scp_fen == remaining
        else:
            assert d.inscp_scp_fen <= remaining
        remaining -= d.fund_payamt_fen
        paid_by_field[layer.field] += d.fund_payamt_fen
    assert not details
    assert paid_by_field == dict(r.funds)


def _check_caps_independently(scn: S.Scenario, r: SettlementResult) -> None:
    """Recompute each applied fund's remaining caps from the typed policy and the accumulators."""
    policy = S.store_for(scn.spec).resolve(S.CHILD, parse_request(scn.request).service_date)
    scheme = policy.params.schemes[S.INSUTYPE]
    rules = {scheme.benefits[S.BENEFIT].fund.fund_pay_type: scheme.benefits[S.BENEFIT].fund}
    rules.update({layer.fund_pay_type: layer for layer in scheme.layers})
    facts = facts_of(scn.request)
    before = before_values(scn.request)
    ordinal = before.get(f"{S.BENEFIT}.visit_cnt", 0) + 1
    used = {cap: before.get(f"{cap}.fund_amt", 0) for cap in S.CAP_NAMES}
    for d in r.details:
        rule = rules[d.fund_pay_type]
        for cap in rule.caps:
            limit, _ = cap.amount_fen.lookup(facts, ordinal)
            if limit is not None:
                assert d.fund_payamt_fen <= max(0, limit - used.get(cap.name, 0)), (cap.name, limit, used)
        for cap in rule.caps:
            used[cap.name] = used.get(cap.name, 0) + d.fund_payamt_fen


# -- (b) monotonicity --------------------------------------------------------------------


@PROPERTY
@given(S.scenarios(), st.integers(1, 2_000_000))
def test_more_in_scope_spend_never_lowers_the_pool(scn: S.Scenario, extra_fen: int) -> None:
    r = settled(scn)
    assume(r is not None)
    bigger = copy.deepcopy(scn.request)
    bigger["feedetail"].append(S.class_a_line(999, extra_fen))
    r2 = settled(scn, bigger)
    assert r2 is not None
    assert r2.inscp_scp_amt == r.inscp_scp_amt + extra_fen
    assert r2.funds["hifp_pay"] >= r.funds["hifp_pay"]
    event("pool paid more" if r2.funds["hifp_pay"] > r.funds["hifp_pay"] else "pool paid the same")


@PROPERTY
@given(S.scenarios(), st.integers(1, 2_000_000))
def test_out_of_scope_spend_changes_no_fund(scn: S.Scenario, extra_fen: int) -> None:
    r = settled(scn)
    assume(r is not None)
    bigger = copy.deepcopy(scn.request)
    bigger["feedetail"].append({"feedetl_sn": "999", "chrgitm_lv": "03", "pric": format_fen(extra_fen), "cnt": 1,
                                "det_item_fee_sumamt": format_fen(extra_fen)})  # fmt: skip
    r2 = settled(scn, bigger)
    assert r2 is not None
    assert r2.fulamt_ownpay_amt == r.fulamt_ownpay_amt + extra_fen
    assert r2.funds == r.funds and r2.act_pay_dedc == r.act_pay_dedc
    assert r2.accumulators_delta == r.accumulators_delta
    assert r2.psn_part_amt == r.psn_part_amt + extra_fen


def _raise_deductible(pool: dict[str, Any], delta_fen: int) -> dict[str, Any]:
    """The same rule with every deductible amount (and repeat amount/floor) raised by ``delta``."""
    pool = copy.deepcopy(pool)
    d = pool["deductible"]

    def up(value: Any) -> Any:
        return S.yuan(fen(value) + delta_fen)

    def up_table(node: Any) -> Any:
        if isinstance(node, list):
            return [up_table(row) for row in node]
        if isinstance(node, dict):
            return {**node, "value": up(node["value"])}
        return up(node)

    d["amount_yuan"] = up_table(d["amount_yuan"])
    repeat = d.get("repeat")
    if repeat is not None and repeat["kind"] == "list":
        repeat["amounts_yuan"] = [up(v) for v in repeat["amounts_yuan"]]
    if repeat is not None and repeat["kind"] == "step":
        repeat["floor_yuan"] = up(repeat["floor_yuan"])
    return pool


@PROPERTY
@given(
    S.scenarios(spec=S.policy_specs(pool=S.fund_rules(title="pool", fund_pay_type=S.POOL_TYPE, deductible=True))),
    st.integers(1, 500_000),
)
def test_a_higher_deductible_never_raises_the_pool(scn: S.Scenario, delta_fen: int) -> None:
    r = settled(scn)
    assume(r is not None)
    higher = scn.spec.with_pool(_raise_deductible(scn.spec.pool, delta_fen))
    r2 = settled(scn, spec=higher)
    assert r2 is not None
    assert r2.funds["hifp_pay"] <= r.funds["hifp_pay"]
    assert r2.act_pay_dedc >= r.act_pay_dedc
    event("pool paid less" if r2.funds["hifp_pay"] < r.funds["hifp_pay"] else "pool paid the same")


# -- regression: a stray selfpay_prop on a 甲类 row or line ----------------------------


@pytest.mark.parametrize("via", ["catalogue", "line"])
def test_class_a_lines_have_no_self_pay_first_part(via: str) -> None:
    item = CatalogItem(
        hilist_code="A01", hilist_name="甲类 with a ratio", chrgitm_lv="01", med_chrgitm_type="09",
        pric_uplmt_fen=None, selfpay_prop_bp=1_000, admdvs="", begndate=dt.date(2020, 1, 1), enddate=None,
    )  # fmt: skip
    line: dict[str, Any] = {"feedetl_sn": "1", "pric": "100.00", "cnt": "1", "det_item_fee_sumamt": "100.00"}
    line.update({"hilist_code": "A01"} if via == "catalogue" else {"chrgitm_lv": "01", "selfpay_prop": "0.10"})
    request = json.loads(EXAMPLE.read_text("utf-8"))
    request["feedetail"] = [line]
    store = PolicyStore.load_dir(PRESETS)
    r = settle(store, Catalog([item]), parse_request(request))
    # domain.md §2: 先行自付 is for 乙类 items; 甲类 has ratio 0 whatever the row or line says.
    assert r.lines[0].preselfpay_fen == 0 and r.preselfpay_amt == 0
    assert r.inscp_scp_amt == 10_000


# -- (c) determinism ---------------------------------------------------------------------


@PROPERTY
@given(S.scenarios())
def test_settling_twice_gives_the_same_result(scn: S.Scenario) -> None:
    first = run(scn)
    second = run(scn)
    if isinstance(first, SettlementRefused):
        assert isinstance(second, SettlementRefused) and str(first) == str(second)
        return
    assert first.to_json() == second.to_json()
    # A store built afresh from the same texts and a freshly parsed request agree too.
    fresh = settle(PolicyStore.from_texts(scn.spec.texts()), scn.catalog, parse_request(copy.deepcopy(scn.request)))
    assert fresh.to_json() == first.to_json()
    assert fresh.explain("zh") == first.explain("zh") and fresh.explain("en") == first.explain("en")


# -- (d) incremental consistency ---------------------------------------------------------


def _incremental_specs(*, multi_band: bool, with_caps: bool) -> st.SearchStrategy[S.PolicySpec]:
    pool = S.fund_rules(
        title="pool", fund_pay_type=S.POOL_TYPE, deductible=True, period="year", multi_band=multi_band,
        with_caps=with_caps, ordinal=False,
    )  # fmt: skip
    return S.policy_specs(pool=pool, with_layers=False, with_account_first=False)


@st.composite
def split_bills(draw: st.DrawFn, *, multi_band: bool, with_caps: bool) -> tuple[S.Scenario, list[Any], list[Any]]:
    spec = draw(_incremental_specs(multi_band=multi_band, with_caps=with_caps))
    catalog, codes = draw(S.catalogs())
    request = draw(S.person_fields(offsite=False))
    request.update(draw(S.account_fields()))
    request["accumulators"] = draw(S.accumulators(spec))
    bill_a = draw(S.bills(codes, first_sn=1))
    bill_b = draw(S.bills(codes, first_sn=100))
    return S.Scenario(spec, catalog, codes, request), bill_a, bill_b


def _amounts(acc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in acc.items() if not k.endswith("_cnt") and fen(v)}


def _mentions_ordinal(node: Any) -> bool:
    if isinstance(node, dict):
        return any(k in ("ordinal_min", "ordinal_max", "repeat") or _mentions_ordinal(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_mentions_ordinal(v) for v in node)
    return False


def _check_incremental(scn: S.Scenario, bill_a: list[Any], bill_b: list[Any]) -> None:
    # Two visits are not one visit when a value depends on the visit's ordinal (第几次就医):
    # the second visit may rightly find another deductible, ratio or cap.
    assume(not _mentions_ordinal(scn.spec.rules()))
    req_a = {**scn.request, "feedetail": bill_a}
    req_ab = {**scn.request, "feedetail": bill_a + bill_b}
    r_a = settled(scn, req_a)
    after_a = r_a.to_json()["accumulators"]["after"]
    req_b = {**scn.request, "feedetail": bill_b, "accumulators": {"year": S.YEAR, "values": after_a}}
    r_b = settled(scn, req_b)
    r_ab = settled(scn, req_ab)
    together = r_ab.funds["hifp_pay"]
    apart = r_a.funds["hifp_pay"] + r_b.funds["hifp_pay"]
    assert abs(apart - together) <= 1, (apart, together)
    event(
        f"apart - together = {apart - together}; deductible spans both: {bool(r_a.act_pay_dedc and r_b.act_pay_dedc)}"
    )
    assert r_a.act_pay_dedc + r_b.act_pay_dedc == r_ab.act_pay_dedc
    # The year-to-date amounts end in the same place; only the visit count differs.
    end_b = r_b.to_json()["accumulators"]["after"]
    end_ab = r_ab.to_json()["accumulators"]["after"]
    if abs(apart - together) == 0:
        assert _amounts(end_b) == _amounts(end_ab)
    else:
        differ = {k for k in set(_amounts(end_b)) | set(_amounts(end_ab)) if end_b.get(k) != end_ab.get(k)}
        assert all(k.endswith(".fund_amt") for k in differ), differ


@PROPERTY
@given(split_bills(multi_band=False, with_caps=False))
def test_two_visits_pay_what_one_combined_visit_pays_single_band(case: Any) -> None:
    _check_incremental(*case)


@PROPERTY
@given(split_bills(multi_band=True, with_caps=True))
def test_two_visits_pay_what_one_combined_visit_pays_bands_and_caps(case: Any) -> None:
    _check_incremental(*case)


# -- (e) accumulators --------------------------------------------------------------------


@PROPERTY
@given(S.scenarios())
def test_accumulators_after_are_before_plus_delta(scn: S.Scenario) -> None:
    r = settled(scn)
    if r is None:
        return
    before = before_values(scn.request)
    delta = dict(r.accumulators_delta)
    assert all(v > 0 for v in delta.values()), delta
    expected = dict(before)
    for key, value in delta.items():
        expected[key] = expected.get(key, 0) + value
    assert r.accumulators_after == expected
    rendered = r.to_json()["accumulators"]
    assert rendered["year"] == S.YEAR
    assert {k: int(v) if k.endswith("_cnt") else fen(v) for k, v in rendered["after"].items()} == expected
    assert {k: int(v) if k.endswith("_cnt") else fen(v) for k, v in rendered["delta"].items()} == delta

    # What the deltas say matches what was paid.
    assert delta.pop(f"{S.BENEFIT}.visit_cnt") == 1
    names = {S.POOL_TYPE: S.BENEFIT, **{layer["fund_pay_type"]: layer["name"] for layer in scn.spec.layers}}
    caps = {rule["fund_pay_type"]: [c["name"] for c in rule.get("caps", [])] for rule in scn.spec.rules()}
    cap_paid: dict[str, int] = {}
    for d in r.details:
        name = names[d.fund_pay_type]
        assert delta.get(f"{name}.base_amt", 0) == d.inscp_scp_fen
        for cap in caps[d.fund_pay_type]:
            cap_paid[cap] = cap_paid.get(cap, 0) + d.fund_payamt_fen
    if r.details:
        assert delta.get(f"{S.BENEFIT}.dedc_amt", 0) == r.act_pay_dedc
    for cap, paid in cap_paid.items():
        assert delta.get(f"{cap}.fund_amt", 0) == paid
    for key in delta:
        counter = key.split(".", 1)[1]
        assert counter in ("base_amt", "elig_amt", "dedc_amt", "dedc_lv_amt", "fund_amt"), key


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
