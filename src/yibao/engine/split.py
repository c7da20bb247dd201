"""Splitting each fee line against the catalogue (domain.md §2).

Every line splits into 全自费 / 超限价 / 先行自付 / 符合政策范围 parts that add back
to its amount exactly: the self-pay-first part is rounded once per line and the
in-scope part is the remainder.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from ..catalog import LEVEL_RANK, Catalog, CatalogItem
from ..errors import RequestError
from ..money import BP_ONE, format_fen, round_div_half_up
from .request import FeeLine

__all__ = ["LineSplit", "SplitContext", "split_line"]

_GENDER = {"1": ("男", "male"), "2": ("女", "female")}


class LineSplit(NamedTuple):
    """One line's split, in the shape of 2204's output.

    Descriptive attributes come from the catalogue ``item`` when there is one, else
    from the line itself; they are properties so a split costs only what it computes.
    """

    line: FeeLine
    item: CatalogItem | None
    chrgitm_lv: str
    pric_uplmt_fen: int | None
    selfpay_prop_bp: int
    fulamt_ownpay_fen: int
    overlmt_fen: int
    preselfpay_fen: int
    inscp_fen: int
    reasons: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]

    @property
    def hilist_code(self) -> str | None:
        return self.line.hilist_code

    @property
    def hilist_name(self) -> str:
        return self.item.hilist_name if self.item is not None else self.line.hilist_name

    @property
    def med_chrgitm_type(self) -> str:
        return self.item.med_chrgitm_type if self.item is not None else (self.line.med_chrgitm_type or "14")

    @property
    def indication(self) -> str:
        return self.item.lmt_indication if self.item is not None else ""


class SplitContext(NamedTuple):
    """The facts restrictions are checked against."""

    catalog: Catalog
    region: str
    date: dt.date
    gend: str
    age: int
    insutype: str
    med_type: str
    level: str


def _restrictions(item: CatalogItem, line: FeeLine, ctx: SplitContext) -> list[tuple[str, str]]:
    """Reasons (zh, en) the item is not payable for this person and visit."""
    reasons: list[tuple[str, str]] = []
    if item.lmt_insutypes is not None and ctx.insutype not in item.lmt_insutypes:
        allowed = "/".join(sorted(item.lmt_insutypes))
        reasons.append(
            (
                f"限险种 {allowed} 支付, 本次险种 {ctx.insutype}",
                f"payable only by insutype {allowed}, not {ctx.insutype}",
            )
        )
    if item.lmt_gend is not None and ctx.gend != item.lmt_gend:
        want, have = _GENDER[item.lmt_gend], _GENDER.get(ctx.gend, ("?", "?"))
        reasons.append((f"限{want[0]}性使用, 参保人性别{have[0]}", f"{want[1]} only; the insured person is {have[1]}"))
    if item.lmt_age_min is not None and ctx.age < item.lmt_age_min:
        reasons.append(
            (
                f"限 {item.lmt_age_min} 岁及以上, 参保人 {ctx.age} 岁",
                f"age {item.lmt_age_min}+ only; the person is {ctx.age}",
            )
        )
    if item.lmt_age_max is not None and ctx.age > item.lmt_age_max:
        reasons.append(
            (
                f"限 {item.lmt_age_max} 岁及以下, 参保人 {ctx.age} 岁",
                f"age {item.lmt_age_max} or under only; the person is {ctx.age}",
            )
        )
    if item.lmt_hosp_lv_min is not None and LEVEL_RANK.get(ctx.level, 0) < LEVEL_RANK[item.lmt_hosp_lv_min]:
        reasons.append(
            (
                f"限{item.min_level_name}及以上医疗机构使用",
                f"only at {item.lmt_hosp_lv_min.replace('_', '-')} institutions or above",
            )
        )
    if item.lmt_med_types is not None and ctx.med_type not in item.lmt_med_types:
        allowed = "/".join(sorted(item.lmt_med_types))
        reasons.append(
            (f"限医疗类别 {allowed}, 本次 {ctx.med_type}", f"only for med_type {allowed}, not {ctx.med_type}")
        )
    if item.lmt_course_days is not None and line.course_day is not None and line.course_day > item.lmt_course_days:
        reasons.append(
            (
                f"限支付 {item.lmt_course_days} 天, 本次为第 {line.course_day} 天",
                f"paid for at most {item.lmt_course_days} days; this is day {line.course_day}",
            )
        )
    if item.lmt_indication and line.hosp_appr_flag == "0":
        reasons.append(("医院标记不符合限定支付范围", "the hospital marked the restricted-use condition as not met"))
    return reasons


def _conflicts(line: FeeLine, item: CatalogItem) -> tuple[str, ...]:
    """Warnings where the line's own class attributes disagree with the catalogue."""
    found = []
    if line.chrgitm_lv is not None and line.chrgitm_lv != item.chrgitm_lv:
        found.append(f"行 chrgitm_lv={line.chrgitm_lv} 与目录 {item.chrgitm_lv} 不一致, 以目录为准")
    if line.selfpay_prop_bp is not None and line.selfpay_prop_bp != item.selfpay_prop_bp:
        found.append("行 selfpay_prop 与目录不一致, 以目录为准")
    if line.pric_uplmt_fen is not None and line.pric_uplmt_fen != item.pric_uplmt_fen:
        found.append("行 pric_uplmt_amt 与目录不一致, 以目录为准")
    return tuple(found)


