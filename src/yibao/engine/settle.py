"""The settlement computation: request + policy + catalogue -> result.

Pure: no I/O, no clock, no randomness. Pre-settlement (2206/2303) and settlement
(2207/2304) call the same function; only the caller decides whether to commit.
Order (一站式结算, domain.md §3–§5): split lines → gates → account-first stage if
the policy has one → basic pooled fund → further layers → personal account (own,
then 家庭共济) → cash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..catalog import Catalog
from ..errors import Reason, RequestError, SettlementRefused
from ..policy import Policy, PolicyStore
from ..policy.model import AccountRules, Benefit, Facts, Layer, Scheme
from .funds import FundOutcome, compute_fund, counter_keys
from .request import SettlementRequest
from .result import FUND_FIELDS, AccountDraw, FundDetail, SettlementResult, check_identities
from .split import LineSplit, SplitContext, split_line
from .trace import OFFSITE_NAMES, TraceStep

__all__ = ["Engine", "scheme_counters", "settle"]


@dataclass(frozen=True, slots=True)
class Engine:
    """Policies and catalogue loaded once; :meth:`settle` is then a pure function."""

    policies: PolicyStore
    catalog: Catalog

    def settle(self, request: SettlementRequest) -> SettlementResult:
        return settle(self.policies, self.catalog, request)


class _Plan(NamedTuple):
    """What a (scheme, med_type) settles under, worked out once per policy version."""

    benefit_name: str
    benefit: Benefit
    policy_step: TraceStep
    pool_path: str
    layers: tuple[tuple[Layer, str], ...]
    visit_key: str


def _make_plan(policy: Policy, scheme: Scheme, insutype: str, med_type: str) -> _Plan:
    found = next(((n, b) for n, b in scheme.benefits.items() if med_type in b.med_types), None)
    if found is None:
        raise SettlementRefused(
            (Reason("MED_TYPE_NOT_COVERED", f"险种 {insutype} 在参保地无医疗类别 {med_type} 的待遇"),)
        )
    name, benefit = found
    step = TraceStep(
        "policy", "", None, f"schemes.{insutype}.benefits.{name}", None,
        {"region_name": policy.name, "region": policy.region, "scheme": f"{insutype} {scheme.title}",
         "benefit": benefit.title, "version": policy.version},
    )  # fmt: skip
    layers = tuple(
        (layer, f"schemes.{insutype}.layers[{i}]") for i, layer in enumerate(scheme.layers) if name in layer.benefits
    )
    return _Plan(name, benefit, step, f"schemes.{insutype}.benefits.{name}.fund", layers, f"{name}.visit_cnt")


def scheme_counters(policy: Policy, insutype: str) -> frozenset[str]:
    """The year-to-date counters the rules of ``insutype`` in ``policy`` read and write (once per policy)."""
    known: frozenset[str] | None = policy.derived.get(("counters", insutype))
    if known is None:
        scheme = policy.scheme(insutype)
        known = policy.derived[("counters", insutype)] = counter_keys(scheme) if scheme is not None else frozenset()
    return known


def _known_counters(policy: Policy, req: SettlementRequest) -> None:
    """A year-to-date key no rule of the scheme reads would be counted as zero: refuse it, listing the valid ones."""
    known = scheme_counters(policy, req.insutype)
    for key in req.accumulators:
        if key not in known:
            raise RequestError(
                f"accumulators.values.{key}",
                f"险种 {req.insutype} 的政策没有该累计项; 可用: {', '.join(sorted(known))}",
                code="UNKNOWN_CODE",
            )


def _gate(code: str, zh: str, en: str) -> TraceStep:
    return TraceStep("gate", "", None, None, None, {"code": code, "message_zh": zh, "message_en": en})


def settle(store: PolicyStore, catalog: Catalog, req: SettlementRequest) -> SettlementResult:
    """Compute the settlement of ``req``; raises RequestError / SettlementRefused."""
    policy = store.resolve(req.insuplc_admdvs, req.service_date)
    params = policy.params
    scheme = policy.scheme(req.insutype)
    if scheme is None:
        raise RequestError("insutype", f"参保地 {policy.region} 政策未定义险种 {req.insutype}", code="UNKNOWN_INSUTYPE")
    plan = policy.derived.get((req.insutype, req.med_type))
    if plan is None:
        plan = policy.derived[(req.insutype, req.med_type)] = _make_plan(policy, scheme, req.insutype, req.med_type)
    benefit_name, benefit = plan.benefit_name, plan.benefit
    if req.accumulators:
        _known_counters(policy, req)
    person = params.person_categories.get(req.psn_type)
    if person is None:
        raise RequestError("psn_type", f"参保地政策未定义人员类别 {req.psn_type}", code="UNKNOWN_CODE")
    level = params.level_groups.get(req.hosp_lv)
    if level is None:
        raise RequestError("hosp_lv", f"参保地政策未定义医疗机构等级 {req.hosp_lv}", code="UNKNOWN_CODE")
    if req.identities and not req.identities.issubset(params.identities):
        unknown_ids = sorted(req.identities.difference(params.identities))
        raise RequestError("psn_idet_types", f"参保地政策未定义人员身份 {unknown_ids[0][:40]!r}", code="UNKNOWN_CODE")
    local = store.find_region(req.mdtrtarea_admvs) == policy.region
    offsite = "local" if local else (req.offsite_filing or "unfiled")
    facts = Facts(
        person=person, psn_type=req.psn_type, level=level, hosp_lv=req.hosp_lv, age=req.age,
        identities=req.identities, offsite=offsite, med_type=req.med_type,
    )  # fmt: skip
    steps: list[TraceStep] = [plan.policy_step]
    if offsite != "local":
        where = {"mdtrtarea": req.mdtrtarea_admvs, "offsite_name": OFFSITE_NAMES[offsite][0]}
        steps.append(TraceStep("offsite", "", None, None, None, where))

    # Gates the engine can decide from its input (domain.md §7).
    gates: list[tuple[str, str]] = []
    refusals: list[Reason] = []
    no_fund = False
    if offsite == "unfiled":
        action = scheme.gates.offsite_unfiled
        message = f"异地就医未备案 (参保地 {req.insuplc_admdvs}, 就医地 {req.mdtrtarea_admvs})"
        if action == "refuse":
            refusals.append(Reason("OFFSITE_UNFILED", message + ", 不能直接结算, 可回参保地手工报销"))
        elif action == "no_fund":
            no_fund = True
            gates.append(("OFFSITE_UNFILED", message + ", 基金不予直接支付, 可回参保地手工报销"))
            steps.append(_gate("OFFSITE_UNFILED", gates[-1][1], "Off-site care without filing: no fund pays directly; "
                               "apply for manual reimbursement at the insuring region."))  # fmt: skip
    if benefit.requires_disease_filing:
        filed = req.dise_codg is not None and req.dise_codg in req.disease_filings
        if not filed:
            what = f"病种 {req.dise_codg}" if req.dise_codg else "病种编码 (dise_codg) 缺失"
            message = f"{benefit.title}须先办理病种备案: {what} 未备案"
            if scheme.gates.disease_filing_missing == "refuse":
                refusals.append(Reason("DISEASE_NOT_FILED", message))
            else:
                no_fund = True
                gates.append(("DISEASE_NOT_FILED", message + ", 基金不予支付"))
                steps.append(_gate("DISEASE_NOT_FILED", gates[-1][1], "No disease filing: no fund pays."))
    if refusals:
        raise SettlementRefused(tuple(refusals))

    # 1. Lines.
    ctx = SplitContext(catalog, req.mdtrtarea_admvs, req.service_date, req.gend, req.age, req.insutype,
                       req.med_type, level)  # fmt: skip
    split_lines: list[LineSplit] = []
    total = fulamt = overlmt = preself = inscp = 0
    warnings: list[str] = []
    keep = split_lines.append  # bound once: this loop runs for every line of every bill
    for line in req.lines:
        s = split_line(line, ctx)
        keep(s)
        # Unpacked positionally: named NamedTuple access costs a descriptor call per field.
        _, _, _, _, _, line_fulamt, line_overlmt, line_preself, line_inscp, reasons, line_warnings = s
        total += line.amount_fen
        fulamt += line_fulamt
        overlmt += line_overlmt
        preself += line_preself
        inscp += line_inscp
        if reasons:
            steps.append(_line_step(s))
        if line_warnings:
            warnings.extend(f"feedetail[{line.position}]: {w}" for w in line_warnings)
    lines = tuple(split_lines)
    steps.append(TraceStep("split", "", None, None, None,
                           {"total_fen": total, "fulamt_fen": fulamt, "overlmt_fen": overlmt,
                            "preselfpay_fen": preself, "inscp_fen": inscp}))  # fmt: skip

    # 2. Account-first stage (e.g. 上海 当年账户) before any fund.
    account = scheme.account
    use_account = req.acct_used_flag and account.enabled
    balances = {"current_year": req.current_year_fen, "historical": req.historical_fen}
    prepaid = 0
    paid_from = dict.fromkeys(balances, 0)
    if use_account and benefit.account_first is not None and inscp:
        for source in benefit.account_first.sources:
            take = min(balances[source], inscp - prepaid)
            balances[source] -= take
            paid_from[source] += take
            prepaid += take
        if prepaid:
            key = f"schemes.{req.insutype}.benefits.{benefit_name}.account_first"
            steps.append(TraceStep("account_first", "", prepaid, key, policy.source_for(key),
                                   {"rest_fen": inscp - prepaid}))  # fmt: skip

    # 3. Funds: the basic pool, then the layers in one-stop order.
    funds = dict.fromkeys(FUND_FIELDS, 0)
    details: list[FundDetail] = []
    delta: dict[str, int] = {}
    running = dict(req.accumulators)
    if req.continues_visit:
        # The same admission settled again (中途结算): no new visit, the same ordinal.
        ordinal = max(1, running.get(plan.visit_key, 0))
    else:
        ordinal = running.get(plan.visit_key, 0) + 1
        delta[plan.visit_key] = 1
    dedc = ratio = 0
    if not no_fund:
        base = inscp - prepaid
        pool = compute_fund(
            benefit.fund, plan.pool_path, benefit_name, base, facts, ordinal, running, policy, req.visit_dedc_paid_fen
        )
        _absorb(pool, funds, details, delta, running, steps)
        dedc, ratio = pool.dedc_fen, pool.ratio_bp
        remaining = base - pool.pay_fen
        overflow = pool.overflow_fen
        for layer, layer_path in plan.layers:
            if remaining == 0:
                continue
            layer_base = min(overflow, remaining) if layer.base == "over_cap" else remaining
            out = compute_fund(layer, layer_path, layer.name, layer_base, facts, ordinal, running, policy)
            if not out.applied:
                steps.extend(out.steps)
                continue
            _absorb(out, funds, details, delta, running, steps)
            remaining -= out.pay_fen
            if layer.base == "over_cap":
                overflow -= min(overflow, out.pay_fen)
    fund_sum = sum(funds.values())
    hosp_part = 0
    psn_part = total - fund_sum - hosp_part
    steps.append(TraceStep("person", "", psn_part, None, None, {"fund_fen": fund_sum}))

    # 4. Personal account (own, then 家庭共济), only for the person's share.
    acct_own = acct_family = 0
    family_payments: list[AccountDraw] = []
    # A resident has no account of their own (account.enabled false), yet a bound relative's
    # account may still pay their share when the scheme's family rules allow it.
    if req.acct_used_flag and (account.enabled or account.family.enabled):
        payable = psn_part - prepaid
        if not account.pays_fulamt_ownpay:
            payable -= fulamt
        if not account.pays_overlmt:
            payable -= overlmt
        payable = max(0, payable)
        if use_account:
            for source in account.sources:
                take = min(balances[source], payable - acct_own)
                balances[source] -= take
                paid_from[source] += take
                acct_own += take
            key = f"schemes.{req.insutype}.account"
            steps.append(TraceStep("account", "", acct_own + prepaid, key, policy.source_for(key),
                                   {"current_fen": paid_from["current_year"],
                                    "historical_fen": paid_from["historical"],
                                    "balance_fen": balances["current_year"] + balances["historical"]}))  # fmt: skip
        if payable > acct_own:
            acct_family, family_payments = _family(req, store, policy, account, payable - acct_own, steps)
    acct_pay = prepaid + acct_own + acct_family
    cash = psn_part - acct_pay
    steps.append(TraceStep("cash", "", cash, None, None, {}))
    result = SettlementResult(
        request_psn_no=req.psn_no, insutype=req.insutype, psn_type=req.psn_type, med_type=req.med_type,
        clr_type=benefit.clr_type, insuplc_admdvs=req.insuplc_admdvs, mdtrtarea_admvs=req.mdtrtarea_admvs,
        setl_id=req.setl_id, mdtrt_id=req.mdtrt_id, benefit=benefit_name,
        medfee_sumamt=total, fulamt_ownpay_amt=fulamt, overlmt_selfpay=overlmt, preselfpay_amt=preself,
        inscp_scp_amt=inscp, act_pay_dedc=dedc, pool_prop_selfpay=ratio, funds=funds,
        fund_pay_sumamt=fund_sum, psn_part_amt=psn_part, acct_pay=acct_pay, acct_mulaid_pay=acct_family,
        psn_cash_pay=cash, hosp_part_amt=hosp_part, balc=balances["current_year"] + balances["historical"],
        details=tuple(details), lines=lines, family_payments=tuple(family_payments),
        own_draw=AccountDraw(req.psn_no, paid_from["current_year"], paid_from["historical"]),
        accumulators_before=req.accumulators, accumulators_delta=delta, year=req.year,
        policy_version=policy.version, policy_region=policy.region, gates=tuple(gates),
        warnings=tuple(warnings), trace=tuple(steps),
    )  # fmt: skip
    check_identities(result)
    return result


def _absorb(
    out: FundOutcome,
    funds: dict[str, int],
    details: list[FundDetail],
    delta: dict[str, int],
    running: dict[str, int],
    steps: list[TraceStep],
) -> None:
    """Fold one fund's outcome into the settlement being built."""
    funds[out.field] += out.pay_fen
    details.append(
        FundDetail(out.fund_pay_type, out.title, out.base_fen, out.limit_left_fen, out.pay_fen, tuple(out.steps))
    )
    for key, value in out.deltas.items():
        delta[key] = delta.get(key, 0) + value
        running[key] = running.get(key, 0) + value
    steps.extend(out.steps)


