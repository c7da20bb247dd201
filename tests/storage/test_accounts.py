"""Account services on SQLite and PostgreSQL: contributions, allotments, premiums (cash and
family mutual aid), the year-end rollover, bindings, filings and payouts — each movement one
balanced journal entry, personal balances never negative."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError

from storage.test_registry import (
    FUNDING,
    HOSPITAL,
    NOW,
    PIN,
    POLICIES,
    TIANJIN,
    TIANJIN_LOCAL,
    TODAY,
    at,
    card,
    clock,
    codes,
    count,
    error,
    insured,
    payload,
    svc,
    world,
)
from yibao import PolicyStore, ledger
from yibao.db import repository as repo
from yibao.db import schema as S
from yibao.service import accounts as acc
from yibao.service import registry as reg
from yibao.service.settlement import SettleCommand
from yibao.service.uow import transact

#: The bundled presets plus two test regions: 210200 with restrictive family rules, 210300 without family aid.
RESTRICTED = PolicyStore.from_texts(
    {
        **{str(p): p.read_text("utf-8") for p in Path("src/yibao/data/policies").glob("*.yaml")},
        "test/210200.yaml": (
            'region: "210200"\nname: 测试市\nparent: "000000"\nvalid_from: 2021-01-01\npolicy:\n  schemes:\n'
            '    "310":\n      account:\n        family: {enabled: true, relations: [spouse, child], '
            "same_region: true, max_members: 2}\n"
        ),
        "test/210300.yaml": (
            'region: "210300"\nname: 测试市二\nparent: "000000"\nvalid_from: 2021-01-01\npolicy:\n  schemes:\n'
            '    "310":\n      account:\n        family: {enabled: false}\n'
        ),
    }
)
#: The agency's direct binding records the consent evidence it has seen.
CONSENT: dict[str, Any] = {"consent_ref": "FORM-2025-001", "actor": "staff:clerk"}


def unbalanced_entries(conn: Connection) -> list[Any]:
    return list(
        conn.execute(
            select(S.postings.c.entry_id).group_by(S.postings.c.entry_id).having(func.sum(S.postings.c.amount_fen) != 0)
        ).scalars()
    )


def posted(db: Engine, code: str) -> int:
    return transact(db, lambda c: repo.account_balance_by_postings(c, code))


def balances(db: Engine, psn_no: str) -> tuple[int, int]:
    return transact(db, lambda c: repo.balances(c, psn_no))


# -- contributions --------------------------------------------------------------------
def test_employee_contribution_balanced_and_once_per_month(db: Engine) -> None:
    world(db)
    psn = insured(db, "21060000000101", pin=None)
    rec = acc.contribute_employee(db, POLICIES, psn_no=psn, period="2025-02", base_fen=800_000, clock=clock)
    # 2% of 8,000 yuan to the account, the rest of 8% to the pool.
    assert (rec.amount_fen, rec.account_fen, rec.replayed) == (64_000, 16_000, False)
    assert FUNDING.employee_account_ratio == 200 and FUNDING.employee_contribution_ratio == 800
    assert balances(db, psn) == (16_000, 0)
    assert posted(db, "fund:210600:310100") == -48_000 and posted(db, "bank:210600") == 64_000
    entry = transact(db, lambda c: repo.entry_of(c, rec.entry_id))
    assert sum(p.amount_fen for p in entry.postings) == 0 and len(entry.postings) == 3
    again = acc.contribute_employee(db, POLICIES, psn_no=psn, period="2025-02", base_fen=800_000, clock=clock)
    assert again.replayed and again.id == rec.id and again.entry_id == rec.entry_id
    assert balances(db, psn) == (16_000, 0) and count(db, S.journal_entries) == 1
    other = error(acc.contribute_employee, db, POLICIES, psn_no=psn, period="2025-02", base_fen=900_000, clock=clock)
    assert other.code == "CONTRIBUTION_EXISTS"
    kw: dict[str, Any] = {"psn_no": psn, "base_fen": 800_000, "clock": clock}
    assert error(acc.contribute_employee, db, POLICIES, period="2025-04", **kw).code == "PERIOD_IN_FUTURE"
    assert error(acc.contribute_employee, db, POLICIES, period="2019-12", **kw).code == "NOT_ENROLLED"
    assert error(acc.contribute_employee, db, POLICIES, period="2025-13", **kw).field == "period"
    assert error(acc.contribute_employee, db, POLICIES, period="2025-01", **{**kw, "base_fen": 0}).field == "base_fen"
    retiree = insured(db, "21060000000102", psn_type="1201", pin=None)
    assert error(acc.contribute_employee, db, POLICIES, period="2025-01", **{**kw, "psn_no": retiree}).code == (
        "PSN_TYPE_INVALID"
    )
    assert count(db, S.contributions) == 1 and count(db, S.journal_entries) == 1
    history = acc.contributions_of(db, psn)
    assert [(c.kind, c.period) for c in history] == [("employee_monthly", "2025-02")]


def test_retiree_allotment(db: Engine) -> None:
    world(db)
    psn = insured(db, "21060000000111", psn_type="1201", pin=None)
    rec = acc.allot_retiree(db, POLICIES, psn_no=psn, period="2025-03", clock=clock)
    assert (rec.amount_fen, rec.account_fen, rec.base_fen) == (FUNDING.retiree_monthly_allotment_fen,) * 2 + (0,)
    assert balances(db, psn) == (8_300, 0) and posted(db, "fund:210600:310100") == 8_300
    assert acc.allot_retiree(db, POLICIES, psn_no=psn, period="2025-03", clock=clock).replayed
    assert balances(db, psn) == (8_300, 0)
    worker = insured(db, "21060000000112", pin=None)
    assert error(acc.allot_retiree, db, POLICIES, psn_no=worker, period="2025-03", clock=clock).code == (
        "PSN_TYPE_INVALID"
    )
    assert transact(db, unbalanced_entries) == []


def test_resident_premium_cash_and_from_relative(db: Engine) -> None:
    world(db)
    premium = FUNDING.resident_premium_fen
    adult = insured(db, "21060000000121", insutype="390", psn_type="15", pin=None, begn=dt.date(2021, 1, 1))
    cash = acc.pay_resident_premium(db, POLICIES, psn_no=adult, year=2025, clock=clock)
    assert (cash.amount_fen, cash.payer_psn_no) == (premium, None)
    assert posted(db, "bank:210600") == premium and posted(db, "fund:210600:390100") == -premium
    assert acc.pay_resident_premium(db, POLICIES, psn_no=adult, year=2025, clock=clock).replayed
    # A child's premium from the father's personal account (家庭共济).
    father = insured(db, "21060000000122", pin=None, months=3, base_fen=1_000_000)  # 3 × 200 yuan
    child = insured(db, "21060000000123", insutype="390", psn_type="1403", birth=dt.date(2014, 9, 1), pin=None,
                    begn=dt.date(2021, 1, 1))  # fmt: skip
    kw: dict[str, Any] = {"psn_no": child, "year": 2025, "clock": clock, "payer_psn_no": father}
    assert error(acc.pay_resident_premium, db, POLICIES, **kw).code == "NOT_BOUND"
    acc.bind_family(db, POLICIES, holder_psn_no=father, member_psn_no=child, relation="child", clock=clock, **CONSENT)
    paid = acc.pay_resident_premium(db, POLICIES, **kw)
    assert (paid.payer_psn_no, paid.amount_fen) == (father, premium)
    assert balances(db, father) == (60_000 - premium, 0)
    entry = transact(db, lambda c: repo.entry_of(c, paid.entry_id))
    assert dict(entry.postings) == {"psn:21060000000122:current": premium, "fund:210600:390100": -premium}
    replay = acc.pay_resident_premium(db, POLICIES, **kw)
    assert replay.replayed and replay.payer_psn_no == father
    # Too little on the relative's account: refused, nothing changes.
    poor = insured(db, "21060000000124", pin=None, months=1, base_fen=300_000)  # 60 yuan
    spouse = insured(db, "21060000000125", insutype="390", psn_type="15", gend="2", pin=None, begn=dt.date(2021, 1, 1))
    acc.bind_family(db, POLICIES, holder_psn_no=poor, member_psn_no=spouse, relation="spouse", clock=clock, **CONSENT)
    before = (count(db, S.journal_entries), count(db, S.contributions), balances(db, poor))
    low = error(acc.pay_resident_premium, db, POLICIES, psn_no=spouse, year=2025, clock=clock, payer_psn_no=poor)
    assert (low.code, low.field) == ("INSUFFICIENT_BALANCE", "payer_psn_no")
    assert (count(db, S.journal_entries), count(db, S.contributions), balances(db, poor)) == before
    # The CHECK constraint is the last line: an overdraft posted directly is rejected by the database.
    overdraft = acc.premium_from_account_entry(
        ref="overdraft", payer_psn_no=poor, member_psn_no=spouse, admdvs="210600", fund_pay_type="390100",
        current_fen=premium, historical_fen=0,
    )  # fmt: skip
    with pytest.raises(IntegrityError):
        transact(db, lambda c: repo.post_entry(c, overdraft, NOW))
    assert balances(db, poor) == before[2]
    assert error(acc.pay_resident_premium, db, POLICIES, psn_no=father, year=2025, clock=clock).code == (
        "NOT_ENROLLED"
    )  # an employee has no resident enrolment to pay for
    assert error(acc.pay_resident_premium, db, POLICIES, psn_no=spouse, year=2025, clock=clock,
                 payer_psn_no=spouse).code == "SELF_PAYMENT"  # fmt: skip
    assert transact(db, unbalanced_entries) == []


def test_year_end_rollover_idempotent(db: Engine) -> None:
    world(db)
    psn = insured(db, "21060000000131", pin=None)
    for month in (11, 12):
        acc.contribute_employee(db, POLICIES, psn_no=psn, period=f"2024-{month}", base_fen=1_000_000,
                                clock=at(dt.datetime(2024, month, 15)))  # fmt: skip
    # January's contribution is booked before the rollover runs: it stays in the current year.
    acc.contribute_employee(db, POLICIES, psn_no=psn, period="2025-01", base_fen=1_000_000,
                            clock=at(dt.datetime(2025, 1, 10)))  # fmt: skip
    assert balances(db, psn) == (60_000, 0)
    assert error(acc.rollover_year, db, year=2025, clock=clock).code == "YEAR_NOT_ENDED"
    first = acc.rollover_year(db, year=2024, clock=at(dt.datetime(2025, 1, 15)))
    assert (first.persons, first.amount_fen, first.already_done) == (1, 40_000, 0)
    assert balances(db, psn) == (20_000, 40_000)
    second = acc.rollover_year(db, year=2024, clock=at(dt.datetime(2025, 1, 16)))
    assert (second.persons, second.amount_fen, second.already_done) == (0, 0, 1)
    assert balances(db, psn) == (20_000, 40_000)
    assert transact(db, unbalanced_entries) == []


# -- family mutual aid ----------------------------------------------------------------
def test_binding_rules(db: Engine) -> None:
    world(db)
    for code, name in (("210200", "测试市"), ("210300", "测试市二")):
        reg.add_region(db, code=code, name=name, parent_code="210000")

    def person(psn_no: str, admdvs: str = "210200", **kw: Any) -> str:
        return insured(db, psn_no, admdvs=admdvs, pin=None, policies=RESTRICTED, **kw)

    holder = person("21020000000201")
    spouse = person("21020000000202", insutype="390", psn_type="15", gend="2", begn=dt.date(2021, 1, 1))
    kid = person("21020000000203", insutype="390", psn_type="1403", birth=dt.date(2014, 1, 1), begn=dt.date(2021, 1, 1))
    kid2 = person("21020000000204", insutype="390", psn_type="15", birth=dt.date(2022, 1, 1), begn=dt.date(2023, 1, 1))
    away = person("21060000000205", admdvs="210600")

    def bind(member: str, relation: str, who: str = holder) -> acc.BindingRecord:
        return acc.bind_family(db, RESTRICTED, holder_psn_no=who, member_psn_no=member, relation=relation, clock=clock,
                               **CONSENT)  # fmt: skip

    assert error(bind, holder, "spouse").code == "SELF_BINDING"
    assert error(bind, spouse, "cousin").code == "RELATION_UNKNOWN"
    assert error(bind, spouse, "parent").code == "RELATION_NOT_ALLOWED"  # 210200 allows spouse and child only
    assert error(bind, away, "spouse").code == "DIFFERENT_REGION"
    assert error(bind, holder, "spouse", who=spouse).code == "HOLDER_NOT_EMPLOYEE"
    first = bind(spouse, "spouse")
    assert error(bind, spouse, "spouse").code == "DUPLICATE_BINDING"
    bind(kid, "child")
    assert error(bind, kid2, "child").code == "TOO_MANY_MEMBERS"  # max_members 2
    assert count(db, S.family_bindings) == 2
    # Visible to both parties.
    mine = acc.bindings_of(db, holder)
    assert [b.member_psn_no for b in mine.as_holder] == [spouse, kid] and mine.as_member == ()
    theirs = acc.bindings_of(db, spouse)
    assert theirs.as_holder == () and [b.holder_psn_no for b in theirs.as_member] == [holder]
    # Unbinding keeps the row; then a place is free again.
    assert error(acc.unbind_family, db, binding_id=first.id, clock=clock, psn_no=kid).code == "NOT_A_PARTY"
    gone = acc.unbind_family(db, binding_id=first.id, clock=clock, psn_no=spouse)
    assert gone.unbound_at == NOW
    assert error(acc.unbind_family, db, binding_id=first.id, clock=clock).code == "ALREADY_UNBOUND"
    assert error(acc.unbind_family, db, binding_id=99999, clock=clock).code == "BINDING_UNKNOWN"
    assert acc.bindings_of(db, spouse).as_member == ()
    assert [b.unbound_at for b in acc.bindings_of(db, spouse, include_unbound=True).as_member] == [NOW]
    bind(kid2, "child")
    assert count(db, S.family_bindings) == 3
    # A region without family mutual aid.
    closed = person("21030000000206", admdvs="210300")
    other = person("21030000000207", admdvs="210300", insutype="390", psn_type="15", gend="2", begn=dt.date(2021, 1, 1))
    assert error(bind, other, "spouse", who=closed).code == "FAMILY_AID_DISABLED"
    # Every binding made directly has its consent record; without evidence there is none.
    assert count(db, S.binding_requests) == 3  # each confirmed, with the evidence
    bare = error(acc.bind_family, db, RESTRICTED, holder_psn_no=closed, member_psn_no=other, relation="spouse",
                 clock=clock, consent_ref=" ", actor="staff:clerk")  # fmt: skip
    assert bare.field == "consent_ref"


def test_binding_requests_need_the_other_party(db: Engine) -> None:
    """Asking checks the rules; only the party asked (an adult, or a minor's guardian) confirms; rules again then."""
    world(db)
    reg.add_region(db, code="210200", name="测试市", parent_code="210000")

    def person(psn_no: str, **kw: Any) -> str:
        return insured(db, psn_no, admdvs="210200", pin=None, policies=RESTRICTED, **kw)

    holder = person("21020000000301")
    spouse = person("21020000000302", insutype="390", psn_type="15", gend="2", begn=dt.date(2021, 1, 1))
    kid = person("21020000000303", insutype="390", psn_type="1403", birth=dt.date(2014, 1, 1), begn=dt.date(2021, 1, 1))
    kid2 = person("21020000000304", insutype="390", psn_type="15", birth=dt.date(2022, 1, 1), begn=dt.date(2023, 1, 1))

    def ask(member: str, relation: str, by: str = holder) -> acc.BindingRequestRecord:
        return acc.request_binding(db, RESTRICTED, holder_psn_no=holder, member_psn_no=member, relation=relation,
                                   requester_psn_no=by, clock=clock)  # fmt: skip

    def confirm(request_id: int, **who: Any) -> acc.BindingRequestRecord:
        return acc.confirm_binding_request(db, RESTRICTED, request_id=request_id, clock=clock, **who)

    assert error(ask, spouse, "parent").code == "RELATION_NOT_ALLOWED"  # checked when asking
    assert error(ask, spouse, "spouse", by=kid).code == "NOT_A_PARTY"
    assert error(ask, kid, "child", by=kid).code == "GUARDIAN_REQUIRED"  # a minor does not ask
    to_spouse, to_kid, to_kid2 = ask(spouse, "spouse"), ask(kid, "child"), ask(kid2, "child")
    assert count(db, S.family_bindings) == 0
    assert error(confirm, to_spouse.id, psn_no=holder).code == "OWN_REQUEST"
    assert error(confirm, to_kid.id, psn_no=kid).code == "GUARDIAN_REQUIRED"
    assert error(confirm, to_kid.id, psn_no=spouse).code == "NOT_A_PARTY"  # not on record as the kid's parent
    assert error(confirm, to_kid.id, actor="staff:clerk").code == "CONSENT_REF_REQUIRED"
    assert error(confirm, to_spouse.id, psn_no=spouse, consent_ref="X").code == "CONSENT_REF_UNEXPECTED"
    done = confirm(to_spouse.id, psn_no=spouse)
    assert (done.status, done.decided_by) == ("confirmed", f"person:{spouse}") and done.binding_id is not None
    assert confirm(to_kid.id, **CONSENT).consent_ref == "FORM-2025-001"
    # max_members 2 is reached: the third request, asked in time, fails its rules on confirmation and stays pending.
    assert error(confirm, to_kid2.id, **CONSENT).code == "TOO_MANY_MEMBERS"
    assert acc.binding_requests_of(db, holder, clock=clock).outgoing[0].id == to_kid2.id
    assert count(db, S.family_bindings) == 2
    withdrawn = acc.withdraw_binding_request(db, request_id=to_kid2.id, clock=clock, psn_no=holder)
    assert withdrawn.status == "withdrawn"
    assert error(acc.decline_binding_request, db, request_id=to_kid2.id, clock=clock, **{"actor": "staff:clerk"}
                 ).code == "REQUEST_NOT_PENDING"  # fmt: skip
    assert error(confirm, 999_999, psn_no=spouse).code == "REQUEST_UNKNOWN"


def test_bound_relative_pays_through_settlement(db: Engine) -> None:
    world(db)
    member = insured(db, "21060000000211", gend="2", months=1, base_fen=300_000)  # 60 yuan of her own
    holder = insured(db, "21060000000212", months=3, base_fen=1_500_000)  # 900 yuan
    service = svc(db)
    alone = service.presettle(SettleCommand("F0", HOSPITAL, card(member), payload()))
    assert alone.acct_mulaid_pay == 0 and alone.psn_cash_pay > 0
    binding = acc.bind_family(db, POLICIES, holder_psn_no=holder, member_psn_no=member, relation="spouse",
                              clock=clock, **CONSENT)  # fmt: skip
    reply = service.settle(SettleCommand("F1", HOSPITAL, card(member), payload()))
    info = reply.body["setlinfo"]
    mulaid = round(float(info["acct_mulaid_pay"]) * 100)
    assert mulaid > 0 and info["psn_cash_pay"] == "0.00"
    assert balances(db, member) == (0, 0)
    assert balances(db, holder) == (90_000 - mulaid, 0)
    acc.unbind_family(db, binding_id=binding.id, clock=clock)
    later = service.settle(SettleCommand("F2", HOSPITAL, card(member), payload()))
    assert later.body["setlinfo"]["acct_mulaid_pay"] == "0.00"
    assert balances(db, holder) == (90_000 - mulaid, 0)
    assert transact(db, unbalanced_entries) == []


# -- filings --------------------------------------------------------------------------
def test_offsite_and_disease_filings(db: Engine) -> None:
    world(db)
    psn = insured(db, "21060000000221", psn_type="1201", months=3)
    service = svc(db)
    entitlement = service.entitlement
    assert codes(entitlement(card(psn), TIANJIN, "310", "21", TODAY)) == ["OFFSITE_UNFILED"]
    kw: dict[str, Any] = {"psn_no": psn, "clock": clock}
    assert error(acc.file_offsite, db, POLICIES, offsite_type="long_term", mdtrtarea_admvs="210600",
                 begn_date=TODAY, **kw).code == "SAME_REGION"  # fmt: skip
    assert error(acc.file_offsite, db, POLICIES, offsite_type="holiday", mdtrtarea_admvs="120000",
                 begn_date=TODAY, **kw).field == "offsite_type"  # fmt: skip
    assert error(acc.file_offsite, db, POLICIES, offsite_type="temporary", mdtrtarea_admvs="130000",
                 begn_date=TODAY, **kw).code == "REGION_UNKNOWN"  # fmt: skip
    temp = acc.file_offsite(db, POLICIES, offsite_type="temporary", mdtrtarea_admvs="120000",
                            begn_date=dt.date(2025, 2, 10), **kw)  # fmt: skip
    assert temp.end_date == dt.date(2025, 8, 9)  # six months by default
    assert entitlement(card(psn), TIANJIN, "310", "21", TODAY) == []
    assert codes(entitlement(card(psn), TIANJIN, "310", "21", dt.date(2025, 8, 10))) == ["OFFSITE_UNFILED"]
    assert codes(entitlement(card(psn), TIANJIN_LOCAL, "310", "21", TODAY)) == ["INSTITUTION_NOT_NETWORKED"]
    assert error(acc.file_offsite, db, POLICIES, offsite_type="long_term", mdtrtarea_admvs="120000",
                 begn_date=TODAY, **kw).code == "FILING_OVERLAP"  # fmt: skip
    reply = service.settle(SettleCommand("O1", TIANJIN, card(psn), payload()))
    assert reply.body["setlinfo"]["hifp_pay"] != "0.00"
    acc.cancel_filing(db, filing_id=temp.id)
    assert codes(entitlement(card(psn), TIANJIN, "310", "21", TODAY)) == ["OFFSITE_UNFILED"]
    assert error(acc.cancel_filing, db, filing_id=temp.id).code == "FILING_CANCELLED"
    assert error(acc.cancel_filing, db, filing_id=987654).code == "FILING_UNKNOWN"
    long_term = acc.file_offsite(db, POLICIES, offsite_type="long_term", mdtrtarea_admvs="120000", begn_date=TODAY,
                                 **kw)  # fmt: skip
    assert long_term.end_date is None and entitlement(card(psn), TIANJIN, "310", "21", dt.date(2030, 1, 1)) == []
    assert [f.status for f in acc.filings_of(db, psn, include_cancelled=True)] == ["cancelled", "active"]
    # 门诊慢特病 needs the disease filing.
    assert codes(entitlement(card(psn), HOSPITAL, "310", "140104", TODAY)) == ["DISEASE_NOT_FILED"]
    disease = acc.file_disease(db, psn_no=psn, dise_codg="I10.x00", begn_date=dt.date(2025, 1, 1), clock=clock)
    assert entitlement(card(psn), HOSPITAL, "310", "140104", TODAY) == []
    assert error(acc.file_disease, db, psn_no=psn, dise_codg="I10.x00", begn_date=TODAY, clock=clock).code == (
        "FILING_OVERLAP"
    )
    assert error(acc.file_disease, db, psn_no=psn, dise_codg="高血压", begn_date=TODAY, clock=clock).field == (
        "dise_codg"
    )
    chronic = service.settle(SettleCommand("D1", HOSPITAL, card(psn), payload(med_type="140104", dise_codg="I10.x00")))
    assert chronic.body["setlinfo"]["hifp_pay"] != "0.00"
    acc.cancel_filing(db, filing_id=disease.id)
    assert codes(entitlement(card(psn), HOSPITAL, "310", "140104", TODAY)) == ["DISEASE_NOT_FILED"]
    assert count(db, S.filings) == 3  # cancelled filings stay


# -- payouts --------------------------------------------------------------------------
def test_manual_payout_to_institution(db: Engine) -> None:
    world(db)
    psn = insured(db, "21060000000231", psn_type="1201", months=3, pin=PIN)
    svc(db).settle(SettleCommand("P1", HOSPITAL, card(psn), payload()))
    payable = ledger.institution_payable(HOSPITAL)
    owed = -posted(db, payable)
    assert owed > 0
    kw: dict[str, Any] = {"fixmedins_code": HOSPITAL, "clock": clock}
    assert error(acc.pay_institution, db, amount_fen=owed + 1, ref="B1", **kw).code == "OVERPAYMENT"
    first = acc.pay_institution(db, amount_fen=owed - 100, ref="B1", **kw)
    assert (first.owed_after_fen, first.replayed) == (100, False)
    assert posted(db, "bank:210600") == -(owed - 100)  # allotments come from the pool, not the bank
    assert acc.pay_institution(db, amount_fen=owed - 100, ref="B1", **kw).replayed
    assert error(acc.pay_institution, db, amount_fen=100, ref="B1", **kw).code == "PAYOUT_CONFLICT"
    assert error(acc.pay_institution, db, amount_fen=0, ref="B2", **kw).field == "amount_fen"
    assert error(acc.pay_institution, db, amount_fen=1, ref="B2", fixmedins_code="H99999999999",
                 clock=clock).code == "INSTITUTION_UNKNOWN"  # fmt: skip
    acc.pay_institution(db, amount_fen=100, ref="B2", **kw)
    assert posted(db, payable) == 0
    assert transact(db, unbalanced_entries) == []


def test_the_database_refuses_postings_that_unbalance_an_entry(db: Engine) -> None:
    """Beneath the code's own check, PostgreSQL refuses to commit postings that leave an entry
    unbalanced: one side alone, a fen off, or a posting added later to an entry that balanced."""
    if db.dialect.name != "postgresql":
        pytest.skip("the balance trigger is PostgreSQL's (SQLite relies on the code's check)")
    fund, bank = "fund:210600:310100", "bank:210600"
    entry = ledger.Entry("test", "balance-probe", "probe", (ledger.Posting(fund, 500), ledger.Posting(bank, -500)))

    def post(conn: Connection) -> tuple[int, dict[str, int]]:
        return repo.post_entry(conn, entry, NOW), repo.account_ids(conn, [fund, bank])

    entry_id, ids = transact(db, post)  # balanced: accepted
    fresh = transact(db, lambda conn: repo.post_entry(conn, ledger.Entry("test", "probe-2", "probe", ()), NOW))

    def insert(entry_id: int, *amounts: tuple[str, int]) -> None:
        rows = [{"entry_id": entry_id, "account_id": ids[code], "amount_fen": fen} for code, fen in amounts]
        with db.begin() as conn:
            conn.execute(S.postings.insert().values(rows))

    for target, amounts in [
        (fresh, [(fund, 300)]),  # one side only
        (fresh, [(fund, 300), (bank, -299)]),  # off by a fen
        (entry_id, [(fund, 1)]),  # added later to an entry that balanced
    ]:
        with pytest.raises(Exception, match=f"journal entry {target} does not balance"):
            insert(target, *amounts)
    insert(fresh, (fund, 300), (bank, -300))  # both sides: accepted
    assert transact(db, unbalanced_entries) == []
