"""The settlement trace: every amount linked to its rule, parameter and source.

Steps are recorded as structured data while settling (cheap) and rendered into
plain Chinese or English only when someone reads them. Argument names carry
their unit: ``*_fen`` is money, ``*_bp`` a ratio; rendering formats by suffix.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from ..money import format_fen
from ..policy import Source
from ..policy.model import Adjustment, Conditions

__all__ = ["Lang", "TraceStep", "render", "step_to_json"]

Lang = Literal["zh", "en"]

PERSON_NAMES = {
    "in_service": ("在职职工", "employee in service"),
    "retired": ("退休人员", "retiree"),
    "lixiu": ("离休人员", "pre-1949 retiree (离休)"),
    "resident": ("城乡居民", "resident"),
    "student": ("中小学生", "pupil"),
    "child": ("少年儿童", "child"),
}
LEVEL_NAMES = {
    "level_1": ("一级医院", "level-1 hospital"),
    "level_2": ("二级医院", "level-2 hospital"),
    "level_3": ("三级医院", "level-3 hospital"),
    "unrated": ("无等级机构", "unrated institution"),
    "pharmacy": ("定点药店", "pharmacy"),
}
OFFSITE_NAMES = {
    "local": ("本地就医", "local care"),
    "long_term": ("异地长期居住备案", "off-site, long-term residence filing"),
    "referral": ("异地转诊备案", "off-site, referral filing"),
    "emergency": ("异地急诊", "off-site emergency"),
    "temporary": ("异地临时外出", "off-site, temporary trip"),
    "unfiled": ("异地未备案", "off-site without filing"),
}


class TraceStep(NamedTuple):
    """One explained fact of a settlement."""

    kind: str
    fund: str
    amount_fen: int | None
    rule: str | None
    source: Source | None
    args: Mapping[str, Any]


def _pct(bp: int) -> str:
    """Basis points as a short percentage: 6500 -> "65%", 8750 -> "87.5%"."""
    sign = "-" if bp < 0 else ""
    whole, frac = divmod(abs(bp), 100)
    return f"{sign}{whole}%" if frac == 0 else f"{sign}{whole}.{frac:02d}".rstrip("0") + "%"


def _adjustment(adj: Adjustment, lang: Lang) -> str:
    """ "; 70岁及以上 +5 个百分点" — a point adjustment that applied to a ratio."""
    label = adj.title or describe_conditions(adj.when, lang)
    points = _pct(adj.points).rstrip("%")
    sign = "+" if adj.points >= 0 else ""
    return f"; {label} {sign}{points} 个百分点" if lang == "zh" else f"; {label} {sign}{points} points"


#: Wordings already made, by the id of their (immutable, long-lived) policy object; the
#: object is kept beside its text so a recycled id never matches.
_WORDINGS: dict[tuple[int, str], tuple[Conditions, str]] = {}


def describe_conditions(cond: Conditions | None, lang: Lang) -> str:
    """Human wording of a table row's conditions: "三级医院、退休人员"."""
    if cond is None:
        return "一般情形" if lang == "zh" else "general case"
    cached = _WORDINGS.get((id(cond), lang))
    if cached is not None and cached[0] is cond:
        return cached[1]
    text = _describe(cond, lang)
    if len(_WORDINGS) < 4096:  # policies hold a bounded number of condition rows
        _WORDINGS[(id(cond), lang)] = (cond, text)
    return text


