"""Read-only queries for persons and agency staff: balances, usage, accumulators, statements.

All run in a read-only unit of work (SQLite: a deferred BEGIN, no write lock).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy import Connection, Engine, and_, or_, select

from ..db import repository as repo
from ..db.schema import contributions, filings, institutions, visits
from ..errors import RequestError, YibaoError
from ..money import format_fen
from .credentials import Credential, resolve_credential
from .settlement import is_inpatient
from .uow import transact

__all__ = [
    "InstitutionNotEntitled", "accumulators", "accumulators_at_institution", "admissions_at_institution",
    "annual_statement", "balance", "disease_filings_at_institution", "disease_name", "explain_settlement",
    "usage_records",
]  # fmt: skip

#: What each accumulator counter means, for 5206-style answers.
COUNTER_MEANINGS = {
    "visit_cnt": "年内结算次数",
    "dedc_amt": "年内已付起付线",
    "dedc_lv_amt": "年内最高起付线标准",
    "base_amt": "年内累计计算基数",
    "elig_amt": "年内起付线以上累计",
    "fund_amt": "年内已支付 (限额已用)",
}
#: 累计类别代码 (5206 cum_type_code) prefixes of each counter, as the national platform builds its codes:
#: C 次数, Q 起付线累计, S 计算基数 (费用) 累计, D 基金支付累计; then ``_LAB`` and the rule (benefit, fund layer
#: or cap) the counter belongs to, since the platform's rules are the region's own. Keys it does not know keep
#: the prefix X.
CUM_TYPE_PREFIXES = {
    "visit_cnt": "C0000", "dedc_amt": "Q0000", "dedc_lv_amt": "Q0001", "base_amt": "S0000", "elig_amt": "S0001",
    "fund_amt": "D0000",
}  # fmt: skip


def cum_type_code(key: str) -> str:
    """The national-style 累计类别代码 of an accumulator key: ``outpatient_pooling.dedc_amt`` →
    ``Q0000_LABoutpatient_pooling`` (docs/gateway.md, 5206)."""
    rule, _, counter = key.partition(".")
    return f"{CUM_TYPE_PREFIXES.get(counter, 'X0000')}_LAB{rule}"


#: Days after a visit's registration during which the institution may still query the person by psn_no.
RECENT_VISIT_DAYS = 7
#: Rows returned by a list query at most.
MAX_ROWS = 1000


def _person_or_error(conn: Connection, psn_no: str) -> None:
    if repo.get_person(conn, psn_no) is None:
        raise RequestError("psn_no", f"人员 {psn_no} 不存在", code="NOT_FOUND")


def balance(db: Engine, psn_no: str) -> dict[str, str]:
    """个人账户余额: current-year and historical."""

    def work(conn: Connection) -> dict[str, str]:
        _person_or_error(conn, psn_no)
        current, historical = repo.balances(conn, psn_no)
        return {
            "psn_no": psn_no,
            "current_year": format_fen(current),
            "historical": format_fen(historical),
            "balc": format_fen(current + historical),
        }

    return transact(db, work, readonly=True)


def usage_records(db: Engine, psn_no: str, year: int | None = None) -> list[dict[str, Any]]:
    """就医结算记录 with their lines, newest first (at most MAX_ROWS)."""

    def work(conn: Connection) -> list[dict[str, Any]]:
        _person_or_error(conn, psn_no)
        rows = list(repo.settlements_of(conn, psn_no, year))[-MAX_ROWS:]
        out = []
        for row in reversed(rows):
            body = json.loads(row.result_json)
            out.append(
                {
                    "setl_id": row.setl_id,
                    "kind": row.kind,
                    "reverses_setl_id": row.reverses_setl_id,
                    "fixmedins_code": row.fixmedins_code,
                    "setl_time": row.setl_time.strftime("%Y-%m-%d %H:%M:%S"),
                    "insutype": row.insutype,
                    "med_type": row.med_type,
                    "medfee_sumamt": format_fen(row.medfee_sumamt),
                    "fund_pay_sumamt": format_fen(row.fund_pay_sumamt),
                    "acct_pay": format_fen(row.acct_pay),
                    "psn_cash_pay": format_fen(row.psn_cash_pay),
                    "lines": body.get("detlcutinfo", []),
                }
            )
        return out

    return transact(db, work, readonly=True)


class InstitutionNotEntitled(YibaoError):
    """An institution asked about a person it has no business with (no credential shown, no open visit)."""

    code = "FORBIDDEN"


def accumulators(db: Engine, psn_no: str, year: int, insutype: str) -> list[dict[str, str | int]]:
    """5206: the year-to-date accumulators, each with its meaning."""
    return transact(db, lambda conn: _accumulators(conn, psn_no, year, insutype), readonly=True)


def _entitled_person(
    conn: Connection, fixmedins_code: str, psn_no: str, credential: Credential | None, now: dt.datetime, what: str
) -> str:
    """The person an institution may ask about: one who shows a valid credential there now, or who has
    a visit at that institution that is open (就诊登记 not yet settled or cancelled) or was registered
    within the last :data:`RECENT_VISIT_DAYS` days and not cancelled: HIS clients query 5205/5206/5302
    with the ``psn_no`` alone, during the visit and while printing its settlement.

    A bare ``psn_no`` names nobody's data to a stranger: the refusal is the same whether the person
    exists or not.
    """
    if credential is not None:
        found, reasons = resolve_credential(conn, credential, now)
        if found is None or reasons or (psn_no and found != psn_no):
            raise InstitutionNotEntitled("无权查询: 凭证无效或与 psn_no 不符")
        return found
    open_visit = conn.execute(
        select(visits.c.mdtrt_id).where(
            visits.c.psn_no == psn_no, visits.c.fixmedins_code == fixmedins_code,
            or_(visits.c.status == "open", and_(visits.c.status == "settled",
                                                visits.c.created_at >= now - dt.timedelta(days=RECENT_VISIT_DAYS))),
        ).limit(1)
    ).first()  # fmt: skip
    if not psn_no or open_visit is None:
        raise InstitutionNotEntitled(
            f"无权查询人员 {psn_no or '(空)'} 的{what}: 须出示其医保凭证 (mdtrt_cert_type, mdtrt_cert_no),"
            f" 或该人员在本机构有未结算或 {RECENT_VISIT_DAYS} 日内的就诊登记"
        )
    return psn_no


def accumulators_at_institution(
    db: Engine, fixmedins_code: str, psn_no: str, credential: Credential | None, year: int, insutype: str,
    now: dt.datetime,
) -> list[dict[str, str | int]]:  # fmt: skip
    """5206 for an institution, for a person it may ask about (:func:`_entitled_person`)."""

    def work(conn: Connection) -> list[dict[str, str | int]]:
        who = _entitled_person(conn, fixmedins_code, psn_no, credential, now, "累计信息")
        return _accumulators(conn, who, year, insutype)

    return transact(db, work, readonly=True)


def disease_filings_at_institution(
    db: Engine, fixmedins_code: str, psn_no: str, credential: Credential | None, now: dt.datetime
) -> list[dict[str, str]]:
    """5301 门慢门特病种备案: the person's active chronic/special-disease filings, with the disease's name."""

    def work(conn: Connection) -> list[dict[str, str]]:
        who = _entitled_person(conn, fixmedins_code, psn_no, credential, now, "门慢门特备案")
        rows = conn.execute(
            select(filings).where(filings.c.psn_no == who, filings.c.kind == "disease", filings.c.status == "active")
            .order_by(filings.c.begn_date, filings.c.id).limit(MAX_ROWS)
        ).all()  # fmt: skip
        return [
            {"opsp_dise_code": row.dise_codg or "", "opsp_dise_name": disease_name(row.dise_codg or ""),
             "begndate": row.begn_date.isoformat(), "enddate": row.end_date.isoformat() if row.end_date else ""}
            for row in rows
        ]  # fmt: skip

    return transact(db, work, readonly=True)


def admissions_at_institution(
    db: Engine, fixmedins_code: str, psn_no: str, credential: Credential | None, now: dt.datetime,
    same_region: Callable[[str, str], bool],
) -> list[dict[str, Any]]:  # fmt: skip
    """5303 在院信息: the person's open admissions at any institution (a HIS checks that the patient is
    not in hospital elsewhere), for a person the institution may ask about. ``out_flag`` 异地标志 is
    "1" where the institution's pooling region is not the person's (``same_region``, from the policies)."""

    def work(conn: Connection) -> list[dict[str, Any]]:
        who = _entitled_person(conn, fixmedins_code, psn_no, credential, now, "在院信息")
        person = repo.get_person(conn, who)
        assert person is not None
        rows = conn.execute(
            select(visits, institutions.c.admdvs.label("inst_admdvs"))
            .join(institutions, institutions.c.fixmedins_code == visits.c.fixmedins_code)
            .where(visits.c.psn_no == who, visits.c.status == "open")
            .order_by(visits.c.begntime, visits.c.mdtrt_id).limit(MAX_ROWS)
        ).all()  # fmt: skip
        today = now.date()
        age = today.year - person.brdy.year - ((today.month, today.day) < (person.brdy.month, person.brdy.day))
        return [
            {"mdtrt_id": row.mdtrt_id, "psn_no": who, "psn_cert_type": "01", "certno": person.certno,
             "psn_name": person.name, "gend": person.gend, "brdy": person.brdy.isoformat(), "age": age,
             "insutype": row.insutype, "begndate": row.begntime[:10], "med_type": row.med_type,
             "ipt_otp_no": row.ipt_otp_no, "fixmedins_code": row.fixmedins_code,
             "out_flag": "0" if same_region(person.admdvs, row.inst_admdvs) else "1"}
            for row in rows
            if is_inpatient(row.med_type)
        ]  # fmt: skip

    return transact(db, work, readonly=True)


@cache
def _disease_names() -> dict[str, str]:
    """ICD-10 categories (疾病分类与代码, national dictionary) by their code, e.g. ``I10.``."""
    path = resources.files("yibao").joinpath("data/dictionaries/disease-categories.csv")
    with path.open(encoding="utf-8") as handle:
        return {row["code"]: row["name"] for row in csv.DictReader(handle)}


def disease_name(code: str) -> str:
    """The disease category's name of an ICD-10 code (``I10.x00`` → 特发性（原发性）高血压), or ''."""
    names = _disease_names()
    return names.get(code) or names.get(code[:4]) or names.get(code[:3] + ".") or ""


