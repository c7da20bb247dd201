"""The settlement result: ``setlinfo`` and ``setldetail`` as in 2207's output.

Held in integer fen; :meth:`SettlementResult.to_json` renders national field
names with decimal strings. :func:`check_identities` asserts domain.md §9.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ..money import format_bp, format_fen
from .split import LineSplit
from .trace import Lang, TraceStep, render, step_to_json

__all__ = ["FUND_FIELDS", "AccountDraw", "FundDetail", "SettlementResult", "check_identities"]

#: The fund fields of ``setlinfo`` whose sum is ``fund_pay_sumamt``.
FUND_FIELDS = ("hifp_pay", "cvlserv_pay", "hifes_pay", "hifmi_pay", "hifob_pay", "maf_pay", "oth_pay")


class AccountDraw(NamedTuple):
    """What one person's account paid, by balance (当年 / 历年)."""

    psn_no: str
    current_fen: int
    historical_fen: int

    @property
    def total_fen(self) -> int:
        return self.current_fen + self.historical_fen


class FundDetail(NamedTuple):
    """One ``setldetail`` row: a fund that applied to this settlement."""

    fund_pay_type: str
    fund_pay_type_name: str
    inscp_scp_fen: int
    crt_payb_lmt_fen: int | None
    fund_payamt_fen: int
    steps: tuple[TraceStep, ...]

    @property
    def setl_proc_info(self) -> str:
        return " ".join(render(step, "zh") for step in self.steps)


class SettlementResult(NamedTuple):
    """Everything a settlement produced; amounts in fen."""

    request_psn_no: str
    insutype: str
    psn_type: str
    med_type: str
    clr_type: str
    insuplc_admdvs: str
    mdtrtarea_admvs: str
    setl_id: str | None
    mdtrt_id: str | None
    benefit: str
    medfee_sumamt: int
    fulamt_ownpay_amt: int
    overlmt_selfpay: int
    preselfpay_amt: int
    inscp_scp_amt: int
    act_pay_dedc: int
    pool_prop_selfpay: int
    funds: Mapping[str, int]
    fund_pay_sumamt: int
    psn_part_amt: int
    acct_pay: int
    acct_mulaid_pay: int
    psn_cash_pay: int
    hosp_part_amt: int
    balc: int
    details: tuple[FundDetail, ...]
    lines: tuple[LineSplit, ...]
    family_payments: tuple[AccountDraw, ...]
    own_draw: AccountDraw
    accumulators_before: Mapping[str, int]
    accumulators_delta: Mapping[str, int]
    year: int
    policy_version: str
    policy_region: str
    gates: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    trace: tuple[TraceStep, ...]

    @property
    def accumulators_after(self) -> dict[str, int]:
        after = dict(self.accumulators_before)
        for key, delta in self.accumulators_delta.items():
            after[key] = after.get(key, 0) + delta
        return after

    def explain(self, lang: Lang = "zh") -> list[str]:
        """The trace as plain sentences a patient can read."""
        return [render(step, lang) for step in self.trace]

    def setlinfo(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "setl_id": self.setl_id,
            "mdtrt_id": self.mdtrt_id,
            "psn_no": self.request_psn_no,
            "insutype": self.insutype,
            "psn_type": self.psn_type,
            "med_type": self.med_type,
            "clr_type": self.clr_type,
            "insuplc_admdvs": self.insuplc_admdvs,
            "mdtrtarea_admvs": self.mdtrtarea_admvs,
            "medfee_sumamt": format_fen(self.medfee_sumamt),
            "fulamt_ownpay_amt": format_fen(self.fulamt_ownpay_amt),
            "overlmt_selfpay": format_fen(self.overlmt_selfpay),
            "preselfpay_amt": format_fen(self.preselfpay_amt),
            "inscp_scp_amt": format_fen(self.inscp_scp_amt),
            "act_pay_dedc": format_fen(self.act_pay_dedc),
            "pool_prop_selfpay": format_bp(self.pool_prop_selfpay),
        }
        for name in FUND_FIELDS:
            info[name] = format_fen(self.funds[name])
        info.update(
            {
                "fund_pay_sumamt": format_fen(self.fund_pay_sumamt),
                "psn_part_amt": format_fen(self.psn_part_amt),
                "acct_pay": format_fen(self.acct_pay),
                "acct_mulaid_pay": format_fen(self.acct_mulaid_pay),
                "psn_cash_pay": format_fen(self.psn_cash_pay),
                "hosp_part_amt": format_fen(self.hosp_part_amt),
                "balc": format_fen(self.balc),
            }
        )
        return info

    def to_json(self, *, trace: bool = True) -> dict[str, Any]:
        steps = [step_to_json(step) for step in self.trace] if trace else []
        # A fund's setl_proc_info is its trace steps in Chinese: reuse what the trace rendered.
        zh_text = {id(step): rendered["text"]["zh"] for step, rendered in zip(self.trace, steps, strict=False)}
        out: dict[str, Any] = {
            "setlinfo": self.setlinfo(),
            "setldetail": [
                {
                    "fund_pay_type": d.fund_pay_type,
                    "fund_pay_type_name": d.fund_pay_type_name,
                    "inscp_scp_amt": format_fen(d.inscp_scp_fen),
                    "crt_payb_lmt_amt": None if d.crt_payb_lmt_fen is None else format_fen(d.crt_payb_lmt_fen),
                    "fund_payamt": format_fen(d.fund_payamt_fen),
                    "setl_proc_info": " ".join(zh_text.get(id(step)) or render(step, "zh") for step in d.steps),
                }
                for d in self.details
            ],
            "detlcutinfo": [_line_json(s) for s in self.lines],
            "acct_mulaid": [
                {
                    "psn_no": draw.psn_no,
                    "acct_mulaid_pay": format_fen(draw.total_fen),
                    "current_year": format_fen(draw.current_fen),
                    "historical": format_fen(draw.historical_fen),
                }
                for draw in self.family_payments
            ],
            "accumulators": {
                "year": self.year,
                "delta": _acc_json(self.accumulators_delta),
                "after": _acc_json(self.accumulators_after),
            },
            "policy": {"region": self.policy_region, "version": self.policy_version, "benefit": self.benefit},
            "gates": [{"code": code, "message": message} for code, message in self.gates],
            "warnings": list(self.warnings),
        }
        if trace:
            out["trace"] = steps
        return out


