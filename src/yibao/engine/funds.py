"""One fund's payment: deductible, segmented ratios, annual caps (domain.md §3–§4).

The same computation serves the basic pooled fund and every later layer; only
the base differs. Amounts inside a layer are summed exactly in fen × basis
points and rounded half-up once, so a layer's payment is independent of how its
base happens to straddle bands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from functools import lru_cache
from typing import NamedTuple

from ..money import BP_ONE, apply_bp, round_div_half_up
from ..policy import Policy
from ..policy.model import Adjustment, Facts, FundRule, Scheme
from .trace import TraceStep

__all__ = ["FundOutcome", "compute_fund"]


@dataclass(slots=True)
class FundOutcome:
    """What one fund paid and why; ``deltas`` are its accumulator increments."""

    title: str
    fund_pay_type: str
    field: str
    applied: bool
    base_fen: int = 0
    dedc_fen: int = 0
    pay_fen: int = 0
    overflow_fen: int = 0
    limit_left_fen: int | None = None
    ratio_bp: int = 0
    deltas: dict[str, int] = dc_field(default_factory=dict)
    steps: list[TraceStep] = dc_field(default_factory=list)


class _Keys(NamedTuple):
    dedc: str
    dedc_lv: str
    base: str
    elig: str


@lru_cache(maxsize=4096)
def _keys(acc_name: str) -> _Keys:
    """A rule's accumulator names (see docs/policy.md), built once per rule name."""
    return _Keys(f"{acc_name}.dedc_amt", f"{acc_name}.dedc_lv_amt", f"{acc_name}.base_amt", f"{acc_name}.elig_amt")


@lru_cache(maxsize=4096)
def _cap_key(cap_name: str) -> str:
    return f"{cap_name}.fund_amt"


def counter_keys(scheme: Scheme) -> frozenset[str]:
    """Every year-to-date counter the scheme's rules read or write: each benefit's visit count and
    its pool's counters, each layer's counters, and every cap's used amount (docs/policy.md)."""
    rules: list[tuple[str, FundRule]] = [(name, benefit.fund) for name, benefit in scheme.benefits.items()]
    rules += [(layer.name, layer) for layer in scheme.layers]
    keys = {f"{name}.visit_cnt" for name in scheme.benefits}
    for name, rule in rules:
        keys.update(_keys(name))
        keys.update(_cap_key(cap.name) for cap in rule.caps)
    return frozenset(keys)