def _accumulators(conn: Connection, psn_no: str, year: int, insutype: str) -> list[dict[str, str | int]]:
    _person_or_error(conn, psn_no)
    values = repo.get_accumulators(conn, psn_no, year, insutype)
    out: list[dict[str, str | int]] = []
    for key, value in sorted(values.items()):
        rule, _, counter = key.partition(".")
        out.append(
            {
                "key": key,
                "rule": rule,
                "meaning": COUNTER_MEANINGS.get(counter, counter),
                "value": value if counter.endswith("_cnt") else format_fen(value),
            }
        )
    return out


def annual_statement(db: Engine, psn_no: str, year: int) -> dict[str, Any]:
    """年度账单: settlements, what funds, the account and cash paid, contributions, balances."""

    def work(conn: Connection) -> dict[str, Any]:
        _person_or_error(conn, psn_no)
        rows = repo.settlements_of(conn, psn_no, year)
        totals = {"medfee_sumamt": 0, "fund_pay_sumamt": 0, "acct_pay": 0, "psn_cash_pay": 0}
        for row in rows:
            for key in totals:
                totals[key] += getattr(row, key)
        paid_in = conn.execute(
            select(contributions.c.kind, contributions.c.amount_fen, contributions.c.account_fen).where(
                contributions.c.psn_no == psn_no, contributions.c.period.like(f"{year}%")
            )
        ).all()
        current, historical = repo.balances(conn, psn_no)
        return {
            "psn_no": psn_no,
            "year": year,
            "settlements": len([r for r in rows if r.kind == "settle"]),
            "reversals": len([r for r in rows if r.kind == "reversal"]),
            **{key: format_fen(value) for key, value in totals.items()},
            "contributions": format_fen(sum(r.amount_fen for r in paid_in)),
            "credited_to_account": format_fen(sum(r.account_fen for r in paid_in)),
            "balance": {"current_year": format_fen(current), "historical": format_fen(historical)},
        }

    return transact(db, work, readonly=True)


def explain_settlement(db: Engine, setl_id: str, lang: str = "zh") -> dict[str, Any]:
    """Re-explain a stored settlement: its trace in plain language, with the policy version used."""
    if lang not in ("zh", "en"):
        raise RequestError("lang", f"须为 zh 或 en, 收到 {str(lang)[:40]!r}")

    def work(conn: Connection) -> dict[str, Any]:
        row = repo.get_settlement(conn, setl_id)
        if row is None:
            raise RequestError("setl_id", f"结算 {setl_id} 不存在", code="NOT_FOUND")
        body = json.loads(row.result_json)
        if row.kind == "reversal":
            original = repo.get_settlement(conn, row.reverses_setl_id)
            assert original is not None
            lines = [f"冲销结算 {row.reverses_setl_id}, 金额全部冲回。" if lang == "zh"
                     else f"Reversal of settlement {row.reverses_setl_id}: every amount returned."]  # fmt: skip
            body = json.loads(original.result_json)
        else:
            lines = []
        lines += [step["text"][lang] for step in body.get("trace", [])]
        return {"setl_id": setl_id, "kind": row.kind, "policy_version": row.policy_version, "explanation": lines}

    return transact(db, work, readonly=True)