def _line_json(s: LineSplit, fen: Callable[[int], str] = format_fen) -> dict[str, Any]:
    """One ``detlcutinfo`` row (the catalogue item's attributes read once, not per property)."""
    line, item = s.line, s.item
    if item is not None:
        name, kind, indication = item.hilist_name, item.med_chrgitm_type, item.lmt_indication
    else:
        name, kind, indication = line.hilist_name, line.med_chrgitm_type or "14", ""
    cap, reasons, warnings = s.pric_uplmt_fen, s.reasons, s.warnings
    return {
        "feedetl_sn": line.feedetl_sn,
        "hilist_code": line.hilist_code,
        "hilist_name": name,
        "chrgitm_lv": s.chrgitm_lv,
        "med_chrgitm_type": kind,
        "cnt": line.cnt,
        "pric": line.pric,
        "det_item_fee_sumamt": fen(line.amount_fen),
        "pric_uplmt_amt": None if cap is None else fen(cap),
        "selfpay_prop": format_bp(s.selfpay_prop_bp),
        "fulamt_ownpay_amt": fen(s.fulamt_ownpay_fen),
        "overlmt_amt": fen(s.overlmt_fen),
        "preselfpay_amt": fen(s.preselfpay_fen),
        "inscp_scp_amt": fen(s.inscp_fen),
        "lmt_used_flag": "1" if indication else "0",
        "memo": "; ".join([zh for zh, _ in reasons]) if reasons else "",
        "warn_msg": "; ".join(warnings) if warnings else "",
    }


def _acc_json(values: Mapping[str, int]) -> dict[str, Any]:
    return {k: (v if k.endswith("_cnt") else format_fen(v)) for k, v in sorted(values.items())}


def check_identities(r: SettlementResult) -> None:
    """The identities of domain.md §9; raises AssertionError naming the broken one."""
    parts = r.fulamt_ownpay_amt + r.overlmt_selfpay + r.preselfpay_amt + r.inscp_scp_amt
    assert r.medfee_sumamt == parts, "medfee_sumamt ≠ fulamt + overlmt + preselfpay + inscp"
    assert r.medfee_sumamt == r.fund_pay_sumamt + r.psn_part_amt + r.hosp_part_amt, "medfee ≠ fund + psn + hosp"
    assert r.fund_pay_sumamt == sum(r.funds[name] for name in FUND_FIELDS), "fund_pay_sumamt ≠ Σ fund fields"
    assert r.fund_pay_sumamt == sum(d.fund_payamt_fen for d in r.details), "fund_pay_sumamt ≠ Σ setldetail"
    assert r.psn_part_amt == r.acct_pay + r.psn_cash_pay, "psn_part_amt ≠ acct_pay + psn_cash_pay"
    assert 0 <= r.acct_mulaid_pay <= r.acct_pay, "acct_mulaid_pay outside [0, acct_pay]"
    assert r.acct_mulaid_pay == sum(d.total_fen for d in r.family_payments), "acct_mulaid_pay ≠ Σ relatives' draws"
    assert r.acct_pay == r.own_draw.total_fen + r.acct_mulaid_pay, "acct_pay ≠ own draw + relatives' draws"
    assert all(v >= 0 for v in (r.psn_cash_pay, r.acct_pay, r.fund_pay_sumamt, r.balc)), "negative share"
    assert sum(s.line.amount_fen for s in r.lines) == r.medfee_sumamt, "lines do not add up to medfee_sumamt"