#: Classes to which a self-pay-first ratio (先行自付比例) applies: 乙类 and 可报丙类.
_SELF_PAY_FIRST_CLASSES = frozenset(("02", "04"))
_CLASS_C = ("丙类项目, 基金不予支付", "class C (丙类) item, not covered")


def split_line(line: FeeLine, ctx: SplitContext) -> LineSplit:
    code = line.hilist_code
    item = ctx.catalog.lookup(code, ctx.region, ctx.date) if code else None
    warnings: tuple[str, ...] = ()
    reasons: list[tuple[str, str]] = []
    if item is None:
        if line.chrgitm_lv is None:
            assert code is not None
            where = "目录中无此编码" if code not in ctx.catalog else f"该编码在 {ctx.date} 不在目录有效期内"
            raise RequestError(f"feedetail[{line.position}].hilist_code", f"{where}: {code}", code="UNKNOWN_CODE")
        lv = line.chrgitm_lv
        prop = line.selfpay_prop_bp if line.selfpay_prop_bp is not None else 0
        cap = line.pric_uplmt_fen
    else:
        if line.chrgitm_lv is not None or line.selfpay_prop_bp is not None or line.pric_uplmt_fen is not None:
            warnings = _conflicts(line, item)
        lv, prop, cap = item.chrgitm_lv, item.selfpay_prop_bp, item.pric_uplmt_fen
        if item.restricted:
            reasons = _restrictions(item, line, ctx)
    amount = line.amount_fen
    if prop and lv not in _SELF_PAY_FIRST_CLASSES:
        # 甲类 has no 先行自付 (domain.md §2), whatever ratio a line or row carries.
        warnings = (*warnings, f"{lv} 类项目不设先行自付比例, 已按 0 计算")
        prop = 0
    if lv == "03":
        reasons.insert(0, _CLASS_C)
    if reasons:
        return LineSplit(line, item, lv, cap, prop, amount, 0, 0, 0, tuple(reasons), warnings)
    overlmt = 0
    if cap is not None and line.pric_micro > cap * 10_000:
        # 超限价: the part of the price above the cap, for the line's quantity.
        overlmt = max(0, amount - round_div_half_up(cap * line.cnt_units, 10_000))
        warnings = (*warnings, f"单价超过限价 {format_fen(cap)} 元")
    within_cap = amount - overlmt
    # apply_bp inlined: this runs for every line of every bill.
    preselfpay = (within_cap * prop * 2 + BP_ONE) // (2 * BP_ONE) if prop else 0
    assert 0 <= preselfpay <= within_cap <= amount
    return LineSplit(line, item, lv, cap, prop, 0, overlmt, preselfpay, within_cap - preselfpay, (), warnings)
