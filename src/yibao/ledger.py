"""Double-entry bookkeeping for the fund (账务): accounts, entries, and how each
business event becomes one balanced entry. Pure: no storage here.

Sign convention: a posting's amount is positive for a debit, negative for a
credit, and every entry sums to zero. Personal accounts are liabilities of the
fund to the insured person: their balance is the credit balance (−Σ postings).

Account codes:

* ``psn:<psn_no>:current`` / ``psn:<psn_no>:historical`` — 个人账户 当年 / 历年
* ``fund:<admdvs>:<fund_pay_type>`` — a pooled fund of a region (统筹基金, 大病 …)
* ``inst:<fixmedins_code>:payable`` — what the fund owes an institution (应付医疗机构)
* ``bank:<admdvs>`` — the region's fund bank account (收入户/支出户), for money in and out
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from .engine.result import FUND_FIELDS, SettlementResult

__all__ = [
    "Entry",
    "Posting",
    "account_kind",
    "bank",
    "check_balanced",
    "contribution_entry",
    "fund",
    "institution_payable",
    "negated",
    "personal",
    "rollover_entry",
    "settlement_entry",
]

#: Postings in one entry; a settlement touches a handful of accounts.
MAX_POSTINGS = 64


class Posting(NamedTuple):
    account: str
    amount_fen: int


class Entry(NamedTuple):
    """One balanced journal entry (记账凭证)."""

    kind: str
    ref: str
    memo: str
    postings: tuple[Posting, ...]


def personal(psn_no: str, balance: str) -> str:
    assert balance in ("current", "historical"), balance
    return f"psn:{psn_no}:{balance}"


def fund(admdvs: str, fund_pay_type: str) -> str:
    return f"fund:{admdvs}:{fund_pay_type}"


def institution_payable(fixmedins_code: str) -> str:
    return f"inst:{fixmedins_code}:payable"


def bank(admdvs: str) -> str:
    return f"bank:{admdvs}"


def account_kind(code: str) -> str:
    """The kind stored with an account: psn_current, psn_historical, fund, inst_payable, bank."""
    prefix, _, rest = code.partition(":")
    if prefix == "psn":
        return "psn_current" if rest.endswith(":current") else "psn_historical"
    kinds = {"fund": "fund", "inst": "inst_payable", "bank": "bank"}
    if prefix not in kinds:
        raise ValueError(f"unknown account code {code!r}")
    return kinds[prefix]


def check_balanced(entry: Entry) -> None:
    """An entry must have postings, sum to zero and stay within limits."""
    if not entry.postings:
        raise ValueError(f"entry {entry.kind} {entry.ref} has no postings")
    if len(entry.postings) > MAX_POSTINGS:
        raise ValueError(f"entry {entry.kind} {entry.ref} has more than {MAX_POSTINGS} postings")
    total = sum(p.amount_fen for p in entry.postings)
    if total != 0:
        raise ValueError(f"entry {entry.kind} {entry.ref} does not balance: Σ = {total}")


def _merge(postings: Iterable[Posting]) -> tuple[Posting, ...]:
    """One posting per account, zero postings dropped, in a stable order."""
    sums: dict[str, int] = {}
    for p in postings:
        sums[p.account] = sums.get(p.account, 0) + p.amount_fen
    return tuple(Posting(account, amount) for account, amount in sorted(sums.items()) if amount)


def settlement_entry(result: SettlementResult, *, setl_id: str, fixmedins_code: str, admdvs: str) -> Entry:
    """The entry of a settlement: funds and accounts pay, the fund owes the institution.

    Cash (``psn_cash_pay``) passes between the person and the institution directly
    and is not booked here.
    """
    postings: list[Posting] = []
    for detail in result.details:
        if detail.fund_payamt_fen:
            postings.append(Posting(fund(admdvs, detail.fund_pay_type), detail.fund_payamt_fen))
    for draw in (result.own_draw, *result.family_payments):
        if draw.current_fen:
            postings.append(Posting(personal(draw.psn_no, "current"), draw.current_fen))
        if draw.historical_fen:
            postings.append(Posting(personal(draw.psn_no, "historical"), draw.historical_fen))
    owed = result.fund_pay_sumamt + result.acct_pay
    if owed:
        postings.append(Posting(institution_payable(fixmedins_code), -owed))
    assert sum(result.funds[f] for f in FUND_FIELDS) == sum(d.fund_payamt_fen for d in result.details)
    entry = Entry("settlement", setl_id, f"{result.insutype}/{result.med_type}", _merge(postings))
    if entry.postings:
        check_balanced(entry)
    return entry


def negated(entry: Entry, *, kind: str, ref: str) -> Entry:
    """The correcting entry that undoes ``entry`` exactly (冲销)."""
    reversed_entry = Entry(kind, ref, f"reverses {entry.kind} {entry.ref}", tuple(
        Posting(p.account, -p.amount_fen) for p in entry.postings
    ))  # fmt: skip
    check_balanced(reversed_entry)
    return reversed_entry


def contribution_entry(
    *, kind: str, ref: str, psn_no: str, admdvs: str, fund_pay_type: str, amount_fen: int, account_fen: int
) -> Entry:
    """Money into the fund: the account share credits the person, the rest the pool.

    ``retiree_allotment`` moves ``account_fen`` from the pool to the person instead.
    """
    assert account_fen >= 0 and amount_fen >= 0
    if kind == "retiree_allotment":
        postings = [
            Posting(fund(admdvs, fund_pay_type), account_fen),
            Posting(personal(psn_no, "current"), -account_fen),
        ]
    else:
        assert account_fen <= amount_fen
        postings = [
            Posting(bank(admdvs), amount_fen),
            Posting(fund(admdvs, fund_pay_type), -(amount_fen - account_fen)),
            Posting(personal(psn_no, "current"), -account_fen),
        ]
    entry = Entry(kind, ref, kind, _merge(postings))
    check_balanced(entry)
    return entry


def rollover_entry(*, ref: str, psn_no: str, amount_fen: int) -> Entry:
    """Year end: the current-year balance moves to the historical balance (结转)."""
    entry = Entry(
        "rollover",
        ref,
        "year-end rollover",
        (Posting(personal(psn_no, "current"), amount_fen), Posting(personal(psn_no, "historical"), -amount_fen)),
    )
    check_balanced(entry)
    return entry
