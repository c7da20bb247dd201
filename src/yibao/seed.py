"""A realistic demo region (丹东市 210600), built through the registry and account services.

:func:`seed_demo` registers the region tree (全国 → 辽宁省 → 丹东市 and its districts,
plus 天津市 for off-site care), institutions of every level and pharmacies, and about
``count`` insured persons with valid ID numbers and Chinese names, all deterministic
from ``rng_seed``: employees in service and retired, residents, children and pupils,
households bound by family mutual aid, off-site and disease filings, special
identities, some low balances and one suspended person. Employees' and retirees'
accounts are funded by the last months' contributions (booked at their month, with
the year-end rollover when the window crosses a year), residents' premiums are paid
in cash or from the household holder's account. Everyone has a card and a PIN; the
named demo persons have changed theirs to :data:`DEMO_PIN`.

It all happens in one transaction: the demo region is seeded completely or not at
all. If the region already has persons, nothing is written and the existing summary
is returned.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text

from .db import repository as repo
from .db.schema import credentials, enrolments, family_bindings, filings, institutions, ledger_accounts, persons
from .idcard import check_digit
from .policy import PolicyStore
from .service import accounts as acc
from .service import registry as reg
from .service.uow import transact

__all__ = ["DEMO_PIN", "DEMO_REGION", "DemoInstitution", "DemoPerson", "DemoSummary", "seed_demo"]

DEMO_REGION = "210600"
#: The PIN the named demo persons changed their initial PIN to.
DEMO_PIN = "246810"
#: Months of contributions / allotments booked before today (the current month included).
CONTRIBUTION_MONTHS = 6
#: A personal balance below this (fen) counts as low in the summary.
LOW_BALANCE_FEN = 10_000

_REGIONS = (
    ("000000", "全国", None),
    ("210000", "辽宁省", "000000"),
    ("210600", "丹东市", "210000"),
    ("210602", "元宝区", "210600"),
    ("210603", "振兴区", "210600"),
    ("210604", "振安区", "210600"),
    ("210624", "宽甸满族自治县", "210600"),
    ("210681", "东港市", "210600"),
    ("210682", "凤城市", "210600"),
    ("120000", "天津市", "000000"),
    ("120101", "和平区", "120000"),
    ("120104", "南开区", "120000"),
    ("120111", "西青区", "120000"),
)

LEVEL_NAMES = {
    "01": "三级特等",
    "02": "三级甲等",
    "03": "三级乙等",
    "04": "三级丙等",
    "05": "二级甲等",
    "06": "二级乙等",
    "07": "二级丙等",
    "08": "一级甲等",
    "09": "一级乙等",
    "10": "一级丙等",
    "11": "无等级",
    "12": "三级无等",
    "13": "二级无等",
    "14": "一级无等",
}

# (code, name, kind, hosp_lv, admdvs, networked)
_INSTITUTIONS = (
    ("H21060200001", "丹东市中心医院", "hospital", "02", "210602", True),
    ("H21060300001", "丹东市第一医院", "hospital", "01", "210603", True),
    ("H21060400001", "丹东市第二医院", "hospital", "05", "210604", True),
    ("H21068100001", "东港市中心医院", "hospital", "05", "210681", False),
    ("H21068200001", "凤城市中心医院", "hospital", "06", "210682", False),
    ("H21060200002", "元宝区金山街道社区卫生服务中心", "hospital", "08", "210602", False),
    ("H21060300002", "振兴区站前街道社区卫生服务中心", "hospital", "08", "210603", False),
    ("H21062400001", "宽甸满族自治县长甸镇中心卫生院", "hospital", "09", "210624", False),
    ("H21060400002", "振安区鸭绿江口腔诊所", "hospital", "11", "210604", False),
    ("P21060200001", "国大药房丹东元宝店", "pharmacy", "11", "210602", True),
    ("P21060300001", "成大方圆大药房丹东振兴店", "pharmacy", "11", "210603", False),
    ("P21060400001", "老百姓大药房丹东振安店", "pharmacy", "11", "210604", False),
    ("P21068100001", "东港市益民大药房", "pharmacy", "11", "210681", False),
    ("H12010100001", "天津医科大学总医院", "hospital", "02", "120101", True),
    ("H12011100001", "天津市第一中心医院", "hospital", "02", "120111", True),
    ("H12010400001", "南开区长虹街社区卫生服务中心", "hospital", "08", "120104", False),
)

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟"
    "谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严武戴孔汤"
)
_MALE = "伟强磊军勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆帅旭宁龙林洋瑞博文峰海亮建国志成"
_FEMALE = "芳娜敏静丽艳娟霞秀英华慧巧美淑惠珠翠雅芝玉萍红娥玲芬燕彩春菊兰凤洁梅琳素云莲真环雪荣爱妹"
_BIRTH_REGIONS = ("210602", "210603", "210604", "210624", "210681", "210682", "210102", "210204", "210302")
_DISEASES = ("I10.x00", "E11.900", "J44.900", "I25.100", "N18.500")
_IDENTITIES = ("dibao", "tekun", "fanpin")


# -- the summary ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DemoPerson:
    psn_no: str
    name: str
    certno: str
    card_no: str
    card_sn: str
    pin: str
    pin_must_change: bool
    insutype: str
    psn_type: str
    note: str


@dataclass(frozen=True, slots=True)
class DemoInstitution:
    fixmedins_code: str
    name: str
    kind: str
    hosp_lv: str
    level: str
    admdvs: str
    networked: bool


@dataclass(frozen=True)
class DemoSummary:
    """What ``make run`` prints: who to try, with which card and PIN, where."""

    region: str
    created: bool
    counts: Mapping[str, int]
    persons: tuple[DemoPerson, ...]
    institutions: tuple[DemoInstitution, ...]

    def lines(self) -> list[str]:
        state = "seeded" if self.created else "already seeded"
        counts = ", ".join(f"{key} {value}" for key, value in self.counts.items())
        out = [f"demo region {self.region} ({state}): {counts}", "", "demo persons:"]
        for p in self.persons:
            pin = f"{p.pin} (initial, must change)" if p.pin_must_change else p.pin
            out.append(
                f"  {p.psn_no}  {p.name}  insutype {p.insutype}/{p.psn_type}  card {p.card_no} sn {p.card_sn}  "
                f"PIN {pin}  — {p.note}"
            )
        out += ["", "demo institutions:"]
        for i in self.institutions:
            net = " 异地联网" if i.networked else ""
            out.append(f"  {i.fixmedins_code}  {i.name}  {i.hosp_lv} {i.level}  {i.admdvs}{net}")
        return out


# -- the generated population ---------------------------------------------------------
@dataclass
class _Spec:
    """One person to create."""

    name: str
    gend: str
    brdy: dt.date
    insutype: str
    psn_type: str
    note: str = ""
    demo: bool = False
    pin_changed: bool = False
    months: int = CONTRIBUTION_MONTHS  # contribution months (employees)
    base_fen: int = 600_000
    relation: str | None = None  # the relation to the household holder, if bound
    identity: str | None = None
    disease: str | None = None
    offsite: str | None = None  # offsite_type of a filing to Tianjin
    suspended: bool = False
    psn_no: str = ""


class _Names:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def given(self, gend: str) -> str:
        pool = _MALE if gend == "1" else _FEMALE
        return "".join(self.rng.choice(pool) for _ in range(self.rng.choice((1, 2, 2))))

    def person(self, gend: str, surname: str | None = None) -> str:
        return (surname or self.rng.choice(_SURNAMES)) + self.given(gend)


def _birth(rng: random.Random, today: dt.date, age_min: int, age_max: int) -> dt.date:
    age = rng.randint(age_min, age_max)
    start = dt.date(today.year - age - 1, today.month, 1) + dt.timedelta(days=1)
    return min(start + dt.timedelta(days=rng.randrange(364)), today)


def _households(rng: random.Random, today: dt.date, count: int) -> list[list[_Spec]]:
    """Households of generated persons; the first member of a bound household is the holder."""
    names = _Names(rng)
    out: list[list[_Spec]] = []
    total = 0

    def base() -> int:
        return rng.choice((3000, 3500, 4000, 4500, 5000, 6000, 7000, 8000, 10000, 12000, 15000, 20000)) * 100

    def employee(gend: str, age: tuple[int, int], surname: str | None = None, **kw: Any) -> _Spec:
        low = rng.random() < 0.08
        return _Spec(
            names.person(gend, surname),
            gend,
            _birth(rng, today, *age),
            "310",
            "1101",
            months=1 if low else CONTRIBUTION_MONTHS,
            base_fen=300_000 if low else base(),
            **kw,
        )

    def retiree(gend: str, surname: str | None = None, **kw: Any) -> _Spec:
        spec = _Spec(names.person(gend, surname), gend, _birth(rng, today, 60, 88), "310", "1201", **kw)
        roll = rng.random()
        if roll < 0.12:
            spec.disease = rng.choice(_DISEASES)
        elif roll < 0.17:
            spec.offsite = rng.choice(("long_term", "long_term", "referral", "temporary"))
        return spec

    def resident(gend: str, age: tuple[int, int], surname: str | None = None, **kw: Any) -> _Spec:
        brdy = _birth(rng, today, *age)
        years = (today - brdy).days // 365
        psn_type = "1403" if 6 <= years < 18 else "15"
        spec = _Spec(names.person(gend, surname), gend, brdy, "390", psn_type, **kw)
        if years >= 18 and rng.random() < 0.1:
            spec.identity = rng.choice(_IDENTITIES)
        return spec

    def sex() -> str:
        return rng.choice("12")

    while total < count:
        roll = rng.random()
        house: list[_Spec]
        if roll < 0.36:
            house = [employee(sex(), (22, 59))]
        elif roll < 0.54:
            g = sex()
            holder = employee(g, (28, 50))
            holder.base_fen = max(holder.base_fen, 800_000)
            holder.months = CONTRIBUTION_MONTHS
            surname = holder.name[0]
            other = "2" if g == "1" else "1"
            spouse = (
                employee(other, (26, 52), relation="spouse")
                if rng.random() < 0.6
                else resident(other, (26, 52), relation="spouse")
            )
            house = [holder, spouse]
            for _ in range(rng.choice((1, 1, 2))):
                house.append(resident(sex(), (0, 17), surname, relation="child"))
            if rng.random() < 0.3:
                parent = (
                    retiree(sex(), surname, relation="parent")
                    if rng.random() < 0.6
                    else resident(sex(), (60, 85), surname, relation="parent")
                )
                house.append(parent)
        elif roll < 0.72:
            house = [retiree(sex())]
        elif roll < 0.80:
            g = sex()
            house = [retiree(g), retiree("2" if g == "1" else "1", relation="spouse")]
        elif roll < 0.92:
            house = [resident(sex(), (18, 80))]
        else:
            house = [resident(sex(), (0, 17))]
        house = house[: count - total]
        total += len(house)
        out.append(house)
    return out


def _demo_households(today: dt.date) -> list[list[_Spec]]:
    """The named demo persons (fixed; listed in the summary)."""

    def born(years: int, month: int, day: int) -> dt.date:
        return dt.date(today.year - years, month, day)

    return [
        [_Spec("张伟", "1", born(40, 4, 12), "310", "1101", "在职职工, 个人账户有余额", True, True, base_fen=900_000)],
        [_Spec("李秀英", "2", born(69, 8, 20), "310", "1201", "退休, 丹东门诊统筹算例 (一级医院 65%)", True, True)],
        [
            _Spec(
                "王建国",
                "1",
                born(47, 2, 3),
                "310",
                "1101",
                "家庭共济绑定人 (配偶、子女)",
                True,
                True,
                base_fen=1_500_000,
            ),
            _Spec(
                "刘丽",
                "2",
                born(45, 6, 15),
                "310",
                "1101",
                "余额低, 由配偶王建国账户共济补足",
                True,
                True,
                months=1,
                base_fen=300_000,
                relation="spouse",
            ),
            _Spec(
                "王子涵",
                "1",
                born(11, 9, 1),
                "390",
                "1403",
                "中小学生, 居民保费由父亲账户代缴",
                True,
                False,
                relation="child",
            ),
        ],
        [
            _Spec(
                "赵敏",
                "2",
                born(67, 11, 30),
                "310",
                "1201",
                "退休, 异地长期居住天津 (已备案)",
                True,
                True,
                offsite="long_term",
            )
        ],
        [
            _Spec(
                "孙强",
                "1",
                born(65, 3, 8),
                "310",
                "1201",
                "退休, 高血压门诊慢特病已备案",
                True,
                True,
                disease="I10.x00",
            )
        ],
        [_Spec("陈晨", "2", born(52, 5, 5), "390", "15", "城乡居民, 低保对象", True, False, identity="dibao")],
        [_Spec("周杰", "1", born(35, 7, 7), "310", "1101", "出借医保卡, 直接结算已暂停", True, False, suspended=True)],
    ]


# -- building -------------------------------------------------------------------------
class _Builder:
    def __init__(self, conn: Connection, policies: PolicyStore, now: dt.datetime, rng: random.Random) -> None:
        self.conn, self.policies, self.now, self.rng = conn, policies, now, rng
        self.today = now.date()
        self.serial = 0
        self.certnos: set[str] = set()
        self.cards: set[str] = set()

    def at(self, when: dt.datetime) -> Callable[[], dt.datetime]:
        return lambda: when

    def clock(self) -> dt.datetime:
        return self.now

    def certno(self, spec: _Spec) -> str:
        while True:
            seq = self.rng.randrange(500) * 2 + (1 if spec.gend == "1" else 0)
            first17 = f"{self.rng.choice(_BIRTH_REGIONS)}{spec.brdy:%Y%m%d}{seq:03d}"
            number = first17 + check_digit(first17)
            if number not in self.certnos:
                self.certnos.add(number)
                return number

    def card(self) -> tuple[str, str]:
        while True:
            number = f"{self.rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{self.rng.randrange(10**8):08d}"
            if number not in self.cards:
                self.cards.add(number)
                return number, f"{DEMO_REGION}D156000005{self.rng.getrandbits(64):016X}"

    def person(self, spec: _Spec) -> None:
        self.serial += 1
        spec.psn_no = f"{DEMO_REGION}00{self.serial:08d}"
        conn = self.conn
        # 民族: Dandong's people are mostly 汉族, with 满族 (11) and 朝鲜族 (10) communities.
        naty = "11" if self.serial % 5 == 0 else "10" if self.serial % 17 == 0 else "01"
        reg.register_person(
            conn, psn_no=spec.psn_no, name=spec.name, certno=self.certno(spec), admdvs=DEMO_REGION, clock=self.clock,
            naty=naty,
        )
        begn, applied = self.enrolment_dates(spec)
        reg.enrol(
            conn,
            self.policies,
            psn_no=spec.psn_no,
            insutype=spec.insutype,
            psn_type=spec.psn_type,
            begn_date=begn,
            clock=self.at(applied),
        )
        card_no, card_sn = self.card()
        reg.issue_card(conn, psn_no=spec.psn_no, clock=self.clock, card_no=card_no, card_sn=card_sn)
        reg.set_initial_pin(conn, self.policies, psn_no=spec.psn_no, clock=self.clock)
        if spec.pin_changed:
            initial = self.policies.resolve(DEMO_REGION, self.today).params.security.initial_pin
            reg.change_pin(conn, self.policies, psn_no=spec.psn_no, old_pin=initial, new_pin=DEMO_PIN, clock=self.clock)
        if spec.identity:
            reg.add_identity(
                conn,
                self.policies,
                psn_no=spec.psn_no,
                idet_type=spec.identity,
                begn_date=max(begn, self.today - dt.timedelta(days=700)),
            )
        if spec.disease:
            acc.file_disease(
                conn,
                psn_no=spec.psn_no,
                dise_codg=spec.disease,
                begn_date=self.today - dt.timedelta(days=self.rng.randint(30, 900)),
                clock=self.clock,
            )
        if spec.offsite:
            days = 200 if spec.offsite == "long_term" else 20  # temporary filings last 6 months
            acc.file_offsite(
                conn,
                self.policies,
                psn_no=spec.psn_no,
                offsite_type=spec.offsite,
                mdtrtarea_admvs="120000",
                begn_date=self.today - dt.timedelta(days=days),
                clock=self.clock,
            )
        if spec.suspended:
            reg.suspend_settlement(
                conn,
                psn_no=spec.psn_no,
                from_date=self.today - dt.timedelta(days=30),
                to_date=self.today + dt.timedelta(days=150),
                reason="出借医保卡给他人使用 (冒名就医), 暂停直接结算 6 个月",
            )

    def enrolment_dates(self, spec: _Spec) -> tuple[dt.date, dt.datetime]:
        """Begin date and application time: employees from a past month, residents on time for a
        past year (applied in the concentrated period), newborns within the grace period."""
        rng, today = self.rng, self.today
        if spec.insutype == "310":
            if spec.psn_type == "1201":
                retire = dt.date(spec.brdy.year + (60 if spec.gend == "1" else 55), spec.brdy.month, 1)
                begn = max(dt.date(2005, 1, 1), min(retire, dt.date(today.year - 1, today.month, 1)))
            else:
                first = max(2005, spec.brdy.year + 22)
                last = today.year - 2
                begn = dt.date(rng.randint(min(first, last), last), rng.randint(1, 12), 1)
            return begn, dt.datetime.combine(begn, dt.time(9))
        if (today - spec.brdy).days < 365:
            applied = min(spec.brdy + dt.timedelta(days=rng.randint(5, 60)), today)
            return spec.brdy, dt.datetime.combine(applied, dt.time(9))
        year = rng.randint(max(spec.brdy.year + 1, 2016), today.year)
        begn = dt.date(year, 1, 1)
        applied = max(dt.date(year - 1, 11, 15), spec.brdy)
        return begn, dt.datetime.combine(applied, dt.time(9))

    def month_clock(self, period: dt.date) -> Callable[[], dt.datetime]:
        return self.at(min(dt.datetime.combine(period.replace(day=15), dt.time(10)), self.now))

    def fund(self, specs: list[_Spec]) -> None:
        """Contributions and allotments for the last months, the rollover if the window crosses a year end."""
        first = reg.add_months(self.today.replace(day=1), -(CONTRIBUTION_MONTHS - 1))
        months = [reg.add_months(first, i) for i in range(CONTRIBUTION_MONTHS)]
        for index, month in enumerate(months):
            if index and month.month == 1:
                acc.rollover_year(
                    self.conn,
                    year=month.year - 1,
                    clock=self.at(dt.datetime(month.year, 1, 1, 0, 30)),
                    admdvs=DEMO_REGION,
                )
            period = f"{month:%Y-%m}"
            clock = self.month_clock(month)
            for spec in specs:
                if spec.insutype != "310" or index < CONTRIBUTION_MONTHS - spec.months:
                    continue
                if spec.psn_type == "1201":
                    acc.allot_retiree(self.conn, self.policies, psn_no=spec.psn_no, period=period, clock=clock)
                else:
                    acc.contribute_employee(
                        self.conn, self.policies, psn_no=spec.psn_no, period=period, base_fen=spec.base_fen, clock=clock
                    )

    def household(self, house: list[_Spec]) -> None:
        """Bind members to the holder, then pay residents' premiums (from the holder's account if it can)."""
        holder = house[0]
        premium = self.policies.resolve(DEMO_REGION, self.today).params.funding.resident_premium_fen
        for spec in house:
            if spec.relation and holder.insutype == "310":
                # The demo household's register stands as the consent evidence (the agency's direct path).
                acc.bind_family(
                    self.conn,
                    self.policies,
                    holder_psn_no=holder.psn_no,
                    member_psn_no=spec.psn_no,
                    relation=spec.relation,
                    consent_ref=f"DEMO-HUKOU-{holder.psn_no}",
                    actor="cli",
                    clock=self.clock,
                )
        for spec in house:
            if spec.insutype != "390":
                continue
            payer = None
            if spec.relation and holder.insutype == "310" and sum(repo.balances(self.conn, holder.psn_no)) >= premium:
                payer = holder.psn_no
            acc.pay_resident_premium(
                self.conn, self.policies, psn_no=spec.psn_no, year=self.today.year, payer_psn_no=payer, clock=self.clock
            )


def _setup_places(conn: Connection) -> None:
    for code, name, parent in _REGIONS:
        reg.add_region(conn, code=code, name=name, parent_code=parent)
    for code, name, kind, level, admdvs, networked in _INSTITUTIONS:
        if repo.get_institution(conn, code) is None:
            reg.add_institution(
                conn,
                fixmedins_code=code,
                name=name,
                kind=kind,
                hosp_lv=level,
                admdvs=admdvs,
                valid_from=dt.date(2019, 1, 1),
                designated=True,
                networked=networked,
            )


def _summary(conn: Connection, policies: PolicyStore, today: dt.date, *, created: bool) -> DemoSummary:
    in_region = select(persons.c.psn_no).where(persons.c.admdvs == DEMO_REGION)
    open_rows = conn.execute(
        select(enrolments.c.psn_no, enrolments.c.insutype, enrolments.c.psn_type, persons.c.brdy)
        .select_from(enrolments.join(persons, persons.c.psn_no == enrolments.c.psn_no))
        .where(persons.c.admdvs == DEMO_REGION, enrolments.c.end_date.is_(None))
        .order_by(enrolments.c.psn_no, enrolments.c.begn_date)
    ).all()
    latest = {r.psn_no: r for r in open_rows}
    by_type: dict[str, int] = {}
    for row in latest.values():
        by_type[row.psn_type] = by_type.get(row.psn_type, 0) + 1
    children = sum(1 for r in latest.values() if r.insutype == "390" and reg.months_between(r.brdy, today) < 18 * 12)
    totals = (
        select(ledger_accounts.c.owner)
        .where(ledger_accounts.c.kind.in_(("psn_current", "psn_historical")), ledger_accounts.c.owner.in_(in_region))
        .group_by(ledger_accounts.c.owner)
        .having(func.sum(ledger_accounts.c.balance_fen) < LOW_BALANCE_FEN)
    )
    low = conn.execute(select(func.count()).select_from(totals.subquery())).scalar_one()
    active = family_bindings.c.unbound_at.is_(None)
    counts = {
        "persons": int(conn.execute(select(func.count()).select_from(in_region.subquery())).scalar_one()),
        **{f"psn_type {k}": v for k, v in sorted(by_type.items())},
        "children (<18, resident)": children,
        "households with bindings": int(
            conn.execute(
                select(func.count(func.distinct(family_bindings.c.holder_psn_no))).where(
                    active, family_bindings.c.holder_psn_no.in_(in_region)
                )
            ).scalar_one()
        ),
        "bindings": int(
            conn.execute(
                select(func.count())
                .select_from(family_bindings)
                .where(active, family_bindings.c.holder_psn_no.in_(in_region))
            ).scalar_one()
        ),
        "offsite filings": int(
            conn.execute(
                select(func.count())
                .select_from(filings)
                .where(filings.c.kind == "offsite", filings.c.status == "active", filings.c.psn_no.in_(in_region))
            ).scalar_one()
        ),
        "disease filings": int(
            conn.execute(
                select(func.count())
                .select_from(filings)
                .where(filings.c.kind == "disease", filings.c.status == "active", filings.c.psn_no.in_(in_region))
            ).scalar_one()
        ),
        "suspended": int(
            conn.execute(
                select(func.count())
                .select_from(persons)
                .where(persons.c.admdvs == DEMO_REGION, persons.c.suspended_from.is_not(None))
            ).scalar_one()
        ),
        "low balances (< 100 yuan)": int(low),
    }
    security = policies.resolve(DEMO_REGION, today).params.security
    demo: list[DemoPerson] = []
    notes = {spec.name: spec for house in _demo_households(today) for spec in house}
    for serial in range(1, len(notes) + 1):
        psn_no = f"{DEMO_REGION}00{serial:08d}"
        person = repo.get_person(conn, psn_no)
        if person is None:
            continue
        card = conn.execute(
            select(credentials)
            .where(
                credentials.c.psn_no == psn_no,
                credentials.c.kind == "card",
                credentials.c.status.in_(("active", "temp_lost")),
            )
            .order_by(credentials.c.id.desc())
        ).first()
        pin = repo.pin_row(conn, psn_no)
        must_change = bool(pin.must_change) if pin is not None else True
        enrol_row = latest.get(psn_no)
        spec = notes.get(person.name)
        demo.append(
            DemoPerson(
                psn_no,
                person.name,
                person.certno,
                card.number if card else "",
                (card.card_sn or "") if card else "",
                security.initial_pin if must_change else DEMO_PIN,
                must_change,
                enrol_row.insutype if enrol_row else "",
                enrol_row.psn_type if enrol_row else "",
                spec.note if spec else "",
            )
        )
    insts = conn.execute(
        select(institutions).where(institutions.c.fixmedins_code.in_([i[0] for i in _INSTITUTIONS]))
    ).all()
    # The demo region first, hospitals by level, then pharmacies, then 天津.
    insts = sorted(insts, key=lambda i: (i.admdvs[:4] != DEMO_REGION[:4], i.kind, i.hosp_lv, i.fixmedins_code))
    return DemoSummary(
        DEMO_REGION,
        created,
        counts,
        tuple(demo),
        tuple(
            DemoInstitution(
                i.fixmedins_code, i.name, i.kind, i.hosp_lv, LEVEL_NAMES.get(i.hosp_lv, ""), i.admdvs, bool(i.networked)
            )
            for i in insts
        ),
    )


def seed_demo(
    engine: Engine,
    policies: PolicyStore,
    *,
    clock: Callable[[], dt.datetime],
    count: int = 1000,
    rng_seed: int = 210600,
) -> DemoSummary:
    """Build the demo region (idempotent: a region that already has persons is left alone)."""
    if not isinstance(count, int) or isinstance(count, bool) or not 10 <= count <= 100_000:
        raise reg.fail("count", f"must be between 10 and 100000, got {count!r}")
    now = clock()
    today = now.date()

    def work(conn: Connection) -> DemoSummary:
        if conn.dialect.name == "postgresql":  # two seeders at once: the second waits, then finds the region seeded
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(DEMO_REGION)})
        seeded = conn.execute(select(persons.c.psn_no).where(persons.c.admdvs == DEMO_REGION).limit(1)).first()
        if seeded is not None:
            return _summary(conn, policies, today, created=False)
        rng = random.Random(rng_seed)
        _setup_places(conn)
        builder = _Builder(conn, policies, now, rng)
        demo = _demo_households(today)
        houses = demo + _households(rng, today, count - sum(len(h) for h in demo))
        specs = [spec for house in houses for spec in house]
        for spec in specs:
            builder.person(spec)
        builder.fund(specs)
        for house in houses:
            builder.household(house)
        return _summary(conn, policies, today, created=True)

    return transact(engine, work)
