"""Registry (参保登记): regions, institutions, insured persons and their enrolments,
identities and settlement suspensions, and their credentials (social security card,
e-voucher, settlement PIN, loss reporting).

Every public function takes ``db`` — an :class:`~sqlalchemy.Engine` (the function
runs in its own unit of work via :func:`~yibao.service.uow.transact`) or an open
:class:`~sqlalchemy.Connection` (it runs inside the caller's transaction, as the
demo seeder does). Input is validated before anything is written; a refusal is a
:class:`~yibao.errors.RequestError` naming the field, with a stable ``code``
(see ``docs/registry.md``). Time comes from the ``clock`` argument only.

The one deliberate write on a refusal is a wrong old PIN in :func:`change_pin`:
the failure counts towards the lock, as at settlement.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, insert, or_, select, update

from .. import ledger
from ..db import repository as repo
from ..db import settlement_rows
from ..db.schema import credentials, enrolments, identities, institutions, persons, pins, regions
from ..errors import RequestError
from ..idcard import parse_idcard
from ..policy import Policy, PolicyStore
from ..policy.model import Funding
from .credentials import check_pin, clear_portal_lock, hash_pin
from .uow import transact

__all__ = [
    "BASIC_INSUTYPES",
    "CardRecord",
    "Clock",
    "Db",
    "EnrolmentRecord",
    "EvoucherRecord",
    "IdentityRecord",
    "InstitutionRecord",
    "PersonInfo",
    "PersonRecord",
    "RegionRecord",
    "add_identity",
    "add_institution",
    "add_months",
    "add_region",
    "change_pin",
    "compute_waiting_until",
    "end_enrolment",
    "end_identity",
    "enrol",
    "issue_card",
    "issue_evoucher",
    "lift_suspension",
    "lift_temporary_loss",
    "pause_enrolment",
    "person_info",
    "region_chain",
    "register_person",
    "replace_card",
    "report_formal_loss",
    "report_temporary_loss",
    "reset_pin",
    "resume_enrolment",
    "set_designation",
    "set_initial_pin",
    "set_networked",
    "set_pin_by_terminal",
    "suspend_settlement",
]

Clock = Callable[[], dt.datetime]
#: Where a service runs: its own unit of work (Engine) or the caller's transaction (Connection).
Db = Engine | Connection
T = TypeVar("T")

#: The basic schemes a person may hold only one of at a time (重复参保 is refused).
BASIC_INSUTYPES = ("310", "390")
#: psn_type category (policy ``person_categories``) → the scheme it belongs to.
_SCHEME_OF_CATEGORY = {"in_service": "310", "retired": "310", "resident": "390", "student": "390"}
_OFFSITE_TYPES = ("long_term", "referral", "emergency", "temporary")
_REGION_RE = re.compile(r"^\d{6}$", re.ASCII)
_PSN_NO_RE = re.compile(r"^[0-9A-Za-z]{1,30}$")
_INST_CODE_RE = re.compile(r"^[A-Z]\d{11}$", re.ASCII)
_HOSP_LV = {f"{n:02d}" for n in range(1, 15)}
_CARD_NO_RE = re.compile(r"^[0-9A-Z]{6,20}$")
_CARD_SN_RE = re.compile(r"^[0-9A-Z]{1,32}$")
_PIN_RE = re.compile(r"^\d{6}$", re.ASCII)
_IDET_RE = re.compile(r"^[a-z][a-z0-9_]{0,19}$")


# -- plumbing -------------------------------------------------------------------------
def run(db: Db, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in its own unit of work (Engine) or in the caller's transaction (Connection)."""
    if isinstance(db, Connection):
        return work(db)
    return transact(db, work)


def fail(field: str, reason: str, code: str | None = None) -> RequestError:
    return RequestError(field, reason, code=code)


def need_date(field: str, value: object) -> dt.date:
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise fail(field, f"must be a date, got {type(value).__name__}")
    return value


def need_optional_date(field: str, value: object) -> dt.date | None:
    return None if value is None else need_date(field, value)


