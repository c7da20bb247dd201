"""Accounts (个人账户 and fund income): contributions, retiree allotments, resident
premiums, the year-end rollover, family mutual-aid bindings (家庭共济) and the consent
they need, filings (异地就医备案, 门诊慢特病备案) and manual payouts to institutions.

Every movement of money is ONE balanced journal entry (:mod:`yibao.ledger`) posted
with :func:`yibao.db.repository.post_entry`; personal balances can never go below
zero (checked here first, and by the database's CHECK constraint). Like
:mod:`yibao.service.registry`, each public function takes an Engine (own unit of
work) or a Connection (the caller's transaction), validates before writing, raises
:class:`~yibao.errors.RequestError` with a stable ``code``, and reads time only
from ``clock``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, or_, select, update

from .. import ledger
from ..db import repository as repo
from ..db.schema import (
    binding_requests,
    contributions,
    family_bindings,
    filings,
    institutions,
    journal_entries,
    ledger_accounts,
    persons,
    visits,
)
from ..db.schema import postings as postings_table
from ..engine.request import MAX_FAMILY_ACCOUNTS
from ..errors import RequestError, YibaoError
from ..ledger import Entry, Posting
from ..money import apply_bp, format_fen
from ..policy import PolicyStore
from .credentials import Credential
from .registry import (
    BASIC_INSUTYPES,
    Clock,
    Db,
    add_months,
    check_period,
    coverage_end,
    existing_person,
    existing_region,
    fail,
    lock,
    months_between,
    need_date,
    need_optional_date,
    need_psn_no,
    need_text,
    policy_at,
    run,
)
from .uow import transact
from .visits import person_of

__all__ = [
    "BINDING_REQUEST_TTL",
    "MAX_PENDING_REQUESTS",
    "OFFSITE_TYPES",
    "BindingRecord",
    "BindingRequestRecord",
    "ContributionRecord",
    "FilingRecord",
    "FilingRefused",
    "PayoutRecord",
    "PersonBindingRequests",
    "PersonBindings",
    "RolloverReport",
    "allot_retiree",
    "bind_family",
    "binding_requests_of",
    "bindings_of",
    "cancel_filing",
    "cancel_filing_of",
    "confirm_binding_request",
    "contribute_employee",
    "contributions_of",
    "decline_binding_request",
    "file_disease",
    "file_offsite",
    "filer_person",
    "filings_of",
    "pay_institution",
    "pay_resident_premium",
    "premium_from_account_entry",
    "request_binding",
    "rollover_year",
    "unbind_family",
    "withdraw_binding_request",
]

#: 异地就医 filing types; all but long-term residence are temporary.
OFFSITE_TYPES = ("long_term", "referral", "emergency", "temporary")
#: A temporary filing without an end date is valid this many months (domain.md §6).
TEMPORARY_FILING_MONTHS = 6
#: Largest accepted monthly contribution base (fen): 1,000,000 yuan.
MAX_BASE_FEN = 100_000_000
_PERIOD_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$", re.ASCII)
_DISE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,19}$")
_RELATION_RE = re.compile(r"^[a-z][a-z_]{0,19}$")
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,39}$")
_REGION_RE = re.compile(r"^\d{6}$", re.ASCII)
_CONSENT_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
_ACTOR_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,48}$")
#: A binding request not decided within this time expires.
BINDING_REQUEST_TTL = dt.timedelta(days=7)
#: Undecided binding requests one person may have asked for at a time.
MAX_PENDING_REQUESTS = 10
#: Below this age (in months) a person consents through a guardian (or agency staff).
ADULT_MONTHS = 18 * 12
#: A binding with this relation records the holder as the member's parent: their guardian while a minor.
GUARDIAN_RELATION = "child"


# -- records --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ContributionRecord:
    """One row of the contribution history; ``replayed`` when the call found it already booked."""

    id: int
    psn_no: str
    kind: str  # employee_monthly | retiree_allotment | resident_premium
    period: str  # YYYY-MM, or YYYY for premiums
    base_fen: int
    amount_fen: int
    account_fen: int  # credited to the person's own account
    entry_id: int
    payer_psn_no: str | None = None  # a relative whose account paid a premium (家庭共济)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class RolloverReport:
    year: int
    persons: int
    amount_fen: int
    already_done: int


@dataclass(frozen=True, slots=True)
class BindingRecord:
    id: int
    holder_psn_no: str
    member_psn_no: str
    relation: str  # the member's relation to the holder
    bound_at: dt.datetime
    unbound_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class PersonBindings:
    """A person's bindings seen from both sides."""

    psn_no: str
    as_holder: tuple[BindingRecord, ...]  # relatives this person's account pays for
    as_member: tuple[BindingRecord, ...]  # relatives whose accounts pay for this person


@dataclass(frozen=True, slots=True)
class BindingRequestRecord:
    """A binding asked for by one party (or made by the agency on consent evidence).

    ``status`` is as of the call: a pending request past ``expires_at`` reads ``expired``.
    """

    id: int
    holder_psn_no: str
    member_psn_no: str
    relation: str  # the member's relation to the holder
    status: str  # pending | confirmed | declined | withdrawn | expired
    requested_by: str  # person:<psn_no>, or the agency's actor (staff:<username>, cli)
    requested_at: dt.datetime
    expires_at: dt.datetime
    decided_at: dt.datetime | None
    decided_by: str | None
    consent_ref: str | None
    binding_id: int | None

    @property
    def awaiting_psn_no(self) -> str | None:
        """The party whose consent the request needs: the one who did not ask (None if the agency made it)."""
        if self.requested_by == f"person:{self.holder_psn_no}":
            return self.member_psn_no
        if self.requested_by == f"person:{self.member_psn_no}":
            return self.holder_psn_no
        return None


@dataclass(frozen=True, slots=True)
class PersonBindingRequests:
    """A person's binding requests: awaiting their consent, asked by them, awaiting a ward's consent."""

    psn_no: str
    incoming: tuple[BindingRequestRecord, ...]
    outgoing: tuple[BindingRequestRecord, ...]
    as_guardian: tuple[BindingRequestRecord, ...]


@dataclass(frozen=True, slots=True)
class FilingRecord:
    id: int
    psn_no: str
    kind: str  # offsite | disease
    offsite_type: str | None
    mdtrtarea_admvs: str | None
    dise_codg: str | None
    begn_date: dt.date
    end_date: dt.date | None
    status: str  # active | cancelled


@dataclass(frozen=True, slots=True)
class PayoutRecord:
    ref: str
    fixmedins_code: str
    amount_fen: int
    entry_id: int
    owed_after_fen: int
    replayed: bool = False


def _binding(row: Any) -> BindingRecord:
    return BindingRecord(int(row.id), row.holder_psn_no, row.member_psn_no, row.relation, row.bound_at, row.unbound_at)


