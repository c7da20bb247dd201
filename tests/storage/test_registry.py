"""Registry services on SQLite and PostgreSQL: persons and ID numbers, enrolments and waiting
periods, identities, suspension, cards, e-vouchers, PINs and loss reporting — checked through
the settlement service where the rule bites at settlement time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from storage import builders as b
from yibao import Engine as SettlementEngine
from yibao import PolicyStore, load_demo_catalog
from yibao.db import repository as repo
from yibao.db import schema as S
from yibao.errors import RequestError, SettlementRefused
from yibao.service import accounts as acc
from yibao.service import registry as reg
from yibao.service.credentials import Credential
from yibao.service.settlement import SettleCommand, SettlementService
from yibao.service.uow import transact

POLICIES = PolicyStore.load_dir("src/yibao/data/policies")
ENGINE = SettlementEngine(POLICIES, load_demo_catalog())
NOW = dt.datetime(2025, 3, 1, 9, 0, 0)
TODAY = NOW.date()
PIN = "258036"
HOSPITAL = "H21060000001"  # 一级 hospital in 丹东
TIANJIN = "H12010100001"  # networked 三甲 in 天津
TIANJIN_LOCAL = "H12010100002"  # not networked
PHARMACY = "P21060000001"
FUNDING = POLICIES.resolve("210600", TODAY).params.funding


def clock() -> dt.datetime:
    return NOW


def at(when: dt.datetime) -> reg.Clock:
    return lambda: when


def payload(*, acct: bool = True, med_type: str = "11", date: dt.date = TODAY, **extra: Any) -> dict[str, Any]:
    return {
        "insutype": extra.pop("insutype", "310"),
        "med_type": med_type,
        "begntime": f"{date} 09:00:00",
        "acct_used_flag": "1" if acct else "0",
        "feedetail": [
            {"feedetl_sn": "1", "hilist_name": "诊疗", "chrgitm_lv": "01", "cnt": "1", "pric": "1000.00",
             "det_item_fee_sumamt": "1000.00"},
            {"feedetl_sn": "2", "hilist_name": "自费药", "chrgitm_lv": "03", "cnt": "1", "pric": "50.00",
             "det_item_fee_sumamt": "50.00"},
        ],
        **extra,
    }  # fmt: skip


def world(db: Engine) -> None:
    """Regions 全国 → 辽宁省 → 丹东市, 天津市; a hospital and a pharmacy in 丹东, two hospitals in 天津."""
    for code, name, parent in (
        ("000000", "全国", None),
        ("210000", "辽宁省", "000000"),
        ("210600", "丹东市", "210000"),
        ("120000", "天津市", "000000"),
        ("120101", "和平区", "120000"),
    ):
        reg.add_region(db, code=code, name=name, parent_code=parent)
    start = dt.date(2020, 1, 1)
    reg.add_institution(db, fixmedins_code=HOSPITAL, name="振兴区站前街道社区卫生服务中心", kind="hospital",
                        hosp_lv="08", admdvs="210600", valid_from=start)  # fmt: skip
    reg.add_institution(db, fixmedins_code=PHARMACY, name="国大药房", kind="pharmacy", hosp_lv="11",
                        admdvs="210600", valid_from=start)  # fmt: skip
    reg.add_institution(db, fixmedins_code=TIANJIN, name="天津医科大学总医院", kind="hospital", hosp_lv="02",
                        admdvs="120101", valid_from=start, networked=True)  # fmt: skip
    reg.add_institution(db, fixmedins_code=TIANJIN_LOCAL, name="和平区社区卫生服务中心", kind="hospital",
                        hosp_lv="08", admdvs="120101", valid_from=start)  # fmt: skip


def insured(
    db: Engine, psn_no: str, *, insutype: str = "310", psn_type: str = "1101", birth: dt.date = dt.date(1970, 5, 1),
    gend: str = "1", begn: dt.date = dt.date(2020, 1, 1), pin: str | None = PIN, months: int = 0,
    base_fen: int = 1_000_000, admdvs: str = "210600", policies: PolicyStore = POLICIES,
) -> str:  # fmt: skip
    """A registered, enrolled person with card ``C<psn_no>`` / ``SN<psn_no>``, a PIN (changed to
    ``pin`` unless None) and ``months`` monthly contributions up to March 2025."""
    reg.register_person(db, psn_no=psn_no, name=f"参保人{psn_no[-3:]}", certno=b.certno("210602", birth,
                        int(psn_no[-3:]), gend), admdvs=admdvs, clock=clock)  # fmt: skip
    reg.enrol(db, policies, psn_no=psn_no, insutype=insutype, psn_type=psn_type, begn_date=begn,
              clock=at(dt.datetime.combine(begn, dt.time(9)) - dt.timedelta(days=40)))  # fmt: skip
    reg.issue_card(db, psn_no=psn_no, clock=clock, card_no=f"C{psn_no}", card_sn=f"SN{psn_no}")
    reg.set_initial_pin(db, policies, psn_no=psn_no, clock=clock)
    if pin is not None:
        reg.change_pin(db, policies, psn_no=psn_no, old_pin="123456", new_pin=pin, clock=clock)
    for month in range(3 - months + 1, 4):
        if psn_type == "1201":
            acc.allot_retiree(db, policies, psn_no=psn_no, period=f"2025-{month:02d}", clock=clock)
        else:
            acc.contribute_employee(db, policies, psn_no=psn_no, period=f"2025-{month:02d}", base_fen=base_fen,
                                    clock=clock)  # fmt: skip
    return psn_no


def card(psn_no: str, pin: str | None = PIN) -> Credential:
    return Credential("03", f"C{psn_no}", f"SN{psn_no}", pin)


def svc(db: Engine, now: dt.datetime = NOW) -> SettlementService:
    return SettlementService(db, ENGINE, clock=lambda: now)


def codes(reasons: Any) -> list[str]:
    return [r.code for r in reasons]


def refused(fn: Any, *args: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(SettlementRefused) as info:
        fn(*args, **kwargs)
    return codes(info.value.reasons)


def error(fn: Any, *args: Any, **kwargs: Any) -> RequestError:
    with pytest.raises(RequestError) as info:
        fn(*args, **kwargs)
    return info.value


def count(db: Engine, table: Any) -> int:
    return int(transact(db, lambda c: c.execute(select(func.count()).select_from(table)).scalar_one()))


# -- persons and ID numbers -----------------------------------------------------------
def test_person_id_number_gender_and_birth(db: Engine) -> None:
    world(db)
    # The GB 11643 sample number (check character X): a woman born 1949-12-31.
    rec = reg.register_person(db, psn_no="21060000000001", name="李秀英", certno="11010519491231002x",
                              admdvs="210600", clock=clock, gend="2", brdy=dt.date(1949, 12, 31))  # fmt: skip
    assert (rec.certno, rec.gend, rec.brdy) == ("11010519491231002X", "2", dt.date(1949, 12, 31))
    # Derived when not given: the other sample number, a man born 1880-01-01.
    rec = reg.register_person(db, psn_no="21060000000002", name="张三", certno="440524188001010014",
                              admdvs="210600", clock=clock)  # fmt: skip
    assert (rec.gend, rec.brdy) == ("1", dt.date(1880, 1, 1))
    man = b.certno("210602", dt.date(1985, 4, 12), 17, "1")

    def register(**kw: Any) -> reg.PersonRecord:
        args = {"psn_no": "21060000000003", "name": "王五", "certno": man, "admdvs": "210600", "clock": clock}
        return reg.register_person(db, **{**args, **kw})

    wrong = man[:17] + ("0" if man[17] != "0" else "1")
    assert (error(register, certno=wrong).code, error(register, certno=wrong).field) == ("CERTNO_INVALID", "certno")
    assert error(register, certno="21060219851332017X").code == "CERTNO_INVALID"  # month 13
    assert error(register, certno=man[:17]).code == "CERTNO_INVALID"
    assert error(register, gend="2").code == "GENDER_MISMATCH"
    assert error(register, brdy=dt.date(1985, 4, 13)).code == "BIRTH_DATE_MISMATCH"
    assert error(register, certno="11010519491231002X").code == "CERTNO_TAKEN"
    assert error(register, psn_no="21060000000001").code == "PERSON_EXISTS"
    assert error(register, admdvs="999999").code == "REGION_UNKNOWN"
    assert error(register, name="  ").field == "name"
    unborn = b.certno("210602", dt.date(2025, 6, 1), 1, "1")
    assert error(register, certno=unborn).code == "CERTNO_INVALID"
    assert count(db, S.persons) == 2  # nothing written by a refusal
    assert register(gend="1", brdy=dt.date(1985, 4, 12)).gend == "1"


def test_regions_and_institutions(db: Engine) -> None:
    world(db)
    assert [r.code for r in reg.region_chain(db, "210600")] == ["210600", "210000", "000000"]
    assert reg.add_region(db, code="210600", name="丹东市", parent_code="210000").name == "丹东市"  # idempotent
    assert error(reg.add_region, db, code="210600", name="大连市", parent_code="210000").code == "REGION_EXISTS"
    assert error(reg.add_region, db, code="210200", name="大连市", parent_code="219999").code == "REGION_UNKNOWN"
    assert error(reg.add_region, db, code="2102", name="大连市").field == "code"
    start = dt.date(2020, 1, 1)
    kw: dict[str, Any] = {"fixmedins_code": "H21060000009", "name": "某医院", "kind": "hospital", "hosp_lv": "05",
                          "admdvs": "210600", "valid_from": start}  # fmt: skip
    assert error(reg.add_institution, db, **{**kw, "hosp_lv": "15"}).field == "hosp_lv"
    assert error(reg.add_institution, db, **{**kw, "kind": "clinic"}).field == "kind"
    assert error(reg.add_institution, db, **{**kw, "fixmedins_code": "X1"}).field == "fixmedins_code"
    assert error(reg.add_institution, db, **{**kw, "valid_to": dt.date(2019, 1, 1)}).field == "valid_to"
    assert error(reg.add_institution, db, **{**kw, "fixmedins_code": HOSPITAL}).code == "INSTITUTION_EXISTS"
    insured(db, "21060000000011", pin=None)
    cred = Credential("02", b.certno("210602", dt.date(1970, 5, 1), 11, "1"))
    assert svc(db).entitlement(cred, HOSPITAL, "310", "11", TODAY) == []
    reg.set_designation(db, fixmedins_code=HOSPITAL, designated=True, valid_from=start, valid_to=dt.date(2025, 1, 31))
    assert codes(svc(db).entitlement(cred, HOSPITAL, "310", "11", TODAY)) == ["INSTITUTION_NOT_DESIGNATED"]
    assert svc(db).entitlement(cred, HOSPITAL, "310", "11", dt.date(2025, 1, 15)) == []
    assert error(reg.set_networked, db, fixmedins_code="H99999999999", networked=True).code == "INSTITUTION_UNKNOWN"


# -- enrolments and waiting periods ---------------------------------------------------
def test_waiting_period_rules() -> None:
    def wait(insutype: str, begn: dt.date, applied: dt.date, previous_end: dt.date | None) -> dt.date | None:
        return reg.compute_waiting_until(
            FUNDING, insutype=insutype, begn_date=begn, applied_on=applied, previous_end=previous_end
        )

    jan = dt.date(2025, 1, 1)
    # Residents: enrolled in advance (concentrated period), or continuous → no wait.
    assert wait("390", jan, dt.date(2024, 11, 15), None) is None
    assert wait("390", jan, dt.date(2024, 12, 20), dt.date(2024, 12, 31)) is None
    # Late first enrolment: 3 months from the application.
    assert wait("390", dt.date(2025, 3, 10), dt.date(2025, 3, 10), None) == dt.date(2025, 6, 9)
    assert wait("390", jan, dt.date(2025, 2, 1), None) == dt.date(2025, 4, 30)
    # After a lapse: 3 months + 1 per whole lapsed year (2 years 2 months → 5 months).
    assert wait("390", dt.date(2025, 3, 1), dt.date(2025, 2, 20), dt.date(2022, 12, 31)) == dt.date(2025, 7, 31)
    assert wait("390", dt.date(2025, 3, 1), dt.date(2025, 2, 20), dt.date(2025, 1, 31)) == dt.date(2025, 5, 31)
    # Employees: a lapse of 3+ months → benefits after 3 months of payment; shorter lapses do not wait.
    assert wait("310", dt.date(2025, 4, 1), TODAY, dt.date(2024, 12, 31)) == dt.date(2025, 6, 30)
    assert wait("310", dt.date(2025, 3, 1), TODAY, dt.date(2024, 12, 31)) is None
    assert wait("310", dt.date(2025, 4, 1), TODAY, None) is None
    assert reg.add_months(dt.date(2024, 1, 31), 1) == dt.date(2024, 2, 29)


def test_enrolment_waiting_newborn_and_overlap(db: Engine) -> None:
    world(db)
    late = "21060000000021"
    reg.register_person(db, psn_no=late, name="居民甲", certno=b.certno("210602", dt.date(1990, 2, 2), 21, "2"),
                        admdvs="210600", clock=clock)  # fmt: skip
    rec = reg.enrol(db, POLICIES, psn_no=late, insutype="390", psn_type="15", begn_date=TODAY, clock=clock)
    assert rec.waiting_until == dt.date(2025, 5, 31)
    reg.issue_card(db, psn_no=late, clock=clock, card_no=f"C{late}", card_sn=f"SN{late}")
    entitlement = svc(db).entitlement
    assert codes(entitlement(card(late, None), HOSPITAL, "390", "11", dt.date(2025, 5, 31))) == ["WAITING_PERIOD"]
    assert entitlement(card(late, None), HOSPITAL, "390", "11", dt.date(2025, 6, 1)) == []
    # Enrolled twice: refused, nothing written.
    again = error(reg.enrol, db, POLICIES, psn_no=late, insutype="390", psn_type="15", begn_date=dt.date(2025, 7, 1),
                  clock=clock)  # fmt: skip
    assert again.code == "ENROLMENT_OVERLAP"
    assert error(reg.enrol, db, POLICIES, psn_no=late, insutype="310", psn_type="1101", begn_date=dt.date(2025, 7, 1),
                 clock=clock).code == "ENROLMENT_OVERLAP"  # fmt: skip
    # Wrong scheme for the person type, unknown type, unknown scheme.
    baby = "21060000000022"
    reg.register_person(db, psn_no=baby, name="新生儿", certno=b.certno("210602", dt.date(2025, 1, 15), 22, "1"),
                        admdvs="210600", clock=clock)  # fmt: skip
    assert error(reg.enrol, db, POLICIES, psn_no=baby, insutype="310", psn_type="15", begn_date=TODAY,
                 clock=clock).code == "PSN_TYPE_INVALID"  # fmt: skip
    assert error(reg.enrol, db, POLICIES, psn_no=baby, insutype="390", psn_type="9999", begn_date=TODAY,
                 clock=clock).code == "PSN_TYPE_INVALID"  # fmt: skip
    assert error(reg.enrol, db, POLICIES, psn_no=baby, insutype="392", psn_type="15", begn_date=TODAY,
                 clock=clock).code == "INSUTYPE_UNKNOWN"  # fmt: skip
    assert count(db, S.enrolments) == 1
    # A newborn enrolled 45 days after birth: covered from birth, no waiting period.
    rec = reg.enrol(db, POLICIES, psn_no=baby, insutype="390", psn_type="15", begn_date=TODAY, clock=clock)
    assert (rec.begn_date, rec.waiting_until) == (dt.date(2025, 1, 15), None)
    # 200 days after birth is too late for the newborn rule.
    older = "21060000000023"
    reg.register_person(db, psn_no=older, name="婴儿", certno=b.certno("210602", dt.date(2024, 8, 13), 23, "2"),
                        admdvs="210600", clock=clock)  # fmt: skip
    rec = reg.enrol(db, POLICIES, psn_no=older, insutype="390", psn_type="15", begn_date=TODAY, clock=clock)
    assert (rec.begn_date, rec.waiting_until) == (TODAY, dt.date(2025, 5, 31))


def test_pause_resume_end_and_entitlement(db: Engine) -> None:
    world(db)
    psn = insured(db, "21060000000031", pin=None)
    entitlement = svc(db).entitlement
    paused = reg.pause_enrolment(db, psn_no=psn, insutype="310", pause_date=dt.date(2025, 1, 1))
    assert paused.pause_date == dt.date(2025, 1, 1)
    assert codes(entitlement(card(psn), HOSPITAL, "310", "11", dt.date(2025, 2, 1))) == ["PAUSED"]
    assert entitlement(card(psn), HOSPITAL, "310", "11", dt.date(2024, 12, 31)) == []
    assert error(reg.pause_enrolment, db, psn_no=psn, insutype="310", pause_date=TODAY).code == "ALREADY_PAUSED"
    assert error(reg.resume_enrolment, db, POLICIES, psn_no=psn, insutype="310", resume_date=dt.date(2024, 12, 1),
                 clock=clock).field == "resume_date"  # fmt: skip
    # Four months without contributions (≥ 3): benefits resume after 3 months of payment.
    resumed = reg.resume_enrolment(db, POLICIES, psn_no=psn, insutype="310", resume_date=dt.date(2025, 5, 1),
                                   clock=clock)  # fmt: skip
    assert (resumed.begn_date, resumed.waiting_until) == (dt.date(2025, 5, 1), dt.date(2025, 7, 31))
    assert codes(entitlement(card(psn), HOSPITAL, "310", "11", dt.date(2025, 6, 1))) == ["WAITING_PERIOD"]
    assert codes(entitlement(card(psn), HOSPITAL, "310", "11", dt.date(2025, 3, 1))) == ["PAUSED"]  # history kept
    assert entitlement(card(psn), HOSPITAL, "310", "11", dt.date(2025, 8, 1)) == []
    assert error(reg.resume_enrolment, db, POLICIES, psn_no=psn, insutype="310", resume_date=dt.date(2025, 9, 1),
                 clock=clock).code == "NOT_PAUSED"  # fmt: skip
    reg.end_enrolment(db, psn_no=psn, insutype="310", end_date=dt.date(2025, 12, 31))
    assert codes(entitlement(card(psn), HOSPITAL, "310", "11", dt.date(2026, 1, 2))) == ["NOT_INSURED"]
    info = reg.person_info(db, psn)
    assert [(e.begn_date, e.pause_date, e.end_date) for e in info.enrolments] == [
        (dt.date(2020, 1, 1), dt.date(2025, 1, 1), dt.date(2025, 4, 30)),
        (dt.date(2025, 5, 1), None, dt.date(2025, 12, 31)),
    ]
    assert error(reg.end_enrolment, db, psn_no=psn, insutype="310", end_date=TODAY).code == "NOT_ENROLLED"


# -- identities and suspension --------------------------------------------------------
def test_identities_and_suspension(db: Engine) -> None:
    world(db)
    psn = insured(db, "21060000000041", insutype="390", psn_type="15", pin=None, begn=dt.date(2021, 1, 1))
    rec = reg.add_identity(db, POLICIES, psn_no=psn, idet_type="dibao", begn_date=dt.date(2024, 1, 1))
    assert error(reg.add_identity, db, POLICIES, psn_no=psn, idet_type="vip", begn_date=TODAY).code == (
        "IDENTITY_UNKNOWN"
    )
    assert error(reg.add_identity, db, POLICIES, psn_no=psn, idet_type="dibao", begn_date=TODAY).code == (
        "IDENTITY_OVERLAP"
    )
    reg.add_identity(db, POLICIES, psn_no=psn, idet_type="fanpin", begn_date=dt.date(2023, 1, 1),
                     end_date=dt.date(2023, 12, 31))  # fmt: skip
    assert transact(db, lambda c: repo.identities_on(c, psn, TODAY)) == {"dibao"}
    reg.end_identity(db, identity_id=rec.id, end_date=dt.date(2025, 2, 28))
    assert transact(db, lambda c: repo.identities_on(c, psn, TODAY)) == frozenset()
    entitlement = svc(db).entitlement
    reg.suspend_settlement(db, psn_no=psn, from_date=dt.date(2025, 2, 1), to_date=dt.date(2025, 7, 31),
                           reason="出借医保卡")  # fmt: skip
    assert codes(entitlement(card(psn), HOSPITAL, "390", "11", TODAY)) == ["SETTLEMENT_SUSPENDED"]
    assert error(reg.suspend_settlement, db, psn_no=psn, from_date=dt.date(2025, 3, 1), to_date=dt.date(2025, 9, 1),
                 reason="再次").code == "ALREADY_SUSPENDED"  # fmt: skip
    assert error(reg.suspend_settlement, db, psn_no=psn, from_date=TODAY, to_date=dt.date(2025, 1, 1),
                 reason="x").field == "to_date"  # fmt: skip
    reg.lift_suspension(db, psn_no=psn, clock=at(dt.datetime(2025, 4, 1, 8)))
    assert entitlement(card(psn), HOSPITAL, "390", "11", dt.date(2025, 4, 1)) == []
    assert codes(entitlement(card(psn), HOSPITAL, "390", "11", TODAY)) == ["SETTLEMENT_SUSPENDED"]  # history
    assert error(reg.lift_suspension, db, psn_no=psn, clock=at(dt.datetime(2025, 4, 2))).code == "NOT_SUSPENDED"


# -- PIN ------------------------------------------------------------------------------
def test_pin_initial_change_lock_and_reset(db: Engine) -> None:
    world(db)
    psn = insured(db, "21060000000051", pin=None, months=3)
    service = svc(db)
    settle = service.settle

    def cmd(msgid: str, pin: str | None) -> SettleCommand:
        return SettleCommand(msgid, HOSPITAL, card(psn, pin), payload())

    assert refused(settle, cmd("M01", "123456")) == ["PIN_MUST_CHANGE"]
    assert error(reg.change_pin, db, POLICIES, psn_no=psn, old_pin="123456", new_pin="123456",
                 clock=clock).code == "PIN_UNCHANGED"  # fmt: skip
    for bad, code in (("777777", "PIN_WEAK"), ("12345", "PIN_FORMAT"), ("12345a", "PIN_FORMAT")):
        assert error(reg.change_pin, db, POLICIES, psn_no=psn, old_pin="123456", new_pin=bad,
                     clock=clock).code == code  # fmt: skip
    wrong = error(reg.change_pin, db, POLICIES, psn_no=psn, old_pin="000000", new_pin=PIN, clock=clock)
    assert (wrong.code, wrong.field) == ("PIN_WRONG", "old_pin")
    row = transact(db, lambda c: repo.pin_row(c, psn))
    assert row is not None and (row.failed_attempts, row.must_change) == (1, True)  # the failure counts
    reg.change_pin(db, POLICIES, psn_no=psn, old_pin="123456", new_pin=PIN, clock=clock)
    assert error(reg.change_pin, db, POLICIES, psn_no=psn, old_pin=PIN, new_pin="123456",
                 clock=clock).code == "PIN_WEAK"  # fmt: skip
    ok = settle(cmd("M02", PIN))
    assert ok.body["setlinfo"]["acct_pay"] != "0.00"
    attempts = POLICIES.resolve("210600", TODAY).params.security.max_pin_attempts
    outcomes = [refused(settle, cmd(f"M1{i}", "999999")) for i in range(attempts)]
    assert outcomes[:-1] == [["PIN_WRONG"]] * (attempts - 1) and outcomes[-1] == ["PIN_LOCKED"]
    assert refused(settle, cmd("M20", PIN)) == ["PIN_LOCKED"]  # even the right PIN
    assert error(reg.change_pin, db, POLICIES, psn_no=psn, old_pin=PIN, new_pin="369258",
                 clock=clock).code == "PIN_LOCKED"  # fmt: skip
    # Agency staff unlock: back to the initial PIN, to be changed again.
    reg.reset_pin(db, POLICIES, psn_no=psn, clock=clock)
    info = reg.person_info(db, psn)
    assert (info.pin_locked, info.pin_must_change) == (False, True)
    assert refused(settle, cmd("M21", "123456")) == ["PIN_MUST_CHANGE"]
    reg.change_pin(db, POLICIES, psn_no=psn, old_pin="123456", new_pin="369258", clock=clock)
    assert settle(cmd("M22", "369258")).setl_id
    assert error(reg.set_initial_pin, db, POLICIES, psn_no=psn, clock=clock).code == "PIN_EXISTS"


# -- cards and e-vouchers -------------------------------------------------------------
def test_loss_reporting_and_replacement(db: Engine) -> None:
    world(db)
    psn = insured(db, "21060000000061", months=2)
    service = svc(db)
    old = f"C{psn}"
    reg.report_temporary_loss(db, card_no=old)
    assert codes(service.entitlement(card(psn), HOSPITAL, "310", "11", TODAY)) == ["CREDENTIAL_TEMP_LOST"]
    assert error(reg.report_temporary_loss, db, card_no=old).code == "CARD_NOT_ACTIVE"
    reg.lift_temporary_loss(db, card_no=old)
    assert service.entitlement(card(psn), HOSPITAL, "310", "11", TODAY) == []
    assert error(reg.lift_temporary_loss, db, card_no=old).code == "NOT_TEMP_LOST"
    reg.report_temporary_loss(db, card_no=old)
    reg.report_formal_loss(db, card_no=old)  # a temporary loss may become formal
    assert codes(service.entitlement(card(psn), HOSPITAL, "310", "11", TODAY)) == ["CREDENTIAL_LOST"]
    for fn in (reg.lift_temporary_loss, reg.report_temporary_loss, reg.report_formal_loss):
        assert error(fn, db, card_no=old).code == "LOSS_FINAL"
    assert error(reg.issue_card, db, psn_no=psn, clock=clock).code == "CARD_EXISTS"
    assert error(reg.replace_card, db, psn_no=psn, clock=clock, card_no=old).code == "CARD_NUMBER_TAKEN"
    assert error(reg.report_temporary_loss, db, card_no="NOSUCHCARD").code == "CARD_UNKNOWN"
    new = reg.replace_card(db, psn_no=psn, clock=clock, card_no="D00000061", card_sn="210600D156NEW061")
    assert new.status == "active" and new.card_no != old
    statuses = {c.card_no: c.status for c in reg.person_info(db, psn).cards}
    assert statuses == {old: "replaced", "D00000061": "active"}
    assert error(reg.replace_card, db, psn_no=psn, clock=clock).code == "CARD_NOT_LOST"
    assert refused(service.settle, SettleCommand("L1", HOSPITAL, card(psn), payload())) == ["CREDENTIAL_LOST"]
    fresh = Credential("03", "D00000061", "210600D156NEW061", PIN)
    assert service.settle(SettleCommand("L2", HOSPITAL, fresh, payload())).setl_id
    assert error(reg.lift_temporary_loss, db, card_no=old).code == "LOSS_FINAL"  # still final


def test_evoucher_expires(db: Engine) -> None:
    world(db)
    psn = insured(db, "21060000000071", pin=None)
    voucher = reg.issue_evoucher(db, POLICIES, psn_no=psn, clock=clock)
    ttl = POLICIES.resolve("210600", TODAY).params.security.evoucher_ttl_minutes
    assert voucher.expires_at == NOW + dt.timedelta(minutes=ttl)
    cred = Credential("01", voucher.token)
    assert svc(db, NOW + dt.timedelta(minutes=ttl - 1)).entitlement(cred, HOSPITAL, "310", "11", TODAY) == []
    late = svc(db, NOW + dt.timedelta(minutes=ttl + 1)).entitlement(cred, HOSPITAL, "310", "11", TODAY)
    assert codes(late) == ["CREDENTIAL_EXPIRED"]
    assert reg.issue_evoucher(db, POLICIES, psn_no=psn, clock=clock).token != voucher.token
    assert error(reg.issue_evoucher, db, POLICIES, psn_no="21069999999999", clock=clock).code == "PERSON_UNKNOWN"
