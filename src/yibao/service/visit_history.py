"""What an institution may read back about visits: its own visits (5201) and their diagnoses (5202), a
person's chronic-disease drug records at every institution (5205) and the person's designated institutions
(5302).

Every function reads in one read-only unit of work and answers small immutable values; the gateway gives
them their national field names. Who asks scopes every lookup: 5201/5202 see only the calling
institution's own visits; 5205/5302 are person-wide and answer only for a person the institution may ask
about (:func:`yibao.service.queries._entitled_person`, the rule of 5206/5301/5303).

Only what the platform stores is answered. A visit holds one diagnosis code (``visits.dise_codg``: the main
diagnosis of 2203, or of 2401 for an admission) and no discharge time; a settled fee line holds its split
(``settlements.result_json``) and the line as the institution uploaded it (``visit_fees.line_json``).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select

from .. import _json
from ..db import repository as repo
from ..db.schema import settlements, visit_fees, visits
from .credentials import Credential
from .queries import _entitled_person, disease_name
from .settlement import CIVIL_SERVANT_TYPES, is_inpatient
from .uow import transact
from .visits import VisitRefused

__all__ = [
    "CHRONIC_MED_TYPE_PREFIX", "DRUG_ITEM_TYPES", "MAX_DRUG_LINES", "MAX_SETTLEMENTS_READ", "MAX_VISITS",
    "UPLOADED_FIELDS", "Diagnosis", "DrugRecord", "FixedInstitution", "VisitRecord", "chronic_drug_records",
    "designated_institutions", "diagnoses_of", "diagnosis_type", "visits_of",
]  # fmt: skip

#: Visits one 5201 answers at most; a period with more is refused (the caller narrows it).
MAX_VISITS = 500
#: Drug lines one 5205 answers at most; a period with more is refused (the caller narrows it).
MAX_DRUG_LINES = 1000
#: Settlements 5205 reads at most for one answer (each may hold many lines, none a drug).
MAX_SETTLEMENTS_READ = 2000
#: 门诊慢特病: med_type 14 and its sub-types (140104 门诊慢病, 140201 门诊特病, 140401 门诊罕见病).
CHRONIC_MED_TYPE_PREFIX = "14"
#: med_chrgitm_type of a drug: 09 西药费, 10 中药饮片费, 11 中成药费.
DRUG_ITEM_TYPES = ("09", "10", "11")
#: list_type (目录类别) of a drug line by its med_chrgitm_type: 101 西药中成药, 102 中药饮片.
_LIST_TYPE = {"09": "101", "11": "101", "10": "102"}
#: psn_type (人员类别) codes of civil servants and of the flexibly employed.
_CIVIL_SERVANT_TYPES = CIVIL_SERVANT_TYPES
_FLEXIBLE_TYPES = frozenset({"1103", "1203"})
#: Fields of a fee line as the institution uploaded it (2204) that 5205 answers as they were sent.
UPLOADED_FIELDS = (
    "rx_drord_no", "fee_ocur_time", "med_list_codg", "medins_list_codg", "medins_list_name", "hosp_appr_flag",
    "tcmdrug_used_way", "etip_flag", "etip_hosp_code", "dscg_tkdrug_flag", "matn_fee_flag",
)  # fmt: skip
_MAX_ECHO = 200


@dataclass(frozen=True)
class VisitRecord:
    """One visit (就诊) of the institution, with the person and enrolment it was made under."""

    mdtrt_id: str
    psn_no: str
    certno: str
    psn_name: str
    gend: str
    naty: str  # 民族 (GB/T 3304), "" when not recorded
    brdy: dt.date
    age: int  # on the visit's first day
    insutype: str
    psn_type: str  # of the enrolment in force on the visit's first day ("" if none)
    cvlserv_flag: str  # "1" for psn_type 1102/1202 (公务员), else "0"
    flxempe_flag: str  # "1" for psn_type 1103/1203 (灵活就业), else "0"
    emp_name: str  # the enrolment's employer (单位名称), "" when not recorded
    insu_admdvs: str  # the enrolment's region (参保机构医保区划)
    begntime: str
    endtime: str  # an outpatient visit's settlement time; "" while open and for admissions
    mdtrt_cert_type: str
    med_type: str
    ipt_otp_no: str
    dise_codg: str
    dise_name: str
    inpatient: bool
    open: bool


@dataclass(frozen=True)
class Diagnosis:
    """The diagnosis a visit holds (its main diagnosis)."""

    diag_info_id: str
    mdtrt_id: str
    psn_no: str
    inout_diag_type: str  # "1" 入院诊断 for an admission's, "" for an outpatient visit's
    diag_type: str  # 1 西医诊断, 2 中医主病诊断, 3 中医主证诊断; "" when the code is not in the dictionary
    maindiag_flag: str
    diag_srt_no: int
    diag_code: str
    diag_name: str


@dataclass(frozen=True)
class DrugRecord:
    """One settled drug line of a chronic/special-disease visit (门诊慢特病)."""

    setl_time: dt.datetime
    feedetl_sn: str
    fixmedins_code: str
    fixmedins_name: str
    psn_no: str
    med_type: str
    cnt: str
    pric: str
    chrgitm_lv: str
    hilist_code: str
    hilist_name: str
    list_type: str
    med_chrgitm_type: str
    lmt_used_flag: str
    uploaded: Mapping[str, str]  # UPLOADED_FIELDS as sent (each "" when not sent)


@dataclass(frozen=True)
class FixedInstitution:
    """A designated institution (定点医药机构) the person chose for a business type."""

    psn_no: str
    insutype: str
    fix_srt_no: str
    fixmedins_code: str
    fixmedins_name: str
    begndate: dt.date
    enddate: dt.date | None


def _age(brdy: dt.date, on: dt.date) -> int:
    return on.year - brdy.year - ((on.month, on.day) < (brdy.month, brdy.day))


def _lower_bound(begin: dt.datetime) -> str:
    """Visit start times are stored as sent (``yyyy-MM-dd HH:mm:ss``, or a bare date that counts as midnight)."""
    return begin.date().isoformat() if begin.time() == dt.time() else _text(begin)


def _text(value: dt.datetime) -> str:
    return value.replace(microsecond=0, tzinfo=None).isoformat(sep=" ")


def _standing(where: Any) -> Any:
    """Settlements (kind ``settle``) matching ``where`` that no reversal names."""
    reversal = settlements.alias("reversal")
    return (
        select(settlements)
        .outerjoin(reversal, reversal.c.reverses_setl_id == settlements.c.setl_id)
        .where(settlements.c.kind == "settle", reversal.c.setl_id.is_(None), where)
    )


# -- 5201 --------------------------------------------------------------------------------------------------
def visits_of(
    db: Engine, *, fixmedins_code: str, psn_no: str, begin: dt.datetime, end: dt.datetime, med_type: str = "",
    mdtrt_id: str = "", limit: int | None = None,
) -> tuple[tuple[VisitRecord, ...], bool]:  # fmt: skip
    """The institution's visits of the person that began in [begin, end] (cancelled registrations left out),
    oldest first, at most ``limit`` (default :data:`MAX_VISITS`); and whether more matched."""
    most = MAX_VISITS if limit is None else limit
    t = visits.c
    conditions = [
        t.fixmedins_code == fixmedins_code, t.psn_no == psn_no, t.status != "cancelled",
        t.begntime >= _lower_bound(begin), t.begntime <= _text(end),
    ]  # fmt: skip
    if med_type:
        conditions.append(t.med_type == med_type)
    if mdtrt_id:
        conditions.append(t.mdtrt_id == mdtrt_id)

    def work(conn: Connection) -> tuple[tuple[VisitRecord, ...], bool]:
        rows = conn.execute(select(visits).where(and_(*conditions)).order_by(t.begntime, t.mdtrt_id)
                            .limit(most + 1)).all()  # fmt: skip
        more = len(rows) > most
        rows = rows[:most]
        if not rows:
            return (), more
        person = repo.get_person(conn, psn_no)
        assert person is not None, "a visit names a person"
        # An outpatient visit ends when it is settled: the time of its standing settlement.
        settled = [r.mdtrt_id for r in rows if r.status == "settled" and not is_inpatient(r.med_type)]
        ended: dict[str, dt.datetime] = {}
        if settled:
            standing = _standing(settlements.c.mdtrt_id.in_(settled)).subquery()
            ended = {
                r.mdtrt_id: r.last
                for r in conn.execute(
                    select(standing.c.mdtrt_id, func.max(standing.c.setl_time).label("last")).group_by(
                        standing.c.mdtrt_id
                    )
                )
            }
        out = []
        enrolments: dict[tuple[str, dt.date], Any] = {}
        for r in rows:
            day = _visit_day(r.begntime)
            if (r.insutype, day) not in enrolments:
                enrolments[r.insutype, day] = repo.enrolment_on(conn, psn_no, r.insutype, day)
            enrol = enrolments[r.insutype, day]
            psn_type = enrol.psn_type if enrol is not None else ""
            last = ended.get(r.mdtrt_id)
            out.append(VisitRecord(
                mdtrt_id=r.mdtrt_id, psn_no=psn_no, certno=person.certno, psn_name=person.name, gend=person.gend,
                naty=person.naty or "", brdy=person.brdy, age=_age(person.brdy, day), insutype=r.insutype,
                psn_type=psn_type,
                cvlserv_flag="1" if psn_type in _CIVIL_SERVANT_TYPES else "0",
                flxempe_flag="1" if psn_type in _FLEXIBLE_TYPES else "0",
                emp_name=(enrol.emp_name or "") if enrol is not None else "",
                insu_admdvs=enrol.admdvs if enrol is not None else "", begntime=r.begntime,
                endtime=_text(last) if last is not None else "", mdtrt_cert_type=r.cert_type,
                med_type=r.med_type, ipt_otp_no=r.ipt_otp_no, dise_codg=r.dise_codg or "",
                dise_name=disease_name(r.dise_codg or ""), inpatient=is_inpatient(r.med_type), open=r.status == "open",
            ))  # fmt: skip
        return tuple(out), more

    return transact(db, work, readonly=True)


def _visit_day(begntime: str) -> dt.date:
    try:
        return dt.date.fromisoformat(begntime[:10])
    except ValueError:  # stored as read at registration (date-checked); never expected
        return dt.date.min


# -- 5202 --------------------------------------------------------------------------------------------------
def diagnoses_of(db: Engine, *, fixmedins_code: str, mdtrt_id: str, psn_no: str) -> tuple[Diagnosis, ...]:
    """The diagnoses of one of the institution's visits of the person: the one diagnosis code the visit holds
    (none before 2203 gave one). Another institution's visit is answered as one that does not exist."""

    def work(conn: Connection) -> tuple[Diagnosis, ...]:
        row = conn.execute(select(visits).where(visits.c.mdtrt_id == mdtrt_id)).first()
        if row is None or row.fixmedins_code != fixmedins_code:
            raise VisitRefused(f"就诊 {mdtrt_id} 不存在或不属于本机构")
        if row.psn_no != psn_no:
            raise VisitRefused("psn_no 与就诊登记不符")
        if not row.dise_codg:
            return ()
        code = row.dise_codg
        return (Diagnosis(
            diag_info_id=f"{mdtrt_id}-1", mdtrt_id=mdtrt_id, psn_no=psn_no,
            inout_diag_type="1" if is_inpatient(row.med_type) else "", diag_type=diagnosis_type(code),
            maindiag_flag="1", diag_srt_no=1, diag_code=code, diag_name=disease_name(code),
        ),)  # fmt: skip

    return transact(db, work, readonly=True)


