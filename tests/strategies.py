"""Hypothesis strategies: random but valid policies, catalogues, bills and accumulators.

A generated *scenario* is plain data (dicts), so a test can change one thing (raise a
deductible, add a line) and rebuild. Policies are two YAML files: a national root
``000000`` and a child pooling region ``110000``; the fund rules sit either in the root
(inherited untouched) or in the child (a cited block replacing the root's placeholder).
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import strategies as st

from yibao import Catalog, CatalogItem, PolicyStore
from yibao.money import format_bp, format_fen, parse_fen

ROOT = "000000"
CHILD = "110000"
ELSEWHERE = "990000"  # no policy file: care there is off-site
YEAR = 2024
SERVICE_DATE = "2024-06-01 09:00:00"
BENEFIT = "care"
INSUTYPE = "310"
POOL_TYPE = "310100"

PERSONS = {"1101": "in_service", "1201": "retired"}
LEVELS = {"01": "level_3", "05": "level_2", "08": "level_1"}
IDENTITIES = ("dibao", "tekun")
RELATIONS = ("spouse", "child", "parent")
MED_TYPES = ("11", "21")
OFFSITE_FILINGS = ("long_term", "referral", "emergency", "temporary")

#: Possible layers in one-stop order: (name, result field, fund_pay_type, base).
LAYER_KINDS = (
    ("civil", "cvlserv_pay", "320100", "remaining"),
    ("large", "hifob_pay", "330100", "over_cap"),
    ("critical", "hifmi_pay", "390200", "remaining"),
    ("supplement", "hifes_pay", "370100", "remaining"),
    ("assist", "maf_pay", "610100", "remaining"),
)
CAP_NAMES = ("cap_a", "cap_b", "shared")


# -- small values --------------------------------------------------------------------


def yuan(fen: int) -> str | int:
    """An amount as policy YAML writes it: whole yuan as an integer, else a string."""
    return fen // 100 if fen % 100 == 0 else format_fen(fen)


def ratio(bp: int) -> str:
    return format_bp(bp)


amounts_fen = st.one_of(
    st.integers(0, 300_000),
    st.integers(0, 30).map(lambda k: k * 10_000),  # round figures: 0, 100, 200 … yuan
)
ratios_bp = st.one_of(st.integers(0, 10_000), st.sampled_from([0, 5_000, 6_000, 7_500, 8_500, 9_000, 10_000]))
AMOUNTS_YUAN = amounts_fen.map(yuan)
RATIOS = ratios_bp.map(ratio)
CAP_VALUES = st.one_of(st.none(), AMOUNTS_YUAN)
_LEVEL_NAMES = sorted(set(LEVELS.values()))
# Strategies are built once: constructing them inside composites on every draw is slow.
_CONDITION_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "person": st.sampled_from(sorted(set(PERSONS.values()))),
    "level": st.one_of(st.sampled_from(_LEVEL_NAMES),
                       st.lists(st.sampled_from(_LEVEL_NAMES), min_size=1, max_size=2, unique=True)),
    "identity": st.lists(st.sampled_from(IDENTITIES), min_size=1, max_size=2, unique=True),
    "psn_type": st.sampled_from(sorted(PERSONS)),
    "hosp_lv": st.sampled_from(sorted(LEVELS)),
    "offsite": st.lists(st.sampled_from(("local", *OFFSITE_FILINGS, "unfiled")), min_size=1, max_size=2,
                        unique=True),
    "age_min": st.integers(0, 80),
    "ordinal_min": st.integers(1, 3),
}  # fmt: skip


@st.composite
def _conditions(draw: st.DrawFn, keys: tuple[str, ...]) -> dict[str, Any]:
    chosen = draw(st.sets(st.sampled_from(keys), min_size=1, max_size=2))
    out: dict[str, Any] = {}
    for key in (k for k in keys if k in chosen):  # age_min before age_max
        if key == "age_max":
            out[key] = draw(st.integers(out.get("age_min", 0), 100))
        else:
            out[key] = draw(_CONDITION_VALUES[key])
    return out


@functools.cache
def conditions(*, ordinal: bool = True, offsite: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """A non-empty set of conditions over declared vocabularies."""
    keys = ("person", "level", "identity", "age_min", "age_max", "psn_type", "hosp_lv")
    keys += ("ordinal_min",) * ordinal + ("offsite",) * offsite
    return _conditions(keys)


@st.composite
def _rows(draw: st.DrawFn, values: st.SearchStrategy[Any], ordinal: bool) -> list[Any]:
    out: list[Any] = []
    for _ in range(draw(st.integers(1, 3))):
        row = draw(conditions(ordinal=ordinal))
        row["value"] = draw(values)
        out.append(row)
    last = draw(values)
    out.append(last if draw(st.booleans()) else {"value": last})
    return out


@functools.cache
def table(values: st.SearchStrategy[Any], *, ordinal: bool = True) -> st.SearchStrategy[Any]:
    """A bare value, or rows with conditions ending in one unconditional row."""
    return st.one_of(values, _rows(values, ordinal))


# -- fund rules ----------------------------------------------------------------------


@st.composite
def _deductibles(draw: st.DrawFn, period: str | None, ordinal: bool) -> dict[str, Any]:
    period = period or draw(st.sampled_from(["visit", "year"]))
    d: dict[str, Any] = {"period": period, "amount_yuan": draw(table(AMOUNTS_YUAN, ordinal=ordinal))}
    if period == "year" and draw(st.booleans()):
        d["top_up"] = True
    if period == "visit" and draw(st.booleans()):
        kind = draw(st.sampled_from(["list", "step", "percent"]))
        if kind == "list":
            d["repeat"] = {"kind": "list", "amounts_yuan": draw(st.lists(AMOUNTS_YUAN, min_size=1, max_size=3))}
        elif kind == "step":
            d["repeat"] = {"kind": "step", "step_yuan": yuan(draw(st.integers(0, 50_000))),
                           "floor_yuan": yuan(draw(st.integers(0, 50_000)))}  # fmt: skip
        else:
            d["repeat"] = {"kind": "percent", "ratio": draw(RATIOS)}
    if draw(st.integers(0, 3)) == 0:
        d["factor"] = draw(table(RATIOS, ordinal=ordinal))
    return d


@functools.cache
def deductibles(*, period: str | None = None, ordinal: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    return _deductibles(period, ordinal)


@st.composite
def _bands(draw: st.DrawFn, ordinal: bool, max_bands: int) -> list[dict[str, Any]]:
    starts = draw(st.lists(st.integers(1, 2_000_000), max_size=max_bands - 1, unique=True))
    return [{"from_yuan": yuan(start), "ratio": draw(table(RATIOS, ordinal=ordinal))}
            for start in [0, *sorted(starts)]]  # fmt: skip


@functools.cache
def bands(*, ordinal: bool = True, max_bands: int = 3) -> st.SearchStrategy[list[dict[str, Any]]]:
    return _bands(ordinal, max_bands)


@st.composite
def _caps(draw: st.DrawFn, nullable: bool) -> list[dict[str, Any]]:
    names = draw(st.lists(st.sampled_from(CAP_NAMES), max_size=2, unique=True))
    values = CAP_VALUES if nullable else AMOUNTS_YUAN
    return [{"name": name, "amount_yuan": draw(table(values))} for name in names]


@functools.cache
def caps(*, nullable: bool = True) -> st.SearchStrategy[list[dict[str, Any]]]:
    return _caps(nullable)


@st.composite
def fund_rules(
    draw: st.DrawFn,
    *,
    title: str,
    fund_pay_type: str,
    deductible: bool | None = None,
    period: str | None = None,
    multi_band: bool = True,
    with_caps: bool = True,
    with_adjustments: bool = True,
    ordinal: bool = True,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"title": title, "fund_pay_type": fund_pay_type}
    if deductible is None:
        deductible = draw(st.booleans())
    if deductible:
        rule["deductible"] = draw(deductibles(period=period, ordinal=ordinal))
    rule["measure"] = draw(st.sampled_from(["cumulative", "above_deductible"]))
    if multi_band and draw(st.booleans()):
        rule["bands"] = draw(bands(ordinal=ordinal))
    else:
        rule["ratio"] = draw(table(RATIOS, ordinal=ordinal))
    if with_adjustments and draw(st.booleans()):
        rule["adjustments"] = [
            {"when": draw(conditions(ordinal=ordinal)), "points": ratio(draw(st.integers(-3_000, 2_000))),
             "title": f"adj{i}"}
            for i in range(draw(st.integers(1, 2)))
        ]  # fmt: skip
    if with_caps:
        rule["caps"] = draw(caps())
    return rule


@st.composite
def layers(draw: st.DrawFn) -> list[dict[str, Any]]:
    chosen = draw(st.lists(st.booleans(), min_size=len(LAYER_KINDS), max_size=len(LAYER_KINDS)))
    out = []
    for keep, (name, fund_field, fund_pay_type, base) in zip(chosen, LAYER_KINDS, strict=True):
        if not keep:
            continue
        rule = draw(fund_rules(title=f"layer {name}", fund_pay_type=fund_pay_type, period="year"))
        rule.update({"name": name, "field": fund_field, "benefits": [BENEFIT], "base": base})
        if name == "assist" or draw(st.integers(0, 3)) == 0:
            rule["when"] = {"identity": draw(st.lists(st.sampled_from(IDENTITIES), min_size=1, max_size=2,
                                                      unique=True))}  # fmt: skip
        out.append(rule)
    return out


# -- whole policies ------------------------------------------------------------------


@dataclass
class PolicySpec:
    """A generated two-file policy: the pool rule and layers of benefit ``care`` of 310."""

    pool: dict[str, Any]
    layers: list[dict[str, Any]]
    account: dict[str, Any]
    gates: dict[str, Any]
    account_first: list[str] | None
    in_child: bool

    def texts(self) -> dict[str, str]:
        return policy_texts(self)

    def with_pool(self, pool: dict[str, Any]) -> PolicySpec:
        other = copy.deepcopy(self)
        other.pool = pool
        return other

    def rules(self) -> list[dict[str, Any]]:
        return [self.pool, *self.layers]

    def interesting_amounts(self) -> list[int]:
        """Deductibles, caps and band starts in fen: where accumulators are worth placing."""
        found: list[int] = []

        def walk(node: Any, key: str = "") -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, k if k != "value" else key)
            elif isinstance(node, list):
                for item in node:
                    walk(item, key)
            elif key.endswith("_yuan") and node is not None:
                found.append(parse_fen(node))

        for rule in self.rules():
            walk(rule)
        return found


def _scheme(spec: PolicySpec, *, pool: dict[str, Any], layer_list: list[dict[str, Any]]) -> dict[str, Any]:
    benefit: dict[str, Any] = {"title": "generated care", "med_types": list(MED_TYPES), "fund": pool}
    if spec.account_first is not None:
        benefit["account_first"] = {"sources": spec.account_first}
    return {
        "title": "generated employee scheme",
        "account": spec.account,
        "gates": spec.gates,
        "benefits": {BENEFIT: benefit, "pharmacy": {"title": "pharmacy", "med_types": ["41"], "clr_type": "41",
                                                    "fund": {"title": "none", "fund_pay_type": POOL_TYPE,
                                                             "ratio": "0"}}},
        "layers": layer_list,
    }  # fmt: skip


PLACEHOLDER_POOL = {
    "title": "root placeholder",
    "fund_pay_type": POOL_TYPE,
    "deductible": {"period": "year", "top_up": True, "amount_yuan": 999},
    "bands": [{"from_yuan": 0, "ratio": "0.1"}, {"from_yuan": 5, "ratio": "0.2"}],
    "caps": [{"name": "placeholder", "amount_yuan": 1}],
}


def policy_texts(spec: PolicySpec) -> dict[str, str]:
    references = {"gen": {"title": "generated", "status": "assumption"}}
    root_policy: dict[str, Any] = {
        "person_categories": dict(PERSONS),
        "level_groups": dict(LEVELS),
        "identities": {name: name for name in IDENTITIES},
        "relations": {name: name for name in RELATIONS},
    }
    child_policy: dict[str, Any] = {}
    if spec.in_child:
        # The root holds a placeholder the child's cited block must replace whole (a
        # leaf-wise merge would keep top_up, bands and caps from the placeholder).
        root_policy["schemes"] = {INSUTYPE: _scheme(spec, pool=PLACEHOLDER_POOL, layer_list=[])}
        child_policy["schemes"] = {INSUTYPE: {
            "benefits": {BENEFIT: {"fund": {"value": spec.pool, "reference": "gen"}}},
            "layers": spec.layers,
        }}  # fmt: skip
    else:
        root_policy["schemes"] = {INSUTYPE: _scheme(spec, pool=spec.pool, layer_list=spec.layers)}
    root = {"region": ROOT, "name": "root", "valid_from": "2020-01-01", "references": references,
            "policy": root_policy}  # fmt: skip
    child = {"region": CHILD, "name": "child", "parent": ROOT, "valid_from": "2020-01-01", "policy": child_policy}
    return {"000000-root.yaml": _dump(root), "110000-child.yaml": _dump(child)}


_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, allow_unicode=True, sort_keys=False)


_STORES: dict[tuple[tuple[str, str], ...], PolicyStore] = {}


def store_for(spec: PolicySpec) -> PolicyStore:
    """Build (or reuse) the store of ``spec``; shrinking revisits the same texts often."""
    texts = spec.texts()
    key = tuple(sorted(texts.items()))
    found = _STORES.get(key)
    if found is None:
        if len(_STORES) > 512:
            _STORES.clear()
        found = _STORES[key] = PolicyStore.from_texts(texts)
    return found


@st.composite
def policy_specs(
    draw: st.DrawFn,
    *,
    pool: st.SearchStrategy[dict[str, Any]] | None = None,
    with_layers: bool = True,
    with_account_first: bool = True,
) -> PolicySpec:
    pool_rule = draw(pool if pool is not None else fund_rules(title="pool", fund_pay_type=POOL_TYPE))
    layer_list = draw(layers()) if with_layers else []
    family = {
        "enabled": draw(st.booleans()),
        "relations": draw(st.lists(st.sampled_from(RELATIONS[:2]), max_size=2, unique=True)),
        "same_region": draw(st.booleans()),
    }
    if draw(st.booleans()):
        family["max_members"] = draw(st.integers(1, 2))
    account = {
        "enabled": draw(st.integers(0, 5)) > 0,
        "sources": draw(st.lists(st.sampled_from(["current_year", "historical"]), min_size=1, max_size=2,
                                 unique=True)),
        "pays_fulamt_ownpay": draw(st.booleans()),
        "pays_overlmt": draw(st.booleans()),
        "family": family,
    }  # fmt: skip
    gates = {"offsite_unfiled": draw(st.sampled_from(["allow", "no_fund", "refuse"])),
             "disease_filing_missing": "refuse"}  # fmt: skip
    account_first = None
    if with_account_first and draw(st.integers(0, 4)) == 0:
        account_first = draw(st.lists(st.sampled_from(["current_year", "historical"]), min_size=1, max_size=2,
                                      unique=True))  # fmt: skip
    return PolicySpec(pool_rule, layer_list, account, gates, account_first, draw(st.booleans()))


# -- catalogues ----------------------------------------------------------------------


@st.composite
def catalog_items(draw: st.DrawFn, code: str) -> CatalogItem:
    lv = draw(st.sampled_from(["01", "01", "02", "02", "03"]))
    restricted = draw(st.integers(0, 3)) == 0
    return CatalogItem(
        hilist_code=code,
        hilist_name=f"item {code}",
        chrgitm_lv=lv,
        med_chrgitm_type=draw(st.sampled_from(["03", "05", "09", "11"])),
        pric_uplmt_fen=draw(st.one_of(st.none(), st.integers(1, 200_000))),
        # 甲类 rows normally carry 0; a stray ratio must not create a self-pay-first part.
        selfpay_prop_bp=draw(st.sampled_from([0, 0, 0, 1000])) if lv == "01"
        else draw(st.one_of(st.integers(0, 10_000), st.sampled_from([500, 1000]))),
        admdvs="",
        begndate=dt.date(2020, 1, 1),
        enddate=None,
        lmt_gend=draw(st.sampled_from(["1", "2"])) if restricted and draw(st.booleans()) else None,
        lmt_age_min=draw(st.integers(0, 70)) if restricted and draw(st.booleans()) else None,
        lmt_age_max=None,
        lmt_insutypes=frozenset({draw(st.sampled_from(["310", "390"]))}) if restricted and draw(st.booleans())
        else None,
        lmt_hosp_lv_min=draw(st.sampled_from(["level_2", "level_3"])) if restricted and draw(st.booleans())
        else None,
        lmt_med_types=frozenset({draw(st.sampled_from(MED_TYPES))}) if restricted and draw(st.booleans()) else None,
        lmt_course_days=draw(st.integers(1, 14)) if restricted and draw(st.booleans()) else None,
        lmt_indication="限定适应症" if restricted and draw(st.booleans()) else "",
    )  # fmt: skip


@st.composite
def catalogs(draw: st.DrawFn) -> tuple[Catalog, list[str]]:
    codes = [f"C{i:03d}" for i in range(draw(st.integers(1, 6)))]
    return Catalog([draw(catalog_items(code)) for code in codes]), codes


# -- bills ---------------------------------------------------------------------------


@st.composite
def price_and_count(draw: st.DrawFn) -> tuple[str, str | int, int]:
    """(pric, cnt, amount in fen) with amount = pric × cnt exactly."""
    kind = draw(st.integers(0, 3))
    if kind == 0:  # fractional quantity: half or quarter of an even price
        quarters = draw(st.integers(1, 12))
        pric_fen = 4 * draw(st.integers(1, 50_000))
        return format_fen(pric_fen), f"{quarters // 4}.{(quarters % 4) * 25:02d}", pric_fen * quarters // 4
    pric_fen = draw(st.one_of(st.integers(1, 500_000), st.integers(1, 2_000)))
    cnt = draw(st.integers(1, 10))
    return format_fen(pric_fen), cnt if draw(st.booleans()) else str(cnt), pric_fen * cnt


@st.composite
def fee_lines(draw: st.DrawFn, codes: list[str], *, sn: int) -> dict[str, Any]:
    pric, cnt, amount = draw(price_and_count())
    line: dict[str, Any] = {"feedetl_sn": str(sn), "pric": pric, "cnt": cnt, "det_item_fee_sumamt": format_fen(amount)}
    if codes and draw(st.integers(0, 2)) > 0:
        line["hilist_code"] = draw(st.sampled_from(codes))
        if draw(st.integers(0, 3)) == 0:
            line["course_day"] = draw(st.integers(1, 30))
        if draw(st.integers(0, 3)) == 0:
            line["hosp_appr_flag"] = draw(st.sampled_from(["0", "1"]))
    else:
        line["hilist_name"] = f"own line {sn}"
        line["chrgitm_lv"] = draw(st.sampled_from(["01", "02", "03"]))
        if draw(st.booleans()) if line["chrgitm_lv"] == "02" else draw(st.integers(0, 4)) == 0:
            line["selfpay_prop"] = ratio(draw(st.integers(0, 3_000)))
        if draw(st.integers(0, 2)) == 0:
            line["pric_uplmt_amt"] = format_fen(draw(st.integers(1, 200_000)))
    return line


@st.composite
def bills(draw: st.DrawFn, codes: list[str], *, first_sn: int = 1, min_size: int = 1, max_size: int = 6) -> Any:
    n = draw(st.integers(min_size, max_size))
    return [draw(fee_lines(codes, sn=first_sn + i)) for i in range(n)]


def class_a_line(sn: int, amount_fen: int) -> dict[str, Any]:
    """An extra 甲类 line with no cap: wholly in scope."""
    return {"feedetl_sn": str(sn), "hilist_name": "extra 甲类", "chrgitm_lv": "01", "pric": format_fen(amount_fen),
            "cnt": "1", "det_item_fee_sumamt": format_fen(amount_fen)}  # fmt: skip


# -- accumulators and requests -------------------------------------------------------


@st.composite
def accumulators(draw: st.DrawFn, spec: PolicySpec) -> dict[str, Any]:
    """Year-to-date positions, often just around a deductible, cap or band start."""
    points = spec.interesting_amounts() or [0]
    near = st.builds(lambda p, d: max(0, p + d), st.sampled_from(points), st.integers(-20_000, 20_000))
    amount = st.one_of(st.just(0), near, st.integers(0, 5_000_000))
    values: dict[str, Any] = {}
    names = [BENEFIT, *(layer["name"] for layer in spec.layers)]
    for name in names:
        if draw(st.booleans()):
            base = draw(amount)
            dedc = min(base, draw(amount))
            values[f"{name}.base_amt"] = format_fen(base)
            values[f"{name}.dedc_amt"] = format_fen(dedc)
            values[f"{name}.elig_amt"] = format_fen(base - dedc)
            if draw(st.booleans()):
                values[f"{name}.dedc_lv_amt"] = format_fen(dedc + draw(st.integers(0, 50_000)))
    if draw(st.booleans()):
        visits = draw(st.integers(0, 5))
        values[f"{BENEFIT}.visit_cnt"] = visits if draw(st.booleans()) else str(visits)
    # Only counters the policy has: a key no rule reads is refused (it would have counted as zero).
    used_caps = sorted({cap["name"] for rule in spec.rules() for cap in rule.get("caps", [])})
    for cap in used_caps:
        if draw(st.booleans()):
            values[f"{cap}.fund_amt"] = format_fen(draw(amount))
    return {"year": YEAR, "values": values}


@dataclass
class Scenario:
    spec: PolicySpec
    catalog: Catalog
    codes: list[str]
    request: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@st.composite
def person_fields(draw: st.DrawFn, *, offsite: bool = True) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "psn_no": "P0001",
        "gend": draw(st.sampled_from(["1", "2", 1, 2])),
        "age": draw(st.integers(0, 100)),
        "insutype": INSUTYPE,
        "psn_type": draw(st.sampled_from(sorted(PERSONS))),
        "med_type": draw(st.sampled_from(MED_TYPES)),
        "hosp_lv": draw(st.sampled_from(sorted(LEVELS))),
        "insuplc_admdvs": CHILD,
        "mdtrtarea_admvs": CHILD,
        "begntime": SERVICE_DATE,
        "psn_idet_types": draw(st.lists(st.sampled_from(IDENTITIES), max_size=2, unique=True)),
    }
    if offsite and draw(st.integers(0, 4)) == 0:
        fields["mdtrtarea_admvs"] = ELSEWHERE
        filing = draw(st.sampled_from([None, *OFFSITE_FILINGS]))
        if filing is not None:
            fields["filings"] = {"offsite": filing}
    return fields


@st.composite
def account_fields(draw: st.DrawFn) -> dict[str, Any]:
    balance = st.one_of(st.just(0), st.integers(0, 500_000))
    family = []
    for i in range(draw(st.integers(0, 3))):
        rel: dict[str, Any] = {
            "psn_no": f"R{i}",
            "relation": draw(st.sampled_from(RELATIONS)),
            "current_year": format_fen(draw(balance)),
            "historical": format_fen(draw(balance)),
        }
        if draw(st.booleans()):
            rel["insuplc_admdvs"] = draw(st.sampled_from([CHILD, ELSEWHERE]))
        family.append(rel)
    return {
        "acct_used_flag": draw(st.sampled_from(["1", "1", "0", ""])),
        "accounts": {"current_year": format_fen(draw(balance)), "historical": format_fen(draw(balance)),
                     "family": family},
    }  # fmt: skip


@st.composite
def scenarios(draw: st.DrawFn, *, spec: st.SearchStrategy[PolicySpec] | None = None) -> Scenario:
    policy = draw(spec if spec is not None else policy_specs())
    catalog, codes = draw(catalogs())
    request = draw(person_fields())
    request.update(draw(account_fields()))
    request["feedetail"] = draw(bills(codes))
    request["accumulators"] = draw(accumulators(policy))
    return Scenario(policy, catalog, codes, request)