def compute_fund(
    rule: FundRule,
    path: str,
    acc_name: str,
    base_fen: int,
    facts: Facts,
    ordinal: int,
    acc: Mapping[str, int],
    policy: Policy,
    visit_dedc_paid_fen: int = 0,
) -> FundOutcome:
    """Pay ``rule`` on ``base_fen`` given the year-to-date accumulators ``acc``.

    ``acc_name`` prefixes this rule's own counters; caps use their own names, so
    rules naming the same cap share it.
    """
    assert base_fen >= 0 and ordinal >= 1
    out = FundOutcome(rule.title, rule.fund_pay_type, rule.field, applied=True, base_fen=base_fen)
    steps = out.steps
    if rule.when is not None and not rule.when.matches(facts, ordinal):
        out.applied = False
        steps.append(
            TraceStep(
                "not_applicable", rule.fund_pay_type, None, f"{path}.when", policy.source_for(f"{path}.when"),
                {"title": rule.title, "cond": rule.when},
            )
        )  # fmt: skip
        return out

    # 1. 起付线 (deductible) still owed.
    dedc = 0
    deltas = out.deltas
    if rule.deductible is not None:
        d = rule.deductible
        dpath = f"{path}.deductible"
        standard, row = d.amount_fen.lookup(facts, ordinal)
        if d.repeat is not None and ordinal >= 2:
            first, row = d.amount_fen.lookup(facts, 1)
            standard = d.repeat.amount(first, ordinal)
        factor, _ = d.factor.lookup(facts, ordinal)
        if factor != BP_ONE:
            standard = apply_bp(standard, factor)
        keys = _keys(acc_name)
        paid = acc.get(keys.dedc, 0)
        if d.period == "visit":
            # Owed afresh each visit, less what earlier settlements of this same visit bore.
            owed = max(0, standard - visit_dedc_paid_fen)
        elif d.top_up:
            level_before = acc.get(keys.dedc_lv, 0)
            level_now = max(level_before, standard)
            if level_now != level_before:
                deltas[keys.dedc_lv] = level_now - level_before
            owed = max(0, level_now - paid)
            standard = level_now
        else:
            owed = max(0, standard - paid)
        dedc = min(base_fen, owed)
        if dedc:
            deltas[keys.dedc] = dedc
        args = {"title": rule.title, "standard_fen": standard, "paid_fen": paid, "ordinal": ordinal,
                "row": d.amount_fen.rows[row]}  # fmt: skip
        rule_key = f"{dpath}.amount_yuan[{row}]" if len(d.amount_fen.rows) > 1 else f"{dpath}.amount_yuan"
        kind = "deductible_visit" if d.period == "visit" else "deductible"
        steps.append(TraceStep(kind, rule.fund_pay_type, dedc, rule_key, policy.source_for(rule_key), args))
    out.dedc_fen = dedc
    eligible = base_fen - dedc

    # 2. Annual caps: the tightest remaining limit binds.
    left: int | None = None
    for i, cap in enumerate(rule.caps):
        limit, row = cap.amount_fen.lookup(facts, ordinal)
        if limit is None:
            continue
        used = acc.get(_cap_key(cap.name), 0)
        remaining = max(0, limit - used)
        if left is None or remaining < left:
            left = remaining
            cap_info = (i, row, limit, used, cap.title or rule.title)
    out.limit_left_fen = left

    # 3. Bands (分段) on the measured cumulative amount, with point adjustments.
    keys = _keys(acc_name)
    # cumulative: from zero, the deductible inside the first band; else above the deductible.
    position = acc.get(keys.base, 0) + dedc if rule.measure == "cumulative" else acc.get(keys.elig, 0)
    bands = rule.band_list
    points = 0
    adjust_notes: tuple[Adjustment, ...] = ()
    for adj in rule.adjustments:
        if adj.when.matches(facts, ordinal):
            points += adj.points
            adjust_notes += (adj,)
    raw = 0  # exact payment in fen × bp
    overflow = 0
    budget = None if left is None else left * BP_ONE
    end = position + eligible
    for i, band in enumerate(bands):
        low = band.from_fen
        high = bands[i + 1].from_fen if i + 1 < len(bands) else None
        start = max(position, low)
        stop = end if high is None else min(end, high)
        if stop <= start:
            continue
        portion = stop - start
        base_ratio, row = band.ratio.lookup(facts, ordinal)
        ratio = min(BP_ONE, max(0, base_ratio + points))
        out.ratio_bp = ratio
        wanted = portion * ratio
        if budget is not None and raw + wanted > budget:
            # The cap binds inside this band: the unpaid in-scope amount passes on.
            covered = budget - raw
            overflow += round_div_half_up(wanted - covered, ratio) if ratio else 0
            raw = budget
        else:
            raw += wanted
        rkey = f"{path}.bands[{i}].ratio" if rule.bands else f"{path}.ratio"
        if len(band.ratio.rows) > 1:
            rkey += f"[{row}]"
        steps.append(
            TraceStep(
                "band", rule.fund_pay_type, None, rkey, policy.source_for(rkey),
                {"title": rule.title, "portion_fen": portion, "ratio_bp": ratio, "row": band.ratio.rows[row],
                 "adjust": adjust_notes},
            )
        )  # fmt: skip
    pay = round_div_half_up(raw, BP_ONE)
    if left is not None and pay >= left:
        pay = left
        i, row, limit, used, title = cap_info
        ckey = f"{path}.caps[{i}].amount_yuan"
        steps.append(
            TraceStep(
                "cap", rule.fund_pay_type, None, ckey, policy.source_for(ckey),
                {"title": title, "limit_fen": limit, "used_fen": used, "left_fen": left, "over_fen": overflow},
            )
        )  # fmt: skip
    else:
        overflow = 0
    out.pay_fen = pay
    out.overflow_fen = min(overflow, eligible)
    assert 0 <= pay <= base_fen, (pay, base_fen)

    # 4. Accumulator deltas.
    if base_fen:
        deltas[keys.base] = base_fen
    if eligible:
        deltas[keys.elig] = eligible
    if pay:
        for cap in rule.caps:
            deltas[_cap_key(cap.name)] = pay
    steps.append(
        TraceStep("fund", rule.fund_pay_type, pay, path, policy.source_for(path),
                  {"title": rule.title, "base_fen": base_fen})
    )  # fmt: skip
    return out