def _describe(cond: Conditions, lang: Lang) -> str:
    if cond.is_empty():
        return "一般情形" if lang == "zh" else "general case"
    zh = lang == "zh"
    parts: list[str] = []
    for value in cond.level or ():
        parts.append(LEVEL_NAMES.get(value, (value, value))[0 if zh else 1])
    for value in cond.person or ():
        parts.append(PERSON_NAMES.get(value, (value, value))[0 if zh else 1])
    if cond.psn_type:
        parts.append(("人员类别 " if zh else "person type ") + "/".join(cond.psn_type))
    if cond.hosp_lv:
        parts.append(("医院等级 " if zh else "hosp_lv ") + "/".join(cond.hosp_lv))
    for value in cond.offsite or ():
        parts.append(OFFSITE_NAMES.get(value, (value, value))[0 if zh else 1])
    if cond.identity:
        parts.append(("身份 " if zh else "identity ") + "/".join(cond.identity))
    if cond.med_type:
        parts.append(("医疗类别 " if zh else "med_type ") + "/".join(cond.med_type))
    if cond.age_min is not None and cond.age_max is not None:
        parts.append(f"{cond.age_min}–{cond.age_max}岁" if zh else f"aged {cond.age_min}–{cond.age_max}")
    elif cond.age_min is not None:
        parts.append(f"{cond.age_min}岁及以上" if zh else f"aged {cond.age_min}+")
    elif cond.age_max is not None:
        parts.append(f"{cond.age_max}岁及以下" if zh else f"aged {cond.age_max} or under")
    if cond.ordinal_min is not None:
        parts.append(f"年内第{cond.ordinal_min}次起" if zh else f"from visit {cond.ordinal_min} of the year")
    if cond.ordinal_max is not None:
        parts.append(f"年内第{cond.ordinal_max}次止" if zh else f"up to visit {cond.ordinal_max} of the year")
    return ("、" if zh else ", ").join(parts)


def _fmt_args(args: Mapping[str, Any], lang: Lang) -> dict[str, str]:
    common, zh, en = _fmt_split(args)
    return {**common, **(zh if lang == "zh" else en)}