def _filing(row: Any) -> FilingRecord:
    return FilingRecord(
        int(row.id),
        row.psn_no,
        row.kind,
        row.offsite_type,
        row.mdtrtarea_admvs,
        row.dise_codg,
        row.begn_date,
        row.end_date,
        row.status,
    )


# -- helpers --------------------------------------------------------------------------
def _month(period: object) -> tuple[dt.date, dt.date]:
    if not isinstance(period, str) or not _PERIOD_RE.match(period):
        raise fail("period", f"must be YYYY-MM, got {period!r}")
    start = dt.date(int(period[:4]), int(period[5:]), 1)
    return start, add_months(start, 1) - dt.timedelta(days=1)


def _need_fen(field: str, value: object, *, minimum: int, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(field, f"must be an integer amount in fen, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise fail(field, f"must be between {minimum} and {maximum} fen, got {value}")
    return value


def _enrolment_in(
    conn: Connection,
    policies: PolicyStore,
    psn_no: str,
    insutype: str,
    start: dt.date,
    end: dt.date,
    categories: Iterable[str],
    *,
    ignore_pause: bool = False,
) -> Any:
    """The person's enrolment in ``insutype`` covering some day of [start, end] with a category in ``categories``."""
    wanted = set(categories)
    seen: list[str] = []
    for row in repo.enrolments_of(conn, psn_no):
        if row.insutype != insutype:
            continue
        last = row.end_date if ignore_pause else coverage_end(row)
        if row.begn_date > end or (last is not None and last < start):
            continue
        category = policy_at(policies, row.admdvs, max(start, row.begn_date)).params.person_categories.get(
            row.psn_type, "?"
        )
        if category in wanted:
            return row
        seen.append(f"{row.psn_type} ({category})")
    if seen:
        raise fail(
            "psn_no",
            f"person {psn_no} is enrolled as {', '.join(seen)}, not {'/'.join(sorted(wanted))}",
            "PSN_TYPE_INVALID",
        )
    raise fail("psn_no", f"person {psn_no} has no {insutype} coverage in {start}–{end}", "NOT_ENROLLED")


def _contribution(conn: Connection, psn_no: str, kind: str, period: str) -> Any:
    return conn.execute(
        select(contributions).where(
            contributions.c.psn_no == psn_no, contributions.c.kind == kind, contributions.c.period == period
        )
    ).first()


def _record(row: Any, *, payer: str | None = None, replayed: bool = False) -> ContributionRecord:
    return ContributionRecord(
        int(row.id),
        row.psn_no,
        row.kind,
        row.period,
        int(row.base_fen),
        int(row.amount_fen),
        int(row.account_fen),
        int(row.entry_id),
        payer,
        replayed,
    )


def _book(
    conn: Connection,
    entry: Entry,
    *,
    psn_no: str,
    kind: str,
    period: str,
    base: int,
    amount: int,
    account: int,
    now: dt.datetime,
    payer: str | None = None,
) -> ContributionRecord:
    entry_id = repo.post_entry(conn, entry, now)
    key = conn.execute(
        insert(contributions).values(
            psn_no=psn_no,
            kind=kind,
            period=period,
            base_fen=base,
            amount_fen=amount,
            account_fen=account,
            entry_id=entry_id,
            created_at=now,
        )
    ).inserted_primary_key
    assert key is not None
    return ContributionRecord(int(key[0]), psn_no, kind, period, base, amount, account, entry_id, payer)


# -- contributions --------------------------------------------------------------------
def contribute_employee(
    db: Db, policies: PolicyStore, *, psn_no: str, period: str, base_fen: int, clock: Clock
) -> ContributionRecord:
    """An in-service employee's monthly contribution on ``base_fen``.

    ``base × employee_account_ratio`` credits the person's current-year account, the
    rest of ``base × employee_contribution_ratio`` the pool, in one entry. Once per
    person and month: repeating the same call returns the booked row (``replayed``),
    another base for a booked month is refused.
    """
    psn_no = need_psn_no(psn_no)
    start, end = _month(period)
    base = _need_fen("base_fen", base_fen, minimum=1, maximum=MAX_BASE_FEN)

    def work(conn: Connection) -> ContributionRecord:
        lock(conn, psn_no)
        existing_person(conn, psn_no)
        booked = _contribution(conn, psn_no, "employee_monthly", period)
        if booked is not None:
            if booked.base_fen != base:
                raise fail(
                    "period", f"{period} is already booked on base {format_fen(booked.base_fen)}", "CONTRIBUTION_EXISTS"
                )
            return _record(booked, replayed=True)
        now = clock()
        if start > now.date():
            raise fail("period", f"{period} has not begun", "PERIOD_IN_FUTURE")
        row = _enrolment_in(conn, policies, psn_no, "310", start, end, ("in_service",))
        funding = policy_at(policies, row.admdvs, max(start, row.begn_date)).params.funding
        amount = apply_bp(base, funding.employee_contribution_ratio)
        account = min(amount, apply_bp(base, funding.employee_account_ratio))
        entry = ledger.contribution_entry(
            kind="employee_monthly",
            ref=f"contrib:{psn_no}:{period}",
            psn_no=psn_no,
            admdvs=row.admdvs,
            fund_pay_type=funding.employee_fund_pay_type,
            amount_fen=amount,
            account_fen=account,
        )
        return _book(
            conn,
            entry,
            psn_no=psn_no,
            kind="employee_monthly",
            period=period,
            base=base,
            amount=amount,
            account=account,
            now=now,
        )

    return run(db, work)


def allot_retiree(db: Db, policies: PolicyStore, *, psn_no: str, period: str, clock: Clock) -> ContributionRecord:
    """A retiree's monthly allotment (``retiree_monthly_allotment_fen``) from the pool to the account; once a month."""
    psn_no = need_psn_no(psn_no)
    start, end = _month(period)

    def work(conn: Connection) -> ContributionRecord:
        lock(conn, psn_no)
        existing_person(conn, psn_no)
        booked = _contribution(conn, psn_no, "retiree_allotment", period)
        if booked is not None:
            return _record(booked, replayed=True)
        now = clock()
        if start > now.date():
            raise fail("period", f"{period} has not begun", "PERIOD_IN_FUTURE")
        row = _enrolment_in(conn, policies, psn_no, "310", start, end, ("retired",))
        funding = policy_at(policies, row.admdvs, max(start, row.begn_date)).params.funding
        allotment = funding.retiree_monthly_allotment_fen
        entry = ledger.contribution_entry(
            kind="retiree_allotment",
            ref=f"allot:{psn_no}:{period}",
            psn_no=psn_no,
            admdvs=row.admdvs,
            fund_pay_type=funding.employee_fund_pay_type,
            amount_fen=allotment,
            account_fen=allotment,
        )
        return _book(
            conn,
            entry,
            psn_no=psn_no,
            kind="retiree_allotment",
            period=period,
            base=0,
            amount=allotment,
            account=allotment,
            now=now,
        )

    return run(db, work)


def premium_from_account_entry(
    *,
    ref: str,
    payer_psn_no: str,
    member_psn_no: str,
    admdvs: str,
    fund_pay_type: str,
    current_fen: int,
    historical_fen: int,
) -> Entry:
    """A resident premium paid from a relative's personal account (家庭共济代缴).

    The payer's current-year and historical balances are debited (their balances
    fall), the member's resident fund is credited.
    """
    assert current_fen >= 0 and historical_fen >= 0 and current_fen + historical_fen > 0
    parts = [
        Posting(ledger.personal(payer_psn_no, "current"), current_fen),
        Posting(ledger.personal(payer_psn_no, "historical"), historical_fen),
        Posting(ledger.fund(admdvs, fund_pay_type), -(current_fen + historical_fen)),
    ]
    entry = Entry(
        "resident_premium",
        ref,
        f"resident premium of {member_psn_no} paid by {payer_psn_no} (家庭共济)",
        tuple(p for p in parts if p.amount_fen),
    )
    ledger.check_balanced(entry)
    return entry


def pay_resident_premium(
    db: Db, policies: PolicyStore, *, psn_no: str, year: int, clock: Clock, payer_psn_no: str | None = None
) -> ContributionRecord:
    """A resident's annual premium (``resident_premium_fen``) for ``year``: in cash (bank), or from the
    personal account of a relative bound to the resident as holder (``payer_psn_no``). Once a year."""
    psn_no = need_psn_no(psn_no)
    if not isinstance(year, int) or isinstance(year, bool) or not 2000 <= year <= 2200:
        raise fail("year", f"must be a year, got {year!r}")
    payer = None if payer_psn_no is None else need_psn_no(payer_psn_no, "payer_psn_no")
    if payer == psn_no:
        raise fail(
            "payer_psn_no", "a resident has no personal account of their own; name a bound relative", "SELF_PAYMENT"
        )
    period = str(year)

    def work(conn: Connection) -> ContributionRecord:
        lock(conn, psn_no, *([payer] if payer else []))
        existing_person(conn, psn_no)
        booked = _contribution(conn, psn_no, "resident_premium", period)
        if booked is not None:
            paid_by = [p for p in repo.entry_persons(conn, booked.entry_id) if p != psn_no]
            return _record(booked, payer=paid_by[0] if paid_by else None, replayed=True)
        now = clock()
        if year > now.year + 1:
            raise fail("year", f"premiums for {year} cannot be paid in {now.year}", "PERIOD_IN_FUTURE")
        start, end = dt.date(year, 1, 1), dt.date(year, 12, 31)
        row = _enrolment_in(conn, policies, psn_no, "390", start, end, ("resident", "student"), ignore_pause=True)
        funding = policy_at(policies, row.admdvs, max(start, row.begn_date)).params.funding
        amount = funding.resident_premium_fen
        ref = f"premium:{psn_no}:{period}"
        if payer is None:
            entry = ledger.contribution_entry(
                kind="resident_premium",
                ref=ref,
                psn_no=psn_no,
                admdvs=row.admdvs,
                fund_pay_type=funding.resident_fund_pay_type,
                amount_fen=amount,
                account_fen=0,
            )
        else:
            existing_person(conn, payer, "payer_psn_no")
            bound = conn.execute(
                select(family_bindings.c.id).where(
                    family_bindings.c.holder_psn_no == payer,
                    family_bindings.c.member_psn_no == psn_no,
                    family_bindings.c.unbound_at.is_(None),
                )
            ).first()
            if bound is None:
                raise fail("payer_psn_no", f"{payer} is not bound to pay for {psn_no} (家庭共济)", "NOT_BOUND")
            holder_row = repo.enrolment_on(conn, payer, "310", now.date())
            sources: tuple[str, ...] = ("current_year", "historical")
            if holder_row is not None:
                scheme = policy_at(policies, holder_row.admdvs, now.date()).scheme("310")
                if scheme is not None:
                    sources = scheme.account.sources
            current, historical = repo.balances(conn, payer)
            available = {"current_year": current, "historical": historical}
            if sum(available[s] for s in sources) < amount:
                raise fail(
                    "payer_psn_no",
                    f"账户余额不足: {payer} has {format_fen(sum(available[s] for s in sources))}, "
                    f"the premium is {format_fen(amount)}",
                    "INSUFFICIENT_BALANCE",
                )
            drawn = {"current_year": 0, "historical": 0}
            for source in sources:
                drawn[source] = min(available[source], amount - sum(drawn.values()))
            entry = premium_from_account_entry(
                ref=ref,
                payer_psn_no=payer,
                member_psn_no=psn_no,
                admdvs=row.admdvs,
                fund_pay_type=funding.resident_fund_pay_type,
                current_fen=drawn["current_year"],
                historical_fen=drawn["historical"],
            )
        return _book(
            conn,
            entry,
            psn_no=psn_no,
            kind="resident_premium",
            period=period,
            base=0,
            amount=amount,
            account=0,
            now=now,
            payer=payer,
        )

    return run(db, work)


def contributions_of(db: Db, psn_no: str) -> list[ContributionRecord]:
    """A person's contribution history (contributions, allotments, premiums), oldest first."""

    def work(conn: Connection) -> list[ContributionRecord]:
        existing_person(conn, psn_no)
        rows = conn.execute(
            select(contributions)
            .where(contributions.c.psn_no == psn_no)
            .order_by(contributions.c.period, contributions.c.kind, contributions.c.id)
        ).all()
        return [_record(r) for r in rows]

    return run(db, work)


# -- year-end rollover ----------------------------------------------------------------
def rollover_year(db: Db, *, year: int, clock: Clock, admdvs: str | None = None) -> RolloverReport:
    """结转: move each person's current-year balance at the end of ``year`` to the historical balance.

    The amount is the current-year balance as of 31 December (postings dated up to
    then), never more than the balance now. One entry per person, ref
    ``rollover:<year>:<psn_no>``; persons already rolled for ``year`` are skipped,
    so a second run does nothing. Only once ``year`` has ended.
    """
    if not isinstance(year, int) or isinstance(year, bool) or not 2000 <= year <= 2200:
        raise fail("year", f"must be a year, got {year!r}")
    if admdvs is not None:
        need_text("admdvs", admdvs, max_len=6, pattern=_REGION_RE)
    cut = dt.datetime(year + 1, 1, 1)
    prefix = f"rollover:{year}:"

    def work(conn: Connection) -> RolloverReport:
        now = clock()
        if now < cut:
            raise fail("year", f"{year} has not ended", "YEAR_NOT_ENDED")
        if admdvs is not None:
            existing_region(conn, admdvs, "admdvs")
        owners = select(ledger_accounts.c.owner).where(ledger_accounts.c.kind == "psn_current")
        if admdvs is not None:
            owners = owners.where(
                ledger_accounts.c.owner.in_(select(persons.c.psn_no).where(persons.c.admdvs == admdvs))
            )
        candidates = sorted(str(o) for o in conn.execute(owners).scalars())
        done = {
            str(ref)[len(prefix) :]
            for ref in conn.execute(
                select(journal_entries.c.ref).where(
                    journal_entries.c.kind == "rollover", journal_entries.c.ref.like(prefix + "%")
                )
            ).scalars()
        }
        todo = [p for p in candidates if p not in done]
        lock(conn, *todo)
        at_year_end = dict(
            conn.execute(
                select(ledger_accounts.c.owner, -func.sum(postings_table.c.amount_fen))
                .select_from(
                    postings_table.join(ledger_accounts, postings_table.c.account_id == ledger_accounts.c.id).join(
                        journal_entries, postings_table.c.entry_id == journal_entries.c.id
                    )
                )
                .where(ledger_accounts.c.kind == "psn_current", journal_entries.c.created_at < cut)
                .group_by(ledger_accounts.c.owner)
            ).all()
        )
        moved = count = 0
        for psn_no in todo:
            current, _historical = repo.balances(conn, psn_no)
            amount = min(current, int(at_year_end.get(psn_no) or 0))
            if amount <= 0:
                continue
            repo.post_entry(conn, ledger.rollover_entry(ref=prefix + psn_no, psn_no=psn_no, amount_fen=amount), now)
            moved += amount
            count += 1
        return RolloverReport(year, count, moved, len(candidates) - len(todo))

    return run(db, work)


# -- family mutual aid ----------------------------------------------------------------
def _check_binding(
    conn: Connection, policies: PolicyStore, holder: str, member: str, rel: str, now: dt.datetime
) -> None:
    """Every rule a new binding must meet today (the persons exist and are locked by the caller)."""
    today = now.date()
    holder_row = repo.enrolment_on(conn, holder, "310", today)
    if holder_row is None:
        raise fail(
            "holder_psn_no",
            f"{holder} has no employee (310) enrolment on {today}; only an employee's personal account can pay",
            "HOLDER_NOT_EMPLOYEE",
        )
    policy = policy_at(policies, holder_row.admdvs, today)
    scheme = policy.scheme("310")
    rules = scheme.account.family if scheme is not None and scheme.account.enabled else None
    if rules is None or not rules.enabled:
        raise fail("holder_psn_no", f"family mutual aid is not open in region {policy.region}", "FAMILY_AID_DISABLED")
    if rel not in policy.params.relations:
        raise fail(
            "relation",
            f"unknown relation {rel!r} (one of {', '.join(policy.params.relations)})",
            "RELATION_UNKNOWN",
        )
    if rel not in rules.relations:
        raise fail(
            "relation",
            f"region {policy.region} does not allow {policy.params.relations[rel]} ({rel})",
            "RELATION_NOT_ALLOWED",
        )
    member_rows = [
        r
        for r in repo.enrolments_of(conn, member)
        if r.insutype in BASIC_INSUTYPES and (r.end_date is None or r.end_date >= today)
    ]
    if not member_rows:
        raise fail("member_psn_no", f"{member} is not insured", "MEMBER_NOT_INSURED")
    if rules.same_region and policies.find_region(member_rows[-1].admdvs) != policies.find_region(holder_row.admdvs):
        raise fail(
            "member_psn_no",
            f"{member} is insured in {member_rows[-1].admdvs}, the holder in "
            f"{holder_row.admdvs}; the policy requires the same region",
            "DIFFERENT_REGION",
        )
    active = family_bindings.c.unbound_at.is_(None)
    duplicate = conn.execute(
        select(family_bindings.c.id).where(
            family_bindings.c.holder_psn_no == holder, family_bindings.c.member_psn_no == member, active
        )
    ).first()
    if duplicate is not None:
        raise fail(
            "member_psn_no", f"{member} is already bound to {holder} (binding {duplicate.id})", "DUPLICATE_BINDING"
        )
    members = conn.execute(
        select(func.count()).select_from(family_bindings).where(family_bindings.c.holder_psn_no == holder, active)
    ).scalar_one()
    if rules.max_members is not None and members >= rules.max_members:
        raise fail(
            "member_psn_no",
            f"{holder} already pays for {members} relatives (max {rules.max_members})",
            "TOO_MANY_MEMBERS",
        )
    holders = conn.execute(
        select(func.count()).select_from(family_bindings).where(family_bindings.c.member_psn_no == member, active)
    ).scalar_one()
    if holders >= MAX_FAMILY_ACCOUNTS:
        raise fail("member_psn_no", f"{member} already has {holders} paying relatives", "TOO_MANY_MEMBERS")


def _insert_binding(conn: Connection, holder: str, member: str, rel: str, now: dt.datetime) -> BindingRecord:
    key = conn.execute(
        insert(family_bindings).values(
            holder_psn_no=holder, member_psn_no=member, relation=rel, bound_at=now, unbound_at=None
        )
    ).inserted_primary_key
    assert key is not None
    return BindingRecord(int(key[0]), holder, member, rel, now, None)


def _binding_input(holder_psn_no: object, member_psn_no: object, relation: object) -> tuple[str, str, str]:
    holder = need_psn_no(holder_psn_no, "holder_psn_no")
    member = need_psn_no(member_psn_no, "member_psn_no")
    rel = need_text("relation", relation, max_len=20, pattern=_RELATION_RE)
    if holder == member:
        raise fail("member_psn_no", "a person cannot bind themselves", "SELF_BINDING")
    return holder, member, rel


def _need_consent_ref(value: object) -> str:
    if value is None:
        raise fail("consent_ref", "the agency records the consent evidence (form or register number)",
                   "CONSENT_REF_REQUIRED")  # fmt: skip
    return need_text("consent_ref", value, max_len=64, pattern=_CONSENT_RE)


def _need_actor(value: object) -> str:
    return need_text("actor", value, max_len=48, pattern=_ACTOR_RE)


def bind_family(
    db: Db, policies: PolicyStore, *, holder_psn_no: str, member_psn_no: str, relation: str, consent_ref: str,
    actor: str, clock: Clock,
) -> BindingRecord:  # fmt: skip
    """家庭共济绑定 by the agency, on consent evidence it has seen: in force at once.

    ``holder``'s personal account may pay for ``member``; ``relation`` is the member's
    relation to the holder (a key of the policy's ``relations``). The holder must be an
    employee (310) whose policy's ``schemes.310.account.family`` is enabled and allows
    the relation, same region and member count rules hold, the member is insured; no
    self-binding, no duplicate. ``consent_ref`` (1–64 characters: the signed form, the
    household register entry …) and ``actor`` (who recorded it, e.g. ``staff:<username>``)
    are kept in a confirmed ``binding_requests`` row beside the binding. Insured persons
    ask with :func:`request_binding` instead; the other party confirms.
    """
    holder, member, rel = _binding_input(holder_psn_no, member_psn_no, relation)
    evidence = _need_consent_ref(consent_ref)
    by = _need_actor(actor)

    def work(conn: Connection) -> BindingRecord:
        lock(conn, holder, member)
        existing_person(conn, holder, "holder_psn_no")
        existing_person(conn, member, "member_psn_no")
        now = clock()
        _check_binding(conn, policies, holder, member, rel, now)
        binding = _insert_binding(conn, holder, member, rel, now)
        conn.execute(
            insert(binding_requests).values(
                holder_psn_no=holder, member_psn_no=member, relation=rel, status="confirmed", requested_by=by,
                requested_at=now, expires_at=now, decided_at=now, decided_by=by, consent_ref=evidence,
                binding_id=binding.id,
            )
        )  # fmt: skip
        return binding

    return run(db, work)


# -- consent: binding requests ----------------------------------------------------------
def _binding_request(row: Any, now: dt.datetime) -> BindingRequestRecord:
    status = "expired" if row.status == "pending" and row.expires_at <= now else row.status
    return BindingRequestRecord(
        int(row.id), row.holder_psn_no, row.member_psn_no, row.relation, status, row.requested_by, row.requested_at,
        row.expires_at, row.decided_at, row.decided_by, row.consent_ref,
        None if row.binding_id is None else int(row.binding_id),
    )  # fmt: skip


def _is_minor(person: Any, today: dt.date) -> bool:
    return months_between(person.brdy, today) < ADULT_MONTHS


def _guardians(conn: Connection, minor: str, today: dt.date) -> set[str]:
    """Adults on record as the minor's parent: holders of an active binding with relation ``child``."""
    rows = conn.execute(
        select(persons.c.psn_no, persons.c.brdy)
        .select_from(family_bindings.join(persons, persons.c.psn_no == family_bindings.c.holder_psn_no))
        .where(
            family_bindings.c.member_psn_no == minor,
            family_bindings.c.relation == GUARDIAN_RELATION,
            family_bindings.c.unbound_at.is_(None),
        )
    ).all()
    return {r.psn_no for r in rows if not _is_minor(r, today)}


def _wards(conn: Connection, guardian: str, today: dt.date) -> set[str]:
    """Minors whose guardian ``guardian`` is on record (the converse of :func:`_guardians`)."""
    if _is_minor(existing_person(conn, guardian), today):
        return set()
    rows = conn.execute(
        select(persons.c.psn_no, persons.c.brdy)
        .select_from(family_bindings.join(persons, persons.c.psn_no == family_bindings.c.member_psn_no))
        .where(
            family_bindings.c.holder_psn_no == guardian,
            family_bindings.c.relation == GUARDIAN_RELATION,
            family_bindings.c.unbound_at.is_(None),
        )
    ).all()
    return {r.psn_no for r in rows if _is_minor(r, today)}


def _need_request_id(request_id: object) -> int:
    if not isinstance(request_id, int) or isinstance(request_id, bool) or not 1 <= request_id <= 2**31 - 1:
        raise fail("request_id", "must be a positive integer")
    return request_id


def _locked_request(conn: Connection, request_id: int) -> Any:
    """The request's row, read again after locking both parties (their decisions and bindings queue)."""
    row = conn.execute(select(binding_requests).where(binding_requests.c.id == request_id)).first()
    if row is None:
        raise fail("request_id", f"binding request {request_id} does not exist", "REQUEST_UNKNOWN")
    lock(conn, row.holder_psn_no, row.member_psn_no)
    return conn.execute(select(binding_requests).where(binding_requests.c.id == request_id)).one()


def _check_decider(conn: Connection, request: BindingRequestRecord, psn_no: str, today: dt.date) -> None:
    """``psn_no`` may confirm or decline: the party awaited, or, for a minor, a guardian on record."""
    if request.requested_by == f"person:{psn_no}":
        raise fail("psn_no", "申请由您发起, 须由对方确认", "OWN_REQUEST")
    awaiting = request.awaiting_psn_no
    if awaiting is None:
        raise fail("psn_no", f"{psn_no} is not a party to binding request {request.id}", "NOT_A_PARTY")
    if _is_minor(existing_person(conn, awaiting), today):
        if psn_no == awaiting:
            raise fail("psn_no", "未成年人须由监护人确认, 或由监护人到经办机构办理", "GUARDIAN_REQUIRED")
        if psn_no in _guardians(conn, awaiting, today):
            return
    elif psn_no == awaiting:
        return
    raise fail("psn_no", f"{psn_no} may not decide binding request {request.id}", "NOT_A_PARTY")


class _Expired:
    """A request found expired: the unit of work commits its new status, then the caller raises."""

    def __init__(self, request_id: int, expires_at: dt.datetime) -> None:
        self.error = fail("request_id", f"申请已于 {expires_at:%Y-%m-%d %H:%M} 过期, 请重新申请", "REQUEST_EXPIRED")
        self.request_id = request_id


def _still_pending(conn: Connection, row: Any, now: dt.datetime) -> _Expired | None:
    """Refuse a decided request; mark an expired one (the caller commits, then raises)."""
    if row.status != "pending":
        raise fail("request_id", f"binding request {row.id} is {row.status}", "REQUEST_NOT_PENDING")
    if row.expires_at > now:
        return None
    conn.execute(
        update(binding_requests).where(binding_requests.c.id == row.id).values(status="expired", decided_at=now)
    )
    return _Expired(int(row.id), row.expires_at)


def _run_decision(db: Db, work: Any) -> BindingRequestRecord:
    outcome = run(db, work)
    if isinstance(outcome, _Expired):
        raise outcome.error
    assert isinstance(outcome, BindingRequestRecord)
    return outcome


def _who(psn_no: str | None, actor: str | None) -> tuple[str | None, str]:
    """(the deciding person or None for the agency, the ``decided_by`` label)."""
    if psn_no is not None:
        if actor is not None:
            raise fail("actor", "give psn_no (a person) or actor (the agency), not both")
        person = need_psn_no(psn_no)
        return person, f"person:{person}"
    if actor is None:
        raise fail("psn_no", "give psn_no (a person) or actor (the agency)")
    return None, _need_actor(actor)


def request_binding(
    db: Db, policies: PolicyStore, *, holder_psn_no: str, member_psn_no: str, relation: str, requester_psn_no: str,
    clock: Clock,
) -> BindingRequestRecord:  # fmt: skip
    """Ask for a family binding (申请绑定); it takes effect when the other party confirms.

    The requester is the holder or the member (``NOT_A_PARTY``), an adult
    (``GUARDIAN_REQUIRED``: a minor's bindings are asked for by the guardian, or at the
    agency). Every rule of :func:`bind_family` is checked now and again on confirmation.
    One undecided request per pair (``REQUEST_PENDING``), at most
    :data:`MAX_PENDING_REQUESTS` per requester (``TOO_MANY_PENDING``); it expires after
    :data:`BINDING_REQUEST_TTL`.
    """
    holder, member, rel = _binding_input(holder_psn_no, member_psn_no, relation)
    requester = need_psn_no(requester_psn_no, "requester_psn_no")
    if requester not in (holder, member):
        raise fail("requester_psn_no", f"{requester} is not a party to the binding asked for", "NOT_A_PARTY")

    def work(conn: Connection) -> BindingRequestRecord:
        lock(conn, holder, member)
        existing_person(conn, holder, "holder_psn_no")
        existing_person(conn, member, "member_psn_no")
        now = clock()
        if _is_minor(existing_person(conn, requester), now.date()):
            raise fail("requester_psn_no", "未成年人的家庭共济绑定由监护人申请, 或到经办机构办理", "GUARDIAN_REQUIRED")
        _check_binding(conn, policies, holder, member, rel, now)
        pending = (binding_requests.c.status == "pending") & (binding_requests.c.expires_at > now)
        open_one = conn.execute(
            select(binding_requests.c.id).where(
                binding_requests.c.holder_psn_no == holder, binding_requests.c.member_psn_no == member, pending
            )
        ).first()
        if open_one is not None:
            raise fail("member_psn_no", f"binding request {open_one.id} for this pair awaits a decision",
                       "REQUEST_PENDING")  # fmt: skip
        by = f"person:{requester}"
        asked = conn.execute(
            select(func.count()).select_from(binding_requests).where(binding_requests.c.requested_by == by, pending)
        ).scalar_one()
        if asked >= MAX_PENDING_REQUESTS:
            raise fail("requester_psn_no", f"{asked} requests already await a decision; withdraw some first",
                       "TOO_MANY_PENDING")  # fmt: skip
        expires = now + BINDING_REQUEST_TTL
        key = conn.execute(
            insert(binding_requests).values(
                holder_psn_no=holder, member_psn_no=member, relation=rel, status="pending", requested_by=by,
                requested_at=now, expires_at=expires, decided_at=None, decided_by=None, consent_ref=None,
                binding_id=None,
            )
        ).inserted_primary_key  # fmt: skip
        assert key is not None
        return BindingRequestRecord(int(key[0]), holder, member, rel, "pending", by, now, expires, None, None, None,
                                    None)  # fmt: skip

    return run(db, work)


def confirm_binding_request(
    db: Db, policies: PolicyStore, *, request_id: int, clock: Clock, psn_no: str | None = None,
    actor: str | None = None, consent_ref: str | None = None,
) -> BindingRequestRecord:  # fmt: skip
    """Consent (确认): the binding is made now, under every rule of :func:`bind_family`.

    By ``psn_no``: the party the request awaits (an adult), or for a minor a guardian on
    record (an adult holding an active binding with the minor as ``child``), never the
    requester (``OWN_REQUEST``, ``GUARDIAN_REQUIRED``, ``NOT_A_PARTY``). Or by the agency:
    ``actor`` with the ``consent_ref`` it has seen (``CONSENT_REF_REQUIRED``; a person
    gives none, ``CONSENT_REF_UNEXPECTED``). A decided request is ``REQUEST_NOT_PENDING``;
    an expired one is marked ``expired`` (committed) and refused ``REQUEST_EXPIRED``. A rule
    that fails now leaves the request pending.
    """
    rid = _need_request_id(request_id)
    person, by = _who(psn_no, actor)
    if person is not None and consent_ref is not None:
        raise fail("consent_ref", "consent evidence is recorded by the agency, not sent by a person",
                   "CONSENT_REF_UNEXPECTED")  # fmt: skip
    evidence = None if person is not None else _need_consent_ref(consent_ref)

    def work(conn: Connection) -> BindingRequestRecord | _Expired:
        row = _locked_request(conn, rid)
        now = clock()
        if person is not None:
            _check_decider(conn, _binding_request(row, now), person, now.date())
        expired = _still_pending(conn, row, now)
        if expired is not None:
            return expired
        _check_binding(conn, policies, row.holder_psn_no, row.member_psn_no, row.relation, now)
        binding = _insert_binding(conn, row.holder_psn_no, row.member_psn_no, row.relation, now)
        conn.execute(
            update(binding_requests)
            .where(binding_requests.c.id == rid)
            .values(status="confirmed", decided_at=now, decided_by=by, consent_ref=evidence, binding_id=binding.id)
        )
        done = conn.execute(select(binding_requests).where(binding_requests.c.id == rid)).one()
        return _binding_request(done, now)

    return _run_decision(db, work)


def decline_binding_request(
    db: Db, *, request_id: int, clock: Clock, psn_no: str | None = None, actor: str | None = None
) -> BindingRequestRecord:
    """Refuse consent (拒绝): by the party awaited (or a minor's guardian), or by the agency (``actor``)."""
    rid = _need_request_id(request_id)
    person, by = _who(psn_no, actor)

    def work(conn: Connection) -> BindingRequestRecord | _Expired:
        row = _locked_request(conn, rid)
        now = clock()
        if person is not None:
            _check_decider(conn, _binding_request(row, now), person, now.date())
        return _close(conn, row, "declined", by, now)

    return _run_decision(db, work)


def withdraw_binding_request(
    db: Db, *, request_id: int, clock: Clock, psn_no: str | None = None, actor: str | None = None
) -> BindingRequestRecord:
    """Withdraw (撤回) a pending request: by the person who asked (``NOT_THE_REQUESTER``), or the agency."""
    rid = _need_request_id(request_id)
    person, by = _who(psn_no, actor)

    def work(conn: Connection) -> BindingRequestRecord | _Expired:
        row = _locked_request(conn, rid)
        now = clock()
        if person is not None and row.requested_by != by:
            if person not in (row.holder_psn_no, row.member_psn_no):
                raise fail("psn_no", f"{person} is not a party to binding request {rid}", "NOT_A_PARTY")
            raise fail("psn_no", "只有申请人可以撤回申请", "NOT_THE_REQUESTER")
        return _close(conn, row, "withdrawn", by, now)

    return _run_decision(db, work)


def _close(conn: Connection, row: Any, status: str, by: str, now: dt.datetime) -> BindingRequestRecord | _Expired:
    expired = _still_pending(conn, row, now)
    if expired is not None:
        return expired
    conn.execute(
        update(binding_requests)
        .where(binding_requests.c.id == row.id)
        .values(status=status, decided_at=now, decided_by=by)
    )
    done = conn.execute(select(binding_requests).where(binding_requests.c.id == row.id)).one()
    return _binding_request(done, now)


def binding_requests_of(db: Db, psn_no: str, *, clock: Clock, include_closed: bool = False) -> PersonBindingRequests:
    """The person's binding requests: ``incoming`` (awaiting their consent), ``outgoing`` (asked by
    them) and ``as_guardian`` (awaiting the consent of a minor they are guardian of); only
    pending ones unless ``include_closed`` (then also decided and expired ones)."""
    psn_no = need_psn_no(psn_no)

    def work(conn: Connection) -> PersonBindingRequests:
        existing_person(conn, psn_no)
        now = clock()
        wards = _wards(conn, psn_no, now.date())
        parties = {psn_no, *wards}
        rows = conn.execute(
            select(binding_requests)
            .where(or_(binding_requests.c.holder_psn_no.in_(parties), binding_requests.c.member_psn_no.in_(parties)))
            .order_by(binding_requests.c.id)
        ).all()
        found = [_binding_request(r, now) for r in rows]
        if not include_closed:
            found = [r for r in found if r.status == "pending"]
        me = f"person:{psn_no}"
        return PersonBindingRequests(
            psn_no,
            tuple(r for r in found if r.awaiting_psn_no == psn_no),
            tuple(r for r in found if r.requested_by == me),
            tuple(r for r in found if r.awaiting_psn_no in wards and r.requested_by != me and r.status == "pending"),
        )

    return run(db, work)


def unbind_family(db: Db, *, binding_id: int, clock: Clock, psn_no: str | None = None) -> BindingRecord:
    """解除绑定: sets ``unbound_at`` (the row stays). ``psn_no``, if given, must be a party."""
    if not isinstance(binding_id, int) or isinstance(binding_id, bool):
        raise fail("binding_id", "must be an integer")
    party = None if psn_no is None else need_psn_no(psn_no)

    def work(conn: Connection) -> BindingRecord:
        row = conn.execute(select(family_bindings).where(family_bindings.c.id == binding_id)).first()
        if row is None:
            raise fail("binding_id", f"binding {binding_id} does not exist", "BINDING_UNKNOWN")
        if party is not None and party not in (row.holder_psn_no, row.member_psn_no):
            raise fail("psn_no", f"{party} is not a party to binding {binding_id}", "NOT_A_PARTY")
        lock(conn, row.holder_psn_no, row.member_psn_no)
        row = conn.execute(select(family_bindings).where(family_bindings.c.id == binding_id)).one()
        if row.unbound_at is not None:
            raise fail("binding_id", f"binding {binding_id} was already unbound at {row.unbound_at}", "ALREADY_UNBOUND")
        now = clock()
        conn.execute(update(family_bindings).where(family_bindings.c.id == binding_id).values(unbound_at=now))
        return BindingRecord(int(row.id), row.holder_psn_no, row.member_psn_no, row.relation, row.bound_at, now)

    return run(db, work)


def bindings_of(db: Db, psn_no: str, *, include_unbound: bool = False) -> PersonBindings:
    """The person's bindings as holder and as member (visible to both parties)."""

    def work(conn: Connection) -> PersonBindings:
        existing_person(conn, psn_no)
        query = select(family_bindings).where(
            or_(family_bindings.c.holder_psn_no == psn_no, family_bindings.c.member_psn_no == psn_no)
        )
        if not include_unbound:
            query = query.where(family_bindings.c.unbound_at.is_(None))
        rows = [_binding(r) for r in conn.execute(query.order_by(family_bindings.c.id)).all()]
        return PersonBindings(
            psn_no,
            tuple(b for b in rows if b.holder_psn_no == psn_no),
            tuple(b for b in rows if b.member_psn_no == psn_no),
        )

    return run(db, work)


# -- filings --------------------------------------------------------------------------
def _overlapping_filing(
    conn: Connection, psn_no: str, kind: str, begn: dt.date, end: dt.date | None, dise_codg: str | None
) -> Any:
    query = select(filings.c.id).where(
        filings.c.psn_no == psn_no,
        filings.c.kind == kind,
        filings.c.status == "active",
        or_(filings.c.end_date.is_(None), filings.c.end_date >= begn),
    )
    if end is not None:
        query = query.where(filings.c.begn_date <= end)
    if dise_codg is not None:
        query = query.where(filings.c.dise_codg == dise_codg)
    return conn.execute(query).first()


def _insert_filing(conn: Connection, values: dict[str, Any]) -> FilingRecord:
    key = conn.execute(insert(filings).values(**values)).inserted_primary_key
    assert key is not None
    return FilingRecord(
        int(key[0]),
        values["psn_no"],
        values["kind"],
        values.get("offsite_type"),
        values.get("mdtrtarea_admvs"),
        values.get("dise_codg"),
        values["begn_date"],
        values["end_date"],
        "active",
    )


def file_offsite(
    db: Db,
    policies: PolicyStore,
    *,
    psn_no: str,
    offsite_type: str,
    mdtrtarea_admvs: str,
    begn_date: dt.date,
    clock: Clock,
    end_date: dt.date | None = None,
) -> FilingRecord:
    """异地就医备案 to treatment region ``mdtrtarea_admvs``.

    ``long_term`` (异地长期居住) may be open-ended; the temporary kinds (``referral``,
    ``emergency``, ``temporary``) without an end date are valid 6 months. One active
    off-site filing at a time.
    """
    psn_no = need_psn_no(psn_no)
    if offsite_type not in OFFSITE_TYPES:
        raise fail("offsite_type", f"must be one of {', '.join(OFFSITE_TYPES)}, got {offsite_type!r}")
    target = need_text("mdtrtarea_admvs", mdtrtarea_admvs, max_len=6, pattern=_REGION_RE)
    begn = need_date("begn_date", begn_date)
    end = need_optional_date("end_date", end_date)
    check_period("end_date", begn, end)
    if end is None and offsite_type != "long_term":
        end = add_months(begn, TEMPORARY_FILING_MONTHS) - dt.timedelta(days=1)

    def work(conn: Connection) -> FilingRecord:
        lock(conn, psn_no)
        person = existing_person(conn, psn_no)
        existing_region(conn, target, "mdtrtarea_admvs")
        home_row = next((r for r in reversed(repo.enrolments_of(conn, psn_no)) if r.insutype in BASIC_INSUTYPES), None)
        home = home_row.admdvs if home_row is not None else person.admdvs
        if policies.find_region(target) == policies.find_region(home):
            raise fail(
                "mdtrtarea_admvs", f"{target} is in the insuring region {home}; no filing is needed", "SAME_REGION"
            )
        clash = _overlapping_filing(conn, psn_no, "offsite", begn, end, None)
        if clash is not None:
            raise fail("begn_date", f"overlaps active off-site filing {clash.id}; cancel it first", "FILING_OVERLAP")
        return _insert_filing(
            conn,
            {
                "psn_no": psn_no,
                "kind": "offsite",
                "offsite_type": offsite_type,
                "mdtrtarea_admvs": target,
                "dise_codg": None,
                "begn_date": begn,
                "end_date": end,
                "status": "active",
                "created_at": clock(),
            },
        )

    return run(db, work)


def file_disease(
    db: Db, *, psn_no: str, dise_codg: str, begn_date: dt.date, clock: Clock, end_date: dt.date | None = None
) -> FilingRecord:
    """门诊慢特病备案 for one disease (``dise_codg``), valid from ``begn_date`` (open-ended if no end)."""
    psn_no = need_psn_no(psn_no)
    code = need_text("dise_codg", dise_codg, max_len=20, pattern=_DISE_RE)
    begn = need_date("begn_date", begn_date)
    end = need_optional_date("end_date", end_date)
    check_period("end_date", begn, end)

    def work(conn: Connection) -> FilingRecord:
        lock(conn, psn_no)
        existing_person(conn, psn_no)
        clash = _overlapping_filing(conn, psn_no, "disease", begn, end, code)
        if clash is not None:
            raise fail("dise_codg", f"{code} is already filed (filing {clash.id})", "FILING_OVERLAP")
        return _insert_filing(
            conn,
            {
                "psn_no": psn_no,
                "kind": "disease",
                "offsite_type": None,
                "mdtrtarea_admvs": None,
                "dise_codg": code,
                "begn_date": begn,
                "end_date": end,
                "status": "active",
                "created_at": clock(),
            },
        )

    return run(db, work)


def cancel_filing(db: Db, *, filing_id: int) -> FilingRecord:
    """备案撤销: status ``cancelled`` (the row stays)."""
    if not isinstance(filing_id, int) or isinstance(filing_id, bool):
        raise fail("filing_id", "must be an integer")

    def work(conn: Connection) -> FilingRecord:
        row = conn.execute(select(filings).where(filings.c.id == filing_id)).first()
        if row is None:
            raise fail("filing_id", f"filing {filing_id} does not exist", "FILING_UNKNOWN")
        done = conn.execute(
            update(filings).where(filings.c.id == filing_id, filings.c.status == "active").values(status="cancelled")
        )
        if row.status != "active" or done.rowcount != 1:
            raise fail("filing_id", f"filing {filing_id} is already cancelled", "FILING_CANCELLED")
        return _filing(conn.execute(select(filings).where(filings.c.id == filing_id)).one())

    return run(db, work)


def filings_of(db: Db, psn_no: str, *, include_cancelled: bool = False) -> list[FilingRecord]:
    def work(conn: Connection) -> list[FilingRecord]:
        existing_person(conn, psn_no)
        query = select(filings).where(filings.c.psn_no == psn_no)
        if not include_cancelled:
            query = query.where(filings.c.status == "active")
        return [_filing(r) for r in conn.execute(query.order_by(filings.c.begn_date, filings.c.id)).all()]

    return run(db, work)


class FilingRefused(YibaoError):
    """An institution may not file, or cancel a filing, on this person's behalf."""

    code = "FILING_REFUSED"


def filer_person(
    db: Engine, *, fixmedins_code: str, psn_no: str | None, cred: Credential | None, now: dt.datetime
) -> str:
    """The person an institution files for (the gateway's 2501–2504): named by a credential (and then a
    ``psn_no`` given must be its person's), or else a ``psn_no`` with a visit at the institution."""
    if cred is not None:
        named = person_of(db, cred, now)
        if psn_no and psn_no != named:
            raise FilingRefused("psn_no 与凭证不符")
        return named
    assert psn_no, "a filing names its person"

    def work(conn: Connection) -> bool:
        row = conn.execute(
            select(visits.c.mdtrt_id)
            .where(visits.c.psn_no == psn_no, visits.c.fixmedins_code == fixmedins_code, visits.c.status != "cancelled")
            .limit(1)
        ).first()
        return row is not None

    if not transact(db, work, readonly=True):
        raise FilingRefused(
            f"本机构无参保人 {psn_no} 的就诊记录, 不能代办备案; 请同时提供参保人凭证 (mdtrt_cert_type, mdtrt_cert_no)"
        )
    return psn_no


def cancel_filing_of(db: Db, *, psn_no: str, filing_id: int, kind: str) -> FilingRecord:
    """Cancel the person's active filing ``filing_id`` of ``kind`` (offsite | disease); refused, in Chinese, when
    the person has no such filing or it is already cancelled."""

    def work(conn: Connection) -> FilingRecord:
        row = conn.execute(select(filings).where(filings.c.id == filing_id)).first()
        if row is None or row.psn_no != psn_no or row.kind != kind:
            what = "异地就医备案" if kind == "offsite" else "门诊慢特病备案"
            raise FilingRefused(f"参保人 {psn_no} 没有流水号为 {filing_id} 的{what}")
        if row.status != "active":
            raise FilingRefused(f"备案 {filing_id} 已撤销")
        try:
            return cancel_filing(conn, filing_id=filing_id)
        except RequestError as exc:
            if exc.code == "FILING_CANCELLED":
                raise FilingRefused(f"备案 {filing_id} 已撤销") from None
            raise

    return run(db, work)


# -- manual payout --------------------------------------------------------------------
def pay_institution(
    db: Db, *, fixmedins_code: str, amount_fen: int, ref: str, clock: Clock, admdvs: str | None = None
) -> PayoutRecord:
    """拨付: pay an institution what the fund owes it — debit ``inst:<code>:payable``, credit
    ``bank:<admdvs>`` (default: the institution's region). Never more than is owed;
    idempotent on ``ref`` (the same ref and amount returns the booked payout)."""
    code = need_text("fixmedins_code", fixmedins_code, max_len=20)
    amount = _need_fen("amount_fen", amount_fen, minimum=1, maximum=10**15)
    key = need_text("ref", ref, max_len=40, pattern=_REF_RE)
    if admdvs is not None:
        need_text("admdvs", admdvs, max_len=6, pattern=_REGION_RE)
    journal_ref = f"payout:{key}"
    payable = ledger.institution_payable(code)

    def work(conn: Connection) -> PayoutRecord:
        if conn.dialect.name == "postgresql":
            inst = conn.execute(
                select(institutions).where(institutions.c.fixmedins_code == code).with_for_update()
            ).first()
        else:
            inst = repo.get_institution(conn, code)
        if inst is None:
            raise fail("fixmedins_code", f"institution {code} is not registered", "INSTITUTION_UNKNOWN")
        bank = ledger.bank(admdvs or inst.admdvs)
        if admdvs is not None:
            existing_region(conn, admdvs, "admdvs")
        booked = conn.execute(
            select(journal_entries.c.id).where(journal_entries.c.kind == "payout", journal_entries.c.ref == journal_ref)
        ).first()
        expected = {payable: amount, bank: -amount}
        if booked is not None:
            entry = repo.entry_of(conn, int(booked.id))
            if {p.account: p.amount_fen for p in entry.postings} != expected:
                raise fail("ref", f"payout {key} was booked with other amounts or accounts", "PAYOUT_CONFLICT")
            owed = -repo.account_balance_by_postings(conn, payable)
            return PayoutRecord(key, code, amount, int(booked.id), owed, replayed=True)
        owed = -repo.account_balance_by_postings(conn, payable)
        if amount > owed:
            raise fail(
                "amount_fen", f"{inst.name} is owed {format_fen(max(owed, 0))}, not {format_fen(amount)}", "OVERPAYMENT"
            )
        entry = Entry("payout", journal_ref, f"payout to {code}", (Posting(payable, amount), Posting(bank, -amount)))
        ledger.check_balanced(entry)
        entry_id = repo.post_entry(conn, entry, clock())
        return PayoutRecord(key, code, amount, entry_id, owed - amount)

    return run(db, work)