@cache
def _categories() -> dict[str, str]:
    """category_type (西医诊断, 肿瘤诊断, 中医诊断, 中医证候) of each code of the bundled disease dictionary."""
    path = resources.files("yibao").joinpath("data/dictionaries/disease-categories.csv")
    with path.open(encoding="utf-8") as handle:
        return {row["code"]: row["category_type"] for row in csv.DictReader(handle)}


_DIAG_TYPE = {"西医诊断": "1", "肿瘤诊断": "1", "中医诊断": "2", "中医证候": "3"}


def diagnosis_type(code: str) -> str:
    """diag_type of a diagnosis code by the dictionary's category (looked up as :func:`disease_name` does):
    1 西医诊断, 2 中医主病诊断, 3 中医主证诊断; "" for a code the dictionary does not hold."""
    kinds = _categories()
    kind = kinds.get(code) or kinds.get(code[:4]) or kinds.get(code[:3] + ".") or ""
    return _DIAG_TYPE.get(kind, "")


# -- 5205 --------------------------------------------------------------------------------------------------
def chronic_drug_records(
    db: Engine, *, fixmedins_code: str, psn_no: str, credential: Credential | None, now: dt.datetime,
    begin: dt.datetime, end: dt.datetime, limit: int | None = None,
) -> tuple[tuple[DrugRecord, ...], bool]:  # fmt: skip
    """The drug lines of the person's standing chronic/special-disease settlements (med_type 14…) at any
    institution, settled in [begin, end], oldest first, at most ``limit`` (default :data:`MAX_DRUG_LINES`); and
    whether more matched. Only for a person the institution may ask about."""
    most = MAX_DRUG_LINES if limit is None else limit

    def work(conn: Connection) -> tuple[tuple[DrugRecord, ...], bool]:
        who = _entitled_person(conn, fixmedins_code, psn_no, credential, now, "慢特病用药记录")
        query = _standing(and_(
            settlements.c.psn_no == who, settlements.c.med_type.startswith(CHRONIC_MED_TYPE_PREFIX),
            settlements.c.setl_time >= begin, settlements.c.setl_time <= end,
        )).order_by(settlements.c.setl_time, settlements.c.setl_id).limit(MAX_SETTLEMENTS_READ + 1)  # fmt: skip
        rows = conn.execute(query).all()
        more = len(rows) > MAX_SETTLEMENTS_READ
        names: dict[str, str] = {}
        out: list[DrugRecord] = []
        for row in rows[:MAX_SETTLEMENTS_READ]:
            lines = [line for line in _json.loads(row.result_json).get("detlcutinfo", [])
                     if str(line.get("med_chrgitm_type") or "") in DRUG_ITEM_TYPES]  # fmt: skip
            if not lines:
                continue
            if len(out) + len(lines) > most:
                return tuple(out), True
            if row.fixmedins_code not in names:
                inst = repo.get_institution(conn, row.fixmedins_code)
                names[row.fixmedins_code] = inst.name if inst is not None else ""
            uploaded = _uploaded_lines(conn, row.mdtrt_id, [str(line.get("feedetl_sn") or "") for line in lines])
            for line in lines:
                sn = str(line.get("feedetl_sn") or "")
                kind = str(line.get("med_chrgitm_type") or "")
                sent = uploaded.get(sn, {})
                out.append(DrugRecord(
                    setl_time=row.setl_time, feedetl_sn=sn, fixmedins_code=row.fixmedins_code,
                    fixmedins_name=names[row.fixmedins_code], psn_no=who, med_type=row.med_type,
                    cnt=str(line.get("cnt") or ""), pric=str(line.get("pric") or ""),
                    chrgitm_lv=str(line.get("chrgitm_lv") or ""), hilist_code=str(line.get("hilist_code") or ""),
                    hilist_name=str(line.get("hilist_name") or ""), list_type=_LIST_TYPE.get(kind, ""),
                    med_chrgitm_type=kind, lmt_used_flag=str(line.get("lmt_used_flag") or ""),
                    uploaded={key: _echo(sent.get(key)) for key in UPLOADED_FIELDS},
                ))  # fmt: skip
        return tuple(out), more

    return transact(db, work, readonly=True)