def need_text(field: str, value: object, *, max_len: int, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        raise fail(field, f"must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise fail(field, "must not be empty")
    if len(text) > max_len:
        raise fail(field, f"longer than {max_len} characters")
    if pattern is not None and not pattern.match(text):
        raise fail(field, f"{text!r} does not match {pattern.pattern}")
    return text


def need_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise fail(field, f"must be true or false, got {type(value).__name__}")
    return value


def need_psn_no(value: object, field: str = "psn_no") -> str:
    return need_text(field, value, max_len=30, pattern=_PSN_NO_RE)


def check_period(field: str, begn: dt.date, end: dt.date | None) -> None:
    if end is not None and end < begn:
        raise fail(field, f"{end} is before the begin date {begn}")


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus ``months`` calendar months (the day clamped to the month's end)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    last = (dt.date(year + (month == 12), month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(year, month, min(day.day, last))


def months_between(start: dt.date, end: dt.date) -> int:
    """Whole calendar months from ``start`` to ``end`` (0 if ``end`` is not later)."""
    months = (end.year - start.year) * 12 + end.month - start.month - (1 if end.day < start.day else 0)
    return max(0, months)


def existing_person(conn: Connection, psn_no: str, field: str = "psn_no") -> Any:
    row = repo.get_person(conn, psn_no)
    if row is None:
        raise fail(field, f"person {psn_no} is not registered", "PERSON_UNKNOWN")
    return row


def existing_region(conn: Connection, code: str, field: str) -> Any:
    row = conn.execute(select(regions).where(regions.c.code == code)).first()
    if row is None:
        raise fail(field, f"region {code} is not registered", "REGION_UNKNOWN")
    return row


def policy_at(policies: PolicyStore, admdvs: str, date: dt.date, field: str = "admdvs") -> Policy:
    """The policy governing ``admdvs`` on ``date``.

    Registry records may predate the oldest policy file (a person enrolled in 2005):
    for those dates the region's oldest known policy stands in.
    """
    try:
        return policies.resolve(admdvs, date)
    except RequestError as exc:
        region = policies.find_region(admdvs)
        if exc.code == "NO_POLICY_IN_FORCE" and region is not None and policies.versions(region):
            return policies.resolve(admdvs, policies.versions(region)[0])
        raise fail(field, exc.reason, exc.code) from None


def current_enrolment(conn: Connection, psn_no: str, date: dt.date) -> Any:
    """The person's basic enrolment covering ``date`` (employee scheme first), or None."""
    for insutype in BASIC_INSUTYPES:
        row = repo.enrolment_on(conn, psn_no, insutype, date)
        if row is not None:
            return row
    return None


def person_policy(conn: Connection, policies: PolicyStore, person: Any, date: dt.date) -> Policy:
    """The policy that governs a person: their current enrolment's region, else their own."""
    enrol_row = current_enrolment(conn, person.psn_no, date)
    return policy_at(policies, enrol_row.admdvs if enrol_row is not None else person.admdvs, date)


def lock(conn: Connection, *psn_nos: str) -> None:
    repo.lock_persons(conn, psn_nos)


# -- records --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RegionRecord:
    code: str
    name: str
    parent_code: str | None


#: A designated institution as stored (the same row type the settlement reads).
InstitutionRecord = settlement_rows.Institution


@dataclass(frozen=True, slots=True)
class PersonRecord:
    psn_no: str
    name: str
    certno: str
    gend: str
    brdy: dt.date
    admdvs: str
    naty: str | None = None  # 民族 (GB/T 3304), None when not recorded


@dataclass(frozen=True, slots=True)
class EnrolmentRecord:
    id: int
    psn_no: str
    insutype: str
    psn_type: str
    admdvs: str
    begn_date: dt.date
    pause_date: dt.date | None
    end_date: dt.date | None
    waiting_until: dt.date | None
    emp_name: str | None = None  # 单位名称, None when not recorded


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    id: int
    psn_no: str
    idet_type: str
    begn_date: dt.date
    end_date: dt.date | None


@dataclass(frozen=True, slots=True)
class CardRecord:
    psn_no: str
    card_no: str
    card_sn: str
    status: str


@dataclass(frozen=True, slots=True)
class EvoucherRecord:
    psn_no: str
    token: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class PersonInfo:
    """What the registry knows of one person (the 1101 view)."""

    person: PersonRecord
    enrolments: tuple[EnrolmentRecord, ...]
    identities: tuple[IdentityRecord, ...]
    cards: tuple[CardRecord, ...]
    suspended_from: dt.date | None
    suspended_to: dt.date | None
    suspension_reason: str | None
    pin_set: bool
    pin_must_change: bool
    pin_locked: bool
    balance_current_fen: int
    balance_historical_fen: int


def _region(row: Any) -> RegionRecord:
    return RegionRecord(row.code, row.name, row.parent_code)


def _institution(row: Any) -> InstitutionRecord:
    return InstitutionRecord(
        row.fixmedins_code,
        row.name,
        row.kind,
        row.hosp_lv,
        row.admdvs,
        bool(row.designated),
        row.valid_from,
        row.valid_to,
        bool(row.networked),
        bool(row.pin_by_terminal),
    )


def _person(row: Any) -> PersonRecord:
    return PersonRecord(row.psn_no, row.name, row.certno, row.gend, row.brdy, row.admdvs, row.naty)


def _enrolment(row: Any) -> EnrolmentRecord:
    return EnrolmentRecord(
        int(row.id),
        row.psn_no,
        row.insutype,
        row.psn_type,
        row.admdvs,
        row.begn_date,
        row.pause_date,
        row.end_date,
        row.waiting_until,
        row.emp_name,
    )


def _identity(row: Any) -> IdentityRecord:
    return IdentityRecord(int(row.id), row.psn_no, row.idet_type, row.begn_date, row.end_date)


def _card(row: Any) -> CardRecord:
    return CardRecord(row.psn_no, row.number, row.card_sn or "", row.status)


# -- regions --------------------------------------------------------------------------
def add_region(db: Db, *, code: str, name: str, parent_code: str | None = None) -> RegionRecord:
    """Register a 6-digit region under its parent; repeating an identical registration is a no-op."""
    code = need_text("code", code, max_len=6, pattern=_REGION_RE)
    name = need_text("name", name, max_len=64)
    parent = None if parent_code is None else need_text("parent_code", parent_code, max_len=6, pattern=_REGION_RE)
    if parent == code:
        raise fail("parent_code", "a region cannot be its own parent")

    def work(conn: Connection) -> RegionRecord:
        found = conn.execute(select(regions).where(regions.c.code == code)).first()
        if found is not None:
            if (found.name, found.parent_code) != (name, parent):
                raise fail("code", f"region {code} exists as {found.name} under {found.parent_code}", "REGION_EXISTS")
            return _region(found)
        if parent is not None:
            existing_region(conn, parent, "parent_code")
        conn.execute(insert(regions).values(code=code, name=name, parent_code=parent))
        return RegionRecord(code, name, parent)

    return run(db, work)


def region_chain(db: Db, code: str) -> list[RegionRecord]:
    """The region and its ancestors, nearest first."""
    code = need_text("code", code, max_len=6, pattern=_REGION_RE)

    def work(conn: Connection) -> list[RegionRecord]:
        chain = [_region(existing_region(conn, code, "code"))]
        while chain[-1].parent_code is not None and len(chain) < 16:
            chain.append(_region(existing_region(conn, chain[-1].parent_code, "code")))
        return chain

    return run(db, work)


# -- institutions ---------------------------------------------------------------------
def add_institution(
    db: Db,
    *,
    fixmedins_code: str,
    name: str,
    kind: str,
    hosp_lv: str,
    admdvs: str,
    valid_from: dt.date,
    valid_to: dt.date | None = None,
    designated: bool = True,
    networked: bool = False,
) -> InstitutionRecord:
    """Register a hospital or pharmacy (定点医药机构) with its level, region and designation."""
    code = need_text("fixmedins_code", fixmedins_code, max_len=12, pattern=_INST_CODE_RE)
    name = need_text("name", name, max_len=128)
    if kind not in ("hospital", "pharmacy"):
        raise fail("kind", f"must be hospital or pharmacy, got {kind!r}")
    if hosp_lv not in _HOSP_LV:
        raise fail("hosp_lv", f"must be a level code 01–14, got {hosp_lv!r}")
    admdvs = need_text("admdvs", admdvs, max_len=6, pattern=_REGION_RE)
    start = need_date("valid_from", valid_from)
    end = need_optional_date("valid_to", valid_to)
    check_period("valid_to", start, end)
    record = InstitutionRecord(
        code,
        name,
        kind,
        hosp_lv,
        admdvs,
        need_bool("designated", designated),
        start,
        end,
        need_bool("networked", networked),
    )

    def work(conn: Connection) -> InstitutionRecord:
        existing_region(conn, admdvs, "admdvs")
        if repo.get_institution(conn, code) is not None:
            raise fail("fixmedins_code", f"institution {code} is already registered", "INSTITUTION_EXISTS")
        conn.execute(
            insert(institutions).values(
                fixmedins_code=code,
                name=name,
                kind=kind,
                hosp_lv=hosp_lv,
                admdvs=admdvs,
                designated=record.designated,
                valid_from=start,
                valid_to=end,
                networked=record.networked,
            )
        )
        return record

    return run(db, work)


def _existing_institution(conn: Connection, code: str) -> Any:
    row = repo.get_institution(conn, code)
    if row is None:
        raise fail("fixmedins_code", f"institution {code} is not registered", "INSTITUTION_UNKNOWN")
    return row


def set_designation(
    db: Db, *, fixmedins_code: str, designated: bool, valid_from: dt.date, valid_to: dt.date | None = None
) -> InstitutionRecord:
    """Grant or withdraw 定点 status and its validity period."""
    need_bool("designated", designated)
    start = need_date("valid_from", valid_from)
    end = need_optional_date("valid_to", valid_to)
    check_period("valid_to", start, end)

    def work(conn: Connection) -> InstitutionRecord:
        _existing_institution(conn, fixmedins_code)
        conn.execute(
            update(institutions)
            .where(institutions.c.fixmedins_code == fixmedins_code)
            .values(designated=designated, valid_from=start, valid_to=end)
        )
        return _institution(_existing_institution(conn, fixmedins_code))

    return run(db, work)


def set_networked(db: Db, *, fixmedins_code: str, networked: bool) -> InstitutionRecord:
    """Open or close 异地就医直接结算 at an institution."""
    need_bool("networked", networked)

    def work(conn: Connection) -> InstitutionRecord:
        _existing_institution(conn, fixmedins_code)
        conn.execute(
            update(institutions).where(institutions.c.fixmedins_code == fixmedins_code).values(networked=networked)
        )
        return _institution(_existing_institution(conn, fixmedins_code))

    return run(db, work)


def set_pin_by_terminal(db: Db, *, fixmedins_code: str, enabled: bool) -> InstitutionRecord:
    """Whether the institution's PIN pads verify the settlement PIN (密码由终端校验): its 2206/2207 then carry
    no pin; a pin that is sent is still checked by the platform."""
    need_bool("enabled", enabled)

    def work(conn: Connection) -> InstitutionRecord:
        _existing_institution(conn, fixmedins_code)
        conn.execute(
            update(institutions).where(institutions.c.fixmedins_code == fixmedins_code)
            .values(pin_by_terminal=enabled)
        )  # fmt: skip
        return _institution(_existing_institution(conn, fixmedins_code))

    return run(db, work)


# -- persons --------------------------------------------------------------------------
@cache
def nationalities() -> dict[str, str]:
    """民族 by GB/T 3304 code (01 汉族 …), as the national interface's ``naty`` carries them."""
    path = resources.files("yibao").joinpath("data/dictionaries/naty.csv")
    with path.open(encoding="utf-8") as handle:
        return {row["code"]: row["name"] for row in csv.DictReader(handle)}


def register_person(
    db: Db,
    *,
    psn_no: str,
    name: str,
    certno: str,
    admdvs: str,
    clock: Clock,
    gend: str | None = None,
    brdy: dt.date | None = None,
    naty: str | None = None,
) -> PersonRecord:
    """Register an insured person; gender and birth date come from the ID number (GB 11643).

    Explicit ``gend`` / ``brdy`` are only checked against the ID number; ``naty`` (民族) is a GB/T 3304 code.
    """
    if naty is not None and naty not in nationalities():
        raise fail("naty", f"不是 GB/T 3304 民族代码 (01 汉族 … 56 基诺族, 97 其他, 98 外国血统中国籍人士): "
                   f"{str(naty)[:10]!r}")
    psn_no = need_psn_no(psn_no)
    name = need_text("name", name, max_len=64)
    if not isinstance(certno, str):
        raise fail("certno", "must be a string", "CERTNO_INVALID")
    try:
        card = parse_idcard(certno)
    except ValueError as exc:
        raise fail("certno", str(exc), "CERTNO_INVALID") from None
    if gend is not None:
        if gend not in ("1", "2"):
            raise fail("gend", f"must be 1 (male) or 2 (female), got {gend!r}")
        if gend != card.gend:
            raise fail("gend", f"gender {gend} conflicts with the ID number (says {card.gend})", "GENDER_MISMATCH")
    if brdy is not None and need_date("brdy", brdy) != card.birth_date:
        raise fail("brdy", f"birth date {brdy} conflicts with the ID number ({card.birth_date})", "BIRTH_DATE_MISMATCH")
    if card.birth_date > clock().date():
        raise fail("certno", f"birth date {card.birth_date} is in the future", "CERTNO_INVALID")
    admdvs = need_text("admdvs", admdvs, max_len=6, pattern=_REGION_RE)
    record = PersonRecord(psn_no, name, card.number, card.gend, card.birth_date, admdvs, naty)

    def work(conn: Connection) -> PersonRecord:
        existing_region(conn, admdvs, "admdvs")
        if repo.get_person(conn, psn_no) is not None:
            raise fail("psn_no", f"person {psn_no} is already registered", "PERSON_EXISTS")
        other = repo.person_by_certno(conn, card.number)
        if other is not None:
            raise fail("certno", f"ID number already registered as person {other.psn_no}", "CERTNO_TAKEN")
        conn.execute(
            insert(persons).values(
                psn_no=psn_no, name=name, certno=card.number, gend=card.gend, brdy=card.birth_date, admdvs=admdvs,
                naty=naty,
            )
        )
        return record

    return run(db, work)


def person_info(db: Db, psn_no: str) -> PersonInfo:
    """Everything the registry holds on a person (identity, enrolments, identities, cards, PIN, balances)."""

    def work(conn: Connection) -> PersonInfo:
        row = existing_person(conn, psn_no)
        ids = conn.execute(
            select(identities).where(identities.c.psn_no == psn_no).order_by(identities.c.begn_date, identities.c.id)
        ).all()
        cards = conn.execute(
            select(credentials)
            .where(credentials.c.psn_no == psn_no, credentials.c.kind == "card")
            .order_by(credentials.c.id)
        ).all()
        pin = repo.pin_row(conn, psn_no)
        current, historical = repo.balances(conn, psn_no)
        return PersonInfo(
            person=_person(row),
            enrolments=tuple(_enrolment(e) for e in repo.enrolments_of(conn, psn_no)),
            identities=tuple(_identity(i) for i in ids),
            cards=tuple(_card(c) for c in cards),
            suspended_from=row.suspended_from,
            suspended_to=row.suspended_to,
            suspension_reason=row.suspension_reason,
            pin_set=pin is not None,
            pin_must_change=bool(pin.must_change) if pin is not None else False,
            pin_locked=bool(pin.locked) if pin is not None else False,
            balance_current_fen=current,
            balance_historical_fen=historical,
        )

    return run(db, work)


# -- enrolments -----------------------------------------------------------------------
def coverage_end(row: Any) -> dt.date | None:
    """Last day an enrolment row covered (its pause ends coverage); None while open."""
    ends = [d for d in (row.end_date, row.pause_date - dt.timedelta(days=1) if row.pause_date else None) if d]
    return min(ends) if ends else None


def compute_waiting_until(
    funding: Funding, *, insutype: str, begn_date: dt.date, applied_on: dt.date, previous_end: dt.date | None
) -> dt.date | None:
    """The last day of the waiting period (等待期) of a new enrolment, or None (domain.md §7).

    ``previous_end`` is the last covered day of the person's latest earlier enrolment
    (any basic scheme for residents, the employee scheme for employees), or None for a
    first enrolment.

    * Residents (390): continuous coverage (no gap) never waits. After a lapse, or when
      enrolling for the first time after coverage should already have begun (late, not
      in advance), benefits wait ``resident_waiting_months`` plus
      ``resident_extra_months_per_lapsed_year`` per whole lapsed year, counted from
      the later of the begin date and the application date. (Newborns are handled by
      :func:`enrol`: covered from birth.)
    * Employees (310): after a lapse of at least ``employee_lapse_months`` whole months,
      benefits resume after as many months of payment from the new begin date.
    """
    gap_start = previous_end + dt.timedelta(days=1) if previous_end is not None else None
    broken = gap_start is not None and gap_start < begn_date
    lapsed_months = months_between(gap_start, begn_date) if gap_start is not None and broken else 0
    if insutype == "390":
        late_first = previous_end is None and applied_on >= begn_date
        if not (broken or late_first):
            return None
        months = funding.resident_waiting_months + funding.resident_extra_months_per_lapsed_year * (lapsed_months // 12)
        if months <= 0:
            return None
        return add_months(max(begn_date, applied_on), months) - dt.timedelta(days=1)
    if insutype == "310" and broken and lapsed_months >= funding.employee_lapse_months:
        return add_months(begn_date, funding.employee_lapse_months) - dt.timedelta(days=1)
    return None


def _open_personal_accounts(conn: Connection, psn_no: str) -> None:
    repo.account_ids(conn, (ledger.personal(psn_no, "current"), ledger.personal(psn_no, "historical")))


def _check_psn_type(policy: Policy, insutype: str, psn_type: str) -> None:
    if policy.scheme(insutype) is None:
        raise fail("insutype", f"region {policy.region} has no scheme {insutype}", "INSUTYPE_UNKNOWN")
    category = policy.params.person_categories.get(psn_type)
    if category is None:
        raise fail("psn_type", f"unknown person type {psn_type}", "PSN_TYPE_INVALID")
    if _SCHEME_OF_CATEGORY.get(category) != insutype:
        raise fail("psn_type", f"person type {psn_type} ({category}) cannot enrol in {insutype}", "PSN_TYPE_INVALID")


def _insert_enrolment(conn: Connection, values: dict[str, Any]) -> EnrolmentRecord:
    key = conn.execute(insert(enrolments).values(**values)).inserted_primary_key
    assert key is not None
    if values["insutype"] == "310":
        _open_personal_accounts(conn, values["psn_no"])
    return EnrolmentRecord(
        int(key[0]),
        values["psn_no"],
        values["insutype"],
        values["psn_type"],
        values["admdvs"],
        values["begn_date"],
        None,
        None,
        values["waiting_until"],
        values.get("emp_name"),
    )


def _previous_end(history: Sequence[Any], insutype: str, before: dt.date) -> dt.date | None:
    """Last covered day of the latest earlier enrolment that counts for continuity."""
    kinds = BASIC_INSUTYPES if insutype == "390" else (insutype,)
    ends = [coverage_end(row) for row in history if row.insutype in kinds and row.begn_date < before]
    known = [e for e in ends if e is not None]
    return max(known) if known else None


def _enrol_in(
    conn: Connection,
    policies: PolicyStore,
    *,
    psn_no: str,
    insutype: str,
    psn_type: str,
    begn_date: dt.date,
    admdvs: str | None,
    applied_on: dt.date,
    emp_name: str | None = None,
) -> EnrolmentRecord:
    person = existing_person(conn, psn_no)
    region = admdvs if admdvs is not None else person.admdvs
    existing_region(conn, region, "admdvs")
    policy = policy_at(policies, region, begn_date)
    _check_psn_type(policy, insutype, psn_type)
    funding = policy.params.funding
    start = begn_date
    waiting: dt.date | None
    history = [r for r in repo.enrolments_of(conn, psn_no) if r.insutype in BASIC_INSUTYPES]
    newborn = insutype == "390" and not history and 0 <= (applied_on - person.brdy).days <= funding.newborn_grace_days
    if begn_date < person.brdy:
        raise fail("begn_date", f"{begn_date} is before the birth date {person.brdy}")
    if newborn:
        start, waiting = person.brdy, None  # covered from birth
    else:
        waiting = compute_waiting_until(
            funding,
            insutype=insutype,
            begn_date=start,
            applied_on=applied_on,
            previous_end=_previous_end(history, insutype, start),
        )
    for row in history:
        if row.end_date is None or row.end_date >= start:  # the new enrolment is open-ended
            state = "paused" if row.pause_date is not None and row.end_date is None else "open"
            raise fail(
                "begn_date",
                f"overlaps enrolment {row.id} ({row.insutype} {row.begn_date}–{row.end_date or state}); "
                "end or resume it instead",
                "ENROLMENT_OVERLAP",
            )
    return _insert_enrolment(
        conn,
        {
            "psn_no": psn_no,
            "insutype": insutype,
            "psn_type": psn_type,
            "admdvs": region,
            "begn_date": start,
            "waiting_until": waiting,
            "emp_name": emp_name,
        },
    )


def enrol(
    db: Db,
    policies: PolicyStore,
    *,
    psn_no: str,
    insutype: str,
    psn_type: str,
    begn_date: dt.date,
    clock: Clock,
    admdvs: str | None = None,
    emp_name: str | None = None,
) -> EnrolmentRecord:
    """Enrol a person in a basic scheme from ``begn_date``; computes ``waiting_until``. ``emp_name``: the
    employer (单位名称) of an employee enrolment, as 1101 answers it.

    Employees (310) get their personal ledger accounts opened. A newborn enrolled
    in the resident scheme within ``newborn_grace_days`` of birth is covered from birth.
    """
    psn_no = need_psn_no(psn_no)
    if insutype not in BASIC_INSUTYPES:
        raise fail("insutype", f"must be one of {', '.join(BASIC_INSUTYPES)}, got {insutype!r}", "INSUTYPE_UNKNOWN")
    if not isinstance(psn_type, str) or not (psn_type.isascii() and psn_type.isdigit()):
        raise fail("psn_type", f"must be a numeric code, got {psn_type!r}", "PSN_TYPE_INVALID")
    start = need_date("begn_date", begn_date)
    if admdvs is not None:
        need_text("admdvs", admdvs, max_len=6, pattern=_REGION_RE)
    if emp_name is not None:
        emp_name = need_text("emp_name", emp_name, max_len=200)

    def work(conn: Connection) -> EnrolmentRecord:
        lock(conn, psn_no)
        return _enrol_in(
            conn,
            policies,
            psn_no=psn_no,
            insutype=insutype,
            psn_type=psn_type,
            begn_date=start,
            admdvs=admdvs,
            applied_on=clock().date(),
            emp_name=emp_name,
        )

    return run(db, work)


def _latest(conn: Connection, psn_no: str, insutype: str) -> Any:
    rows = [r for r in repo.enrolments_of(conn, psn_no) if r.insutype == insutype]
    if not rows:
        raise fail("insutype", f"person {psn_no} has no {insutype} enrolment", "NOT_ENROLLED")
    return rows[-1]


def pause_enrolment(db: Db, *, psn_no: str, insutype: str, pause_date: dt.date) -> EnrolmentRecord:
    """Pause (暂停) the current enrolment from ``pause_date``: the pool stops paying."""
    psn_no = need_psn_no(psn_no)
    day = need_date("pause_date", pause_date)

    def work(conn: Connection) -> EnrolmentRecord:
        lock(conn, psn_no)
        existing_person(conn, psn_no)
        row = _latest(conn, psn_no, insutype)
        if row.pause_date is not None:
            raise fail("insutype", f"enrolment {row.id} is already paused from {row.pause_date}", "ALREADY_PAUSED")
        if row.end_date is not None and row.end_date < day:
            raise fail("pause_date", f"enrolment {row.id} ended on {row.end_date}", "NOT_ENROLLED")
        if day <= row.begn_date:
            raise fail("pause_date", f"must be after the begin date {row.begn_date}")
        conn.execute(update(enrolments).where(enrolments.c.id == row.id).values(pause_date=day))
        return _enrolment(conn.execute(select(enrolments).where(enrolments.c.id == row.id)).one())

    return run(db, work)


def resume_enrolment(
    db: Db, policies: PolicyStore, *, psn_no: str, insutype: str, resume_date: dt.date, clock: Clock
) -> EnrolmentRecord:
    """Resume a paused enrolment: the paused row ends the day before, a new row begins.

    The new row's ``waiting_until`` follows :func:`compute_waiting_until` with the
    pause as the lapse.
    """
    psn_no = need_psn_no(psn_no)
    day = need_date("resume_date", resume_date)

    def work(conn: Connection) -> EnrolmentRecord:
        lock(conn, psn_no)
        existing_person(conn, psn_no)
        row = _latest(conn, psn_no, insutype)
        if row.pause_date is None:
            raise fail("insutype", f"enrolment {row.id} is not paused", "NOT_PAUSED")
        if row.end_date is not None:
            raise fail("insutype", f"enrolment {row.id} ended on {row.end_date}", "NOT_ENROLLED")
        if day <= row.pause_date:
            raise fail("resume_date", f"must be after the pause date {row.pause_date}")
        policy = policy_at(policies, row.admdvs, day)
        applied_on = clock().date()
        waiting = compute_waiting_until(
            policy.params.funding,
            insutype=insutype,
            begn_date=day,
            applied_on=applied_on,
            previous_end=row.pause_date - dt.timedelta(days=1),
        )
        conn.execute(update(enrolments).where(enrolments.c.id == row.id).values(end_date=day - dt.timedelta(days=1)))
        return _insert_enrolment(
            conn,
            {
                "psn_no": psn_no,
                "insutype": insutype,
                "psn_type": row.psn_type,
                "admdvs": row.admdvs,
                "begn_date": day,
                "waiting_until": waiting,
                "emp_name": row.emp_name,
            },
        )

    return run(db, work)


def end_enrolment(db: Db, *, psn_no: str, insutype: str, end_date: dt.date) -> EnrolmentRecord:
    """End (终止) the current enrolment on ``end_date`` (the last covered day)."""
    psn_no = need_psn_no(psn_no)
    day = need_date("end_date", end_date)

    def work(conn: Connection) -> EnrolmentRecord:
        lock(conn, psn_no)
        existing_person(conn, psn_no)
        row = _latest(conn, psn_no, insutype)
        if row.end_date is not None:
            raise fail("insutype", f"enrolment {row.id} already ended on {row.end_date}", "NOT_ENROLLED")
        check_period("end_date", row.begn_date, day)
        conn.execute(update(enrolments).where(enrolments.c.id == row.id).values(end_date=day))
        return _enrolment(conn.execute(select(enrolments).where(enrolments.c.id == row.id)).one())

    return run(db, work)


# -- identities and suspension --------------------------------------------------------
def add_identity(
    db: Db, policies: PolicyStore, *, psn_no: str, idet_type: str, begn_date: dt.date, end_date: dt.date | None = None
) -> IdentityRecord:
    """Record a special identity (低保 dibao, 特困 tekun, 返贫致贫 fanpin …) with its validity."""
    psn_no = need_psn_no(psn_no)
    kind = need_text("idet_type", idet_type, max_len=20, pattern=_IDET_RE)
    start = need_date("begn_date", begn_date)
    end = need_optional_date("end_date", end_date)
    check_period("end_date", start, end)

    def work(conn: Connection) -> IdentityRecord:
        person = existing_person(conn, psn_no)
        declared = person_policy(conn, policies, person, start).params.identities
        if kind not in declared:
            raise fail(
                "idet_type", f"{kind} is not an identity of the policy ({', '.join(declared)})", "IDENTITY_UNKNOWN"
            )
        overlapping = conn.execute(
            select(identities.c.id).where(
                identities.c.psn_no == psn_no,
                identities.c.idet_type == kind,
                or_(identities.c.end_date.is_(None), identities.c.end_date >= start),
                *([identities.c.begn_date <= end] if end is not None else []),
            )
        ).first()
        if overlapping is not None:
            raise fail("begn_date", f"overlaps identity record {overlapping.id} of type {kind}", "IDENTITY_OVERLAP")
        key = conn.execute(
            insert(identities).values(psn_no=psn_no, idet_type=kind, begn_date=start, end_date=end)
        ).inserted_primary_key
        assert key is not None
        return IdentityRecord(int(key[0]), psn_no, kind, start, end)

    return run(db, work)


def end_identity(db: Db, *, identity_id: int, end_date: dt.date) -> IdentityRecord:
    """Close an identity's validity on ``end_date``."""
    day = need_date("end_date", end_date)

    def work(conn: Connection) -> IdentityRecord:
        row = conn.execute(select(identities).where(identities.c.id == identity_id)).first()
        if row is None:
            raise fail("identity_id", f"identity record {identity_id} does not exist", "IDENTITY_UNKNOWN")
        check_period("end_date", row.begn_date, day)
        if row.end_date is not None and row.end_date < day:
            raise fail("end_date", f"the identity already ended on {row.end_date}")
        conn.execute(update(identities).where(identities.c.id == identity_id).values(end_date=day))
        return IdentityRecord(int(row.id), row.psn_no, row.idet_type, row.begn_date, day)

    return run(db, work)


def suspend_settlement(db: Db, *, psn_no: str, from_date: dt.date, to_date: dt.date, reason: str) -> PersonRecord:
    """Suspend direct settlement (e.g. a lent card) from ``from_date`` to ``to_date`` inclusive."""
    psn_no = need_psn_no(psn_no)
    start = need_date("from_date", from_date)
    end = need_date("to_date", to_date)
    check_period("to_date", start, end)
    why = need_text("reason", reason, max_len=200)

    def work(conn: Connection) -> PersonRecord:
        lock(conn, psn_no)
        row = existing_person(conn, psn_no)
        if row.suspended_from is not None and (row.suspended_to is None or row.suspended_to >= start):
            raise fail("from_date", f"already suspended {row.suspended_from}–{row.suspended_to}", "ALREADY_SUSPENDED")
        conn.execute(
            update(persons)
            .where(persons.c.psn_no == psn_no)
            .values(suspended_from=start, suspended_to=end, suspension_reason=why)
        )
        return _person(row)

    return run(db, work)


def lift_suspension(db: Db, *, psn_no: str, clock: Clock) -> PersonRecord:
    """Lift a suspension from today (past days stay suspended; a future one is cancelled)."""
    psn_no = need_psn_no(psn_no)

    def work(conn: Connection) -> PersonRecord:
        lock(conn, psn_no)
        row = existing_person(conn, psn_no)
        today = clock().date()
        if row.suspended_from is None or (row.suspended_to is not None and row.suspended_to < today):
            raise fail("psn_no", f"person {psn_no} is not suspended", "NOT_SUSPENDED")
        if row.suspended_from >= today:
            values: dict[str, Any] = {"suspended_from": None, "suspended_to": None, "suspension_reason": None}
        else:
            values = {"suspended_to": today - dt.timedelta(days=1)}
        conn.execute(update(persons).where(persons.c.psn_no == psn_no).values(**values))
        return _person(row)

    return run(db, work)


# -- cards and e-vouchers -------------------------------------------------------------
def _cards(conn: Connection, psn_no: str) -> Sequence[Any]:
    return conn.execute(
        select(credentials)
        .where(credentials.c.psn_no == psn_no, credentials.c.kind == "card")
        .order_by(credentials.c.id)
    ).all()


def _new_card_numbers(conn: Connection, admdvs: str, card_no: str | None, card_sn: str | None) -> tuple[str, str]:
    if card_no is None:
        while True:
            card_no = "D" + "".join(secrets.choice("0123456789") for _ in range(8))
            if repo.credential(conn, "card", card_no) is None:
                break
    if card_sn is None:
        card_sn = f"{admdvs}D156" + secrets.token_hex(11).upper()
    if repo.credential(conn, "card", card_no) is not None:
        raise fail("card_no", f"card number {card_no} is already in use", "CARD_NUMBER_TAKEN")
    return card_no, card_sn


def _check_card_input(card_no: str | None, card_sn: str | None) -> None:
    if card_no is not None:
        need_text("card_no", card_no, max_len=20, pattern=_CARD_NO_RE)
    if card_sn is not None:
        need_text("card_sn", card_sn, max_len=32, pattern=_CARD_SN_RE)


def _insert_card(conn: Connection, psn_no: str, card_no: str, card_sn: str, now: dt.datetime) -> CardRecord:
    conn.execute(
        insert(credentials).values(
            psn_no=psn_no, kind="card", number=card_no, card_sn=card_sn, status="active", created_at=now
        )
    )
    return CardRecord(psn_no, card_no, card_sn, "active")


def issue_card(
    db: Db, *, psn_no: str, clock: Clock, card_no: str | None = None, card_sn: str | None = None
) -> CardRecord:
    """Issue a person's first social security card (card number + ``card_sn``; generated if not given)."""
    psn_no = need_psn_no(psn_no)
    _check_card_input(card_no, card_sn)

    def work(conn: Connection) -> CardRecord:
        lock(conn, psn_no)
        person = existing_person(conn, psn_no)
        held = _cards(conn, psn_no)
        if held:
            raise fail(
                "psn_no",
                f"person {psn_no} already holds card {held[-1].number} ({held[-1].status}); "
                "a lost card is replaced with replace_card",
                "CARD_EXISTS",
            )
        number, sn = _new_card_numbers(conn, person.admdvs, card_no, card_sn)
        return _insert_card(conn, psn_no, number, sn, clock())

    return run(db, work)


def issue_evoucher(db: Db, policies: PolicyStore, *, psn_no: str, clock: Clock) -> EvoucherRecord:
    """Issue an e-voucher token (医保电子凭证 QR), expiring after ``security.evoucher_ttl_minutes``."""
    psn_no = need_psn_no(psn_no)

    def work(conn: Connection) -> EvoucherRecord:
        person = existing_person(conn, psn_no)
        now = clock()
        ttl = person_policy(conn, policies, person, now.date()).params.security.evoucher_ttl_minutes
        token = secrets.token_hex(20).upper()
        expires = now + dt.timedelta(minutes=ttl)
        conn.execute(
            insert(credentials).values(
                psn_no=psn_no,
                kind="evoucher",
                number=token,
                card_sn=None,
                status="active",
                expires_at=expires,
                created_at=now,
            )
        )
        return EvoucherRecord(psn_no, token, expires)

    return run(db, work)


def _existing_card(conn: Connection, card_no: str) -> Any:
    """The card, read again under its holder's lock (status changes of one person serialise)."""
    if not isinstance(card_no, str) or not card_no:
        raise fail("card_no", "must be a card number")
    row = repo.credential(conn, "card", card_no)
    if row is None:
        raise fail("card_no", f"card {card_no} does not exist", "CARD_UNKNOWN")
    if conn.dialect.name == "postgresql":
        lock(conn, row.psn_no)
        row = repo.credential(conn, "card", card_no)
    return row


def _set_card_status(conn: Connection, card_id: int, status: str) -> None:
    conn.execute(update(credentials).where(credentials.c.id == card_id).values(status=status))


#: Card status changes: (allowed from, to) and the refusal for every other status.
_FINAL = ("lost", "replaced")


def _card_transition(db: Db, card_no: str, allowed: tuple[str, ...], to: str, refusal: Callable[[Any], tuple[str, str]]
                     ) -> CardRecord:  # fmt: skip
    def work(conn: Connection) -> CardRecord:
        row = _existing_card(conn, card_no)
        if row.status not in allowed:
            message, code = refusal(row)
            raise fail("card_no", message, code)
        _set_card_status(conn, row.id, to)
        return CardRecord(row.psn_no, row.number, row.card_sn or "", to)

    return run(db, work)


def report_temporary_loss(db: Db, *, card_no: str) -> CardRecord:
    """临时挂失: the card stops working until the loss is lifted."""
    return _card_transition(
        db, card_no, ("active",), "temp_lost",
        lambda row: (f"card {card_no} is {row.status}, not active",
                     "LOSS_FINAL" if row.status in _FINAL else "CARD_NOT_ACTIVE"),
    )  # fmt: skip


def lift_temporary_loss(db: Db, *, card_no: str) -> CardRecord:
    """解挂: a temporarily lost card works again; a formal loss can never be lifted."""
    return _card_transition(
        db, card_no, ("temp_lost",), "active",
        lambda row: (f"card {card_no} was formally reported lost; the loss is final", "LOSS_FINAL")
        if row.status in _FINAL else (f"card {card_no} is not temporarily lost", "NOT_TEMP_LOST"),
    )  # fmt: skip


def report_formal_loss(db: Db, *, card_no: str) -> CardRecord:
    """正式挂失: final; the card never works again (issue a replacement with :func:`replace_card`)."""
    return _card_transition(
        db, card_no, ("active", "temp_lost"), "lost",
        lambda row: (f"card {card_no} is already {row.status}", "LOSS_FINAL"),
    )  # fmt: skip


def replace_card(
    db: Db, *, psn_no: str, clock: Clock, card_no: str | None = None, card_sn: str | None = None
) -> CardRecord:
    """补换卡: after a formal loss, a new card with a new number and ``card_sn``; the old one is ``replaced``."""
    psn_no = need_psn_no(psn_no)
    _check_card_input(card_no, card_sn)

    def work(conn: Connection) -> CardRecord:
        lock(conn, psn_no)
        person = existing_person(conn, psn_no)
        held = _cards(conn, psn_no)
        usable = [c for c in held if c.status in ("active", "temp_lost")]
        if usable:
            raise fail(
                "psn_no",
                f"card {usable[0].number} is {usable[0].status}; report it lost formally first",
                "CARD_NOT_LOST",
            )
        lost = [c for c in held if c.status == "lost"]
        if not lost:
            raise fail("psn_no", f"person {psn_no} has no formally lost card to replace", "CARD_NOT_LOST")
        if card_sn is not None and any(c.card_sn == card_sn for c in held):
            raise fail("card_sn", "the replacement needs a new card_sn", "CARD_NUMBER_TAKEN")
        number, sn = _new_card_numbers(conn, person.admdvs, card_no, card_sn)
        for old in lost:
            _set_card_status(conn, old.id, "replaced")
        return _insert_card(conn, psn_no, number, sn, clock())

    return run(db, work)


# -- PIN ------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def initial_pin_hash(pin: str) -> str:
    """The Argon2id hash of a policy's initial PIN, computed once per process.

    The initial PIN is public (printed on every card letter) and must be changed
    before the account pays, so sharing one salted hash among the persons still on
    it reveals nothing the ``must_change`` flag does not; each changed PIN gets its
    own salt.
    """
    return hash_pin(pin)


def _check_new_pin(field: str, pin: object) -> str:
    if not isinstance(pin, str) or not _PIN_RE.match(pin):
        raise fail(field, "must be exactly 6 digits", "PIN_FORMAT")
    if len(set(pin)) == 1:
        raise fail(field, "may not be six times the same digit", "PIN_WEAK")
    return pin


def set_initial_pin(db: Db, policies: PolicyStore, *, psn_no: str, clock: Clock) -> None:
    """Give a person the policy's initial PIN (``security.initial_pin``), to be changed before use."""
    psn_no = need_psn_no(psn_no)

    def work(conn: Connection) -> None:
        lock(conn, psn_no)
        person = existing_person(conn, psn_no)
        now = clock()
        if repo.pin_row(conn, psn_no) is not None:
            raise fail("psn_no", f"person {psn_no} already has a PIN; use reset_pin", "PIN_EXISTS")
        initial = person_policy(conn, policies, person, now.date()).params.security.initial_pin
        conn.execute(
            insert(pins).values(
                psn_no=psn_no,
                pin_hash=initial_pin_hash(initial),
                must_change=True,
                failed_attempts=0,
                locked=False,
                updated_at=now,
            )
        )

    run(db, work)


def reset_pin(db: Db, policies: PolicyStore, *, psn_no: str, clock: Clock) -> None:
    """Agency staff unlock/reset (解锁/重置): back to the initial PIN, unlocked, to be changed;
    the portal's throttle of wrong PINs is cleared too."""
    psn_no = need_psn_no(psn_no)

    def work(conn: Connection) -> None:
        lock(conn, psn_no)
        person = existing_person(conn, psn_no)
        now = clock()
        if repo.pin_row(conn, psn_no) is None:
            raise fail("psn_no", f"person {psn_no} has no PIN; use set_initial_pin", "PIN_NOT_SET")
        initial = person_policy(conn, policies, person, now.date()).params.security.initial_pin
        conn.execute(
            update(pins)
            .where(pins.c.psn_no == psn_no)
            .values(
                pin_hash=initial_pin_hash(initial), must_change=True, failed_attempts=0, locked=False, updated_at=now
            )
        )
        clear_portal_lock(conn, psn_no, now)

    run(db, work)


class _WrongPin:
    """A wrong old PIN: the unit of work commits the failure count, then the caller raises."""

    def __init__(self, error: RequestError) -> None:
        self.error = error


def change_pin(db: Db, policies: PolicyStore, *, psn_no: str, old_pin: str, new_pin: str, clock: Clock) -> None:
    """Change the PIN: the old one must verify (a wrong one counts towards the lock);
    the new one is 6 digits, not one digit six times, different from the old and the initial PIN."""
    psn_no = need_psn_no(psn_no)
    if not isinstance(old_pin, str) or not _PIN_RE.match(old_pin):
        raise fail("old_pin", "must be exactly 6 digits", "PIN_FORMAT")
    _check_new_pin("new_pin", new_pin)
    if new_pin == old_pin:
        raise fail("new_pin", "must differ from the old PIN", "PIN_UNCHANGED")

    def work(conn: Connection) -> _WrongPin | None:
        lock(conn, psn_no)
        person = existing_person(conn, psn_no)
        now = clock()
        security = person_policy(conn, policies, person, now.date()).params.security
        if new_pin == security.initial_pin:
            raise fail("new_pin", "may not be the initial PIN", "PIN_WEAK")
        reasons = check_pin(conn, psn_no, old_pin, security.max_pin_attempts, now)
        refusal = next((r for r in reasons if r.code != "PIN_MUST_CHANGE"), None)
        if refusal is not None:
            error = fail("old_pin", refusal.message, refusal.code)
            if refusal.code in ("PIN_WRONG", "PIN_LOCKED"):
                return _WrongPin(error)  # commit the failure count, then refuse
            raise error
        conn.execute(
            update(pins)
            .where(pins.c.psn_no == psn_no)
            .values(pin_hash=hash_pin(new_pin), must_change=False, failed_attempts=0, locked=False, updated_at=now)
        )
        return None

    outcome = run(db, work)
    if isinstance(outcome, _WrongPin):
        raise outcome.error
