"""Semantic checks of a resolved policy, as small pure functions.

Each check yields ``(key path, reason)`` pairs; the store turns the first into a
:class:`~yibao.errors.PolicyError` naming the file that defined that key.
Structural checks (types, unknown keys, ratio ranges, band order) live in the
model itself; these are the ones that need the whole policy in view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .model import FIELD_ORDER, Conditions, FundRule, PolicyParams, Table

__all__ = ["CHECKS", "run_checks"]

Problem = tuple[str, str]


def _conditions_in(rule: FundRule, path: str) -> Iterator[tuple[str, Conditions]]:
    def table(t: Table[object] | None, at: str) -> Iterator[tuple[str, Conditions]]:
        if t is not None:
            for i, row in enumerate(t.rows):
                yield f"{at}[{i}]", row

    if rule.when is not None:
        yield f"{path}.when", rule.when
    if rule.deductible is not None:
        yield from table(rule.deductible.amount_fen, f"{path}.deductible.amount_yuan")  # type: ignore[arg-type]
        yield from table(rule.deductible.factor, f"{path}.deductible.factor")  # type: ignore[arg-type]
    yield from table(rule.ratio, f"{path}.ratio")  # type: ignore[arg-type]
    for i, band in enumerate(rule.bands):
        yield from table(band.ratio, f"{path}.bands[{i}].ratio")  # type: ignore[arg-type]
    for i, adj in enumerate(rule.adjustments):
        yield f"{path}.adjustments[{i}].when", adj.when
    for i, cap in enumerate(rule.caps):
        yield from table(cap.amount_fen, f"{path}.caps[{i}].amount_yuan")  # type: ignore[arg-type]


def _all_rules(params: PolicyParams) -> Iterator[tuple[str, str, FundRule]]:
    for insutype, scheme in params.schemes.items():
        for name, benefit in scheme.benefits.items():
            yield insutype, f"schemes.{insutype}.benefits.{name}.fund", benefit.fund
        for i, layer in enumerate(scheme.layers):
            yield insutype, f"schemes.{insutype}.layers[{i}]", layer


def check_vocabulary(params: PolicyParams) -> Iterator[Problem]:
    """Conditions may only name declared person categories, levels and identities."""
    persons = set(params.person_categories.values())
    levels = set(params.level_groups.values())
    identities = set(params.identities)
    offsite = {"local", "long_term", "referral", "emergency", "temporary", "unfiled"}
    for _, path, rule in _all_rules(params):
        for at, cond in _conditions_in(rule, path):
            for key, known in (
                ("person", persons),
                ("level", levels),
                ("identity", identities),
                ("offsite", offsite),
                ("psn_type", set(params.person_categories)),
                ("hosp_lv", set(params.level_groups)),
            ):
                for value in getattr(cond, key) or ():
                    if value not in known:
                        yield f"{at}.{key}", f"unknown value {value!r} (known: {', '.join(sorted(known))})"


def check_med_types_unique(params: PolicyParams) -> Iterator[Problem]:
    """Within a scheme, a med_type selects exactly one benefit."""
    for insutype, scheme in params.schemes.items():
        seen: dict[str, str] = {}
        for name, benefit in scheme.benefits.items():
            for med_type in benefit.med_types:
                if med_type in seen:
                    yield (
                        f"schemes.{insutype}.benefits.{name}.med_types",
                        f"med_type {med_type} is already covered by benefit {seen[med_type]!r}",
                    )
                seen[med_type] = name


def check_layers(params: PolicyParams) -> Iterator[Problem]:
    """Layers follow the one-stop order, name existing benefits, and pay after the pool."""
    for insutype, scheme in params.schemes.items():
        last = 0
        names: set[str] = set()
        for i, layer in enumerate(scheme.layers):
            path = f"schemes.{insutype}.layers[{i}]"
            if layer.field == "hifp_pay":
                yield f"{path}.field", "hifp_pay is the basic pooled fund of each benefit, not a layer"
            if layer.base == "inscope":
                yield f"{path}.base", "a layer pays on 'over_cap' or 'remaining', not 'inscope'"
            order = FIELD_ORDER[layer.field]
            if order < last:
                yield f"{path}.field", f"{layer.field} must come before the layers above it (一站式 order)"
            last = max(last, order)
            if layer.name in names or layer.name in scheme.benefits:
                yield f"{path}.name", f"name {layer.name!r} is used twice"
            names.add(layer.name)
            for named in layer.benefits:
                if named not in scheme.benefits:
                    yield f"{path}.benefits", f"unknown benefit {named!r}"
        for name, benefit in scheme.benefits.items():
            path = f"schemes.{insutype}.benefits.{name}.fund"
            if benefit.fund.field != "hifp_pay":
                yield f"{path}.field", "a benefit's basic fund pays into hifp_pay"
            if benefit.fund.base != "inscope":
                yield f"{path}.base", "a benefit's basic fund pays on 'inscope'"


def check_relations(params: PolicyParams) -> Iterator[Problem]:
    """家庭共济 may only name declared relations."""
    for insutype, scheme in params.schemes.items():
        for relation in scheme.account.family.relations:
            if relation not in params.relations:
                yield (
                    f"schemes.{insutype}.account.family.relations",
                    f"unknown relation {relation!r} (declare it under 'relations')",
                )


def check_codes(params: PolicyParams) -> Iterator[Problem]:
    """Code-table keys look like codes: insutype 3 digits, hosp_lv 2 digits."""
    for insutype in params.schemes:
        if not (insutype.isdigit() and len(insutype) == 3):
            yield f"schemes.{insutype}", "scheme keys are 3-digit insutype codes (310, 390 …)"
    for hosp_lv in params.level_groups:
        if not (hosp_lv.isdigit() and len(hosp_lv) == 2):
            yield f"level_groups.{hosp_lv}", "hosp_lv codes are 2 digits (01 … 14)"


CHECKS: tuple[Callable[[PolicyParams], Iterator[Problem]], ...] = (
    check_codes,
    check_vocabulary,
    check_med_types_unique,
    check_layers,
    check_relations,
)


def run_checks(params: PolicyParams) -> list[Problem]:
    return [problem for check in CHECKS for problem in check(params)]