def _fmt_split(args: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The arguments as text: (the same in both languages, Chinese only, English only)."""
    common: dict[str, str] = {}
    zh: dict[str, str] = {}
    en: dict[str, str] = {}
    for key, value in args.items():
        if key.endswith("_fen") and isinstance(value, int):
            common[key] = format_fen(value)
        elif key.endswith("_fen") and value is None:
            zh[key], en[key] = "不设上限", "no cap"
        elif key.endswith("_bp") and isinstance(value, int):
            common[key] = _pct(value)
        elif isinstance(value, Conditions):
            zh[key], en[key] = describe_conditions(value, "zh"), describe_conditions(value, "en")
        elif key == "reasons":
            zh[key], en[key] = "; ".join(pair[0] for pair in value), "; ".join(pair[1] for pair in value)
        elif key == "adjust":
            zh[key] = "".join(_adjustment(adj, "zh") for adj in value)
            en[key] = "".join(_adjustment(adj, "en") for adj in value)
        else:
            common[key] = "" if value is None else str(value)
    return common, zh, en


# kind -> (Chinese template, English template); placeholders are argument names.
TEMPLATES: dict[str, tuple[str, str]] = {
    "policy": (
        "按参保地{region_name}({region})政策结算, 险种{scheme}, 待遇「{benefit}」, 政策版本 {version}。",
        "Settled under the policy of {region_name} ({region}), scheme {scheme}, benefit '{benefit}', "
        "policy version {version}.",
    ),
    "offsite": ("就医地 {mdtrtarea}: {offsite_name}。", "Treated in {mdtrtarea}: {offsite_name}."),
    "gate": ("{message_zh}", "{message_en}"),
    "split": (
        "费用总额 {total_fen} 元, 其中全自费 {fulamt_fen} 元、超限价 {overlmt_fen} 元、"
        "乙类先行自付 {preselfpay_fen} 元, 符合政策范围 {inscp_fen} 元。",
        "Bill total {total_fen}: fully self-paid {fulamt_fen}, above price caps {overlmt_fen}, "
        "self-pay-first {preselfpay_fen}, within policy scope {inscp_fen}.",
    ),
    "line": (
        "第{sn}项「{name}」{amount_fen} 元: 全自费 — {reasons}",
        "Line {sn} '{name}' {amount_fen}: fully self-paid — {reasons}",
    ),
    "account_first": (
        "当年账户先行支付政策范围内费用 {amount_fen} 元, 其余 {rest_fen} 元进入起付及共付计算。",
        "The current-year account pays {amount_fen} of in-scope costs first; {rest_fen} goes on to the "
        "deductible and co-pay stages.",
    ),
    "not_applicable": (
        "{title}: 本次不适用 (仅限{cond})。",
        "{title}: does not apply (only for {cond}).",
    ),
    "deductible": (
        "{title}: 起付线标准 {standard_fen} 元 ({row}), 年内已付 {paid_fen} 元, 本次负担起付线 {amount_fen} 元。",
        "{title}: deductible {standard_fen} ({row}), already borne this year {paid_fen}, borne now {amount_fen}.",
    ),
    "deductible_visit": (
        "{title}: 年内第{ordinal}次就医, 起付线 {standard_fen} 元 ({row}), 本次负担起付线 {amount_fen} 元。",
        "{title}: visit {ordinal} of the year, deductible {standard_fen} ({row}), borne now {amount_fen}.",
    ),
    "band": (
        "{title}: {portion_fen} 元按 {ratio_bp} 支付 ({row}{adjust})。",
        "{title}: {portion_fen} paid at {ratio_bp} ({row}{adjust}).",
    ),
    "cap": (
        "{title}: 年度最高支付限额 {limit_fen} 元, 年内已支付 {used_fen} 元, 本次最多可付 {left_fen} 元; "
        "超出限额的 {over_fen} 元政策范围内费用由后续保障或个人承担。",
        "{title}: annual cap {limit_fen}, already paid {used_fen}, at most {left_fen} now; {over_fen} of "
        "in-scope cost above the cap goes to later layers or the person.",
    ),
    "fund": (
        "{title}支付 {amount_fen} 元 (计算基数 {base_fen} 元)。",
        "{title} pays {amount_fen} (on a base of {base_fen}).",
    ),
    "person": (
        "基金共支付 {fund_fen} 元, 个人负担 {amount_fen} 元。",
        "Funds pay {fund_fen} in total; the person bears {amount_fen}.",
    ),
    "account": (
        "个人账户支付 {amount_fen} 元 (当年账户 {current_fen} 元, 历年账户 {historical_fen} 元), "
        "支付后余额 {balance_fen} 元。",
        "Personal account pays {amount_fen} (current-year {current_fen}, historical {historical_fen}); "
        "balance after {balance_fen}.",
    ),
    "account_limit": ("{why_zh}", "{why_en}"),
    "family": (
        "家庭共济: {relation_zh}({psn_no})的个人账户支付 {amount_fen} 元。",
        "Family mutual aid: the account of {relation_en} ({psn_no}) pays {amount_fen}.",
    ),
    "family_skip": (
        "家庭共济: {relation_zh}({psn_no})的账户不能支付 — {why_zh}。",
        "Family mutual aid: the account of {relation_en} ({psn_no}) cannot pay — {why_en}.",
    ),
    "cash": ("现金支付 {amount_fen} 元。", "Cash payment {amount_fen}."),
}


def render(step: TraceStep, lang: Lang = "zh") -> str:
    return _render(step, _fmt_args(step.args, lang), lang)


def _render(step: TraceStep, args: dict[str, str], lang: Lang) -> str:
    template = TEMPLATES[step.kind][0 if lang == "zh" else 1]
    if step.amount_fen is not None:
        args.setdefault("amount_fen", format_fen(step.amount_fen))
    return template.format_map(args)


@functools.lru_cache(maxsize=4096)
def _source_json(source: Source | None) -> dict[str, Any] | None:
    # Sources belong to a loaded policy version and never change: each is described once.
    if source is None:
        return None
    ref = source.reference
    return {
        "file": source.file,
        "key": f"policy.{source.key}",
        "effective_from": source.effective_from.isoformat() if source.effective_from else None,
        "reference": None
        if ref is None
        else {"key": ref.key, "title": ref.title, "url": ref.url, "status": ref.status},
    }


def step_to_json(step: TraceStep) -> dict[str, Any]:
    common, zh_only, en_only = _fmt_split(step.args)
    zh = {**common, **zh_only}
    args = {k: v for k, v in zh.items() if not k.endswith(("_zh", "_en"))}
    return {
        "kind": step.kind,
        "fund": step.fund,
        "amount": None if step.amount_fen is None else format_fen(step.amount_fen),
        "rule": f"policy.{step.rule}" if step.rule else None,
        "source": _source_json(step.source),
        "args": args,
        "text": {"zh": _render(step, zh, "zh"), "en": _render(step, {**common, **en_only}, "en")},
    }