def _uploaded_lines(conn: Connection, mdtrt_id: str | None, sns: list[str]) -> dict[str, dict[str, Any]]:
    """The visit's fee lines as uploaded (2204), by feedetl_sn."""
    if not mdtrt_id:
        return {}
    found = conn.execute(
        select(visit_fees.c.feedetl_sn, visit_fees.c.line_json)
        .where(visit_fees.c.mdtrt_id == mdtrt_id, visit_fees.c.feedetl_sn.in_(sns))
    ).all()  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    for sn, text in found:
        line = _json.loads(text)
        out[sn] = line if isinstance(line, dict) else {}
    return out


def _echo(value: Any) -> str:
    """An uploaded value answered as sent: text or a number's text, bounded; anything else as ""."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return str(value).strip()[:_MAX_ECHO]


# -- 5302 --------------------------------------------------------------------------------------------------
def designated_institutions(
    db: Engine, *, fixmedins_code: str, psn_no: str, credential: Credential | None, now: dt.datetime,
    biz_appy_type: str,
) -> tuple[FixedInstitution, ...]:  # fmt: skip
    """The institutions the person has designated (人员定点) for the business type, for a person the
    institution may ask about.

    The platform records no designated-institution filing (就医定点医疗机构登记, 家庭医生签约 …): its
    filings are off-site (异地就医) and chronic-disease (门慢门特) ones, neither naming an institution. So the
    answer is empty for every business type once the access rule is met."""

    def work(conn: Connection) -> tuple[FixedInstitution, ...]:
        _entitled_person(conn, fixmedins_code, psn_no, credential, now, "定点信息")
        return ()

    return transact(db, work, readonly=True)