def _line_step(s: LineSplit) -> TraceStep:
    # The reasons are worded only when the trace is read.
    args = {"sn": s.line.feedetl_sn, "name": s.hilist_name or s.hilist_code or "", "reasons": s.reasons}
    return TraceStep("line", "", s.fulamt_ownpay_fen, None, None, args)


def _family(
    req: SettlementRequest,
    store: PolicyStore,
    policy: Policy,
    account: AccountRules,
    need: int,
    steps: list[TraceStep],
) -> tuple[int, list[AccountDraw]]:
    """家庭共济: bound relatives' accounts top up what the own account could not pay."""
    rules = account.family
    relations = policy.params.relations
    paid = 0
    payments: list[AccountDraw] = []
    used = 0
    key = f"schemes.{req.insutype}.account.family"
    for rel in req.family:
        if paid >= need:
            break
        name_zh = relations.get(rel.relation, rel.relation)
        why = None
        if not rules.enabled:
            why = ("参保地未开通家庭共济", "the insuring region has no family mutual aid")
        elif rel.relation not in rules.relations:
            why = (f"参保地政策不允许{name_zh}共济", f"relation {rel.relation} is not allowed by the policy")
        elif rules.same_region and store.find_region(rel.insuplc_admdvs) != policy.region:
            why = ("须同一统筹区参保", "both must be insured in the same pooling region")
        elif rules.max_members is not None and used >= rules.max_members:
            why = (f"共济人数已达上限 {rules.max_members}", f"at most {rules.max_members} relatives")
        if why is not None:
            steps.append(TraceStep("family_skip", "", None, key, policy.source_for(key),
                                   {"relation_zh": name_zh, "relation_en": rel.relation, "psn_no": rel.psn_no,
                                    "why_zh": why[0], "why_en": why[1]}))  # fmt: skip
            continue
        used += 1
        drawn = {"current_year": 0, "historical": 0}
        for source in account.sources:
            balance = rel.current_year_fen if source == "current_year" else rel.historical_fen
            drawn[source] = min(balance, need - paid - sum(drawn.values()))
        take = drawn["current_year"] + drawn["historical"]
        if take:
            paid += take
            payments.append(AccountDraw(rel.psn_no, drawn["current_year"], drawn["historical"]))
            steps.append(TraceStep("family", "", take, key, policy.source_for(key),
                                   {"relation_zh": name_zh, "relation_en": rel.relation,
                                    "psn_no": rel.psn_no}))  # fmt: skip
    return paid, payments
