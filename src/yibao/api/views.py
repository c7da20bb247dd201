"""Rows and service records as API models, and the read queries several routes share."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Select, select
from sqlalchemy.orm import aliased

from ..db.schema import settlements, staff_users
from ..money import format_fen
from ..service.accounts import BindingRecord, BindingRequestRecord, FilingRecord
from ..service.registry import InstitutionRecord, PersonInfo
from .auth import staff_record
from .models import (
    BindingOut,
    BindingRequestOut,
    CardOut,
    EnrolmentOut,
    FilingOut,
    IdentityOut,
    InstitutionOut,
    PersonOut,
    SettlementDetail,
    SettlementOut,
    StaffOut,
)
from .problems import ApiError

__all__ = [
    "binding_out",
    "binding_request_out",
    "filing_out",
    "institution_out",
    "person_out",
    "settlement_detail",
    "settlement_out",
    "settlement_query",
    "settlement_row",
    "staff_out",
]

_reversal = aliased(settlements, name="reversal")
_SUMMARY = (
    settlements.c.setl_id,
    settlements.c.kind,
    settlements.c.reverses_setl_id,
    settlements.c.psn_no,
    settlements.c.fixmedins_code,
    settlements.c.mdtrt_id,
    settlements.c.insutype,
    settlements.c.med_type,
    settlements.c.year,
    settlements.c.setl_time,
    settlements.c.medfee_sumamt,
    settlements.c.fund_pay_sumamt,
    settlements.c.acct_pay,
    settlements.c.psn_cash_pay,
    settlements.c.policy_version,
)


def settlement_query(*, with_result: bool = False) -> Select[Any]:
    """Settlement summaries with the setl_id of their reversal (``reversed_by``)."""
    columns: list[Any] = [*_SUMMARY, _reversal.c.setl_id.label("reversed_by")]
    if with_result:
        columns.append(settlements.c.result_json)
    return select(*columns).select_from(
        settlements.outerjoin(_reversal, _reversal.c.reverses_setl_id == settlements.c.setl_id)
    )


def settlement_row(conn: Connection, setl_id: str, *, with_result: bool = False) -> Any:
    """One settlement's summary row, or a 404 problem."""
    row = conn.execute(settlement_query(with_result=with_result).where(settlements.c.setl_id == setl_id)).first()
    if row is None:
        raise ApiError(404, "NOT_FOUND", f"settlement {setl_id} does not exist", field="setl_id")
    return row


def settlement_out(row: Any) -> SettlementOut:
    return SettlementOut(
        setl_id=row.setl_id,
        kind=row.kind,
        reverses_setl_id=row.reverses_setl_id,
        reversed_by=row.reversed_by,
        psn_no=row.psn_no,
        fixmedins_code=row.fixmedins_code,
        mdtrt_id=row.mdtrt_id,
        insutype=row.insutype,
        med_type=row.med_type,
        year=int(row.year),
        setl_time=row.setl_time,
        medfee_sumamt=format_fen(int(row.medfee_sumamt)),
        fund_pay_sumamt=format_fen(int(row.fund_pay_sumamt)),
        acct_pay=format_fen(int(row.acct_pay)),
        psn_cash_pay=format_fen(int(row.psn_cash_pay)),
        policy_version=row.policy_version,
    )


def settlement_detail(row: Any, explanation: list[str]) -> SettlementDetail:
    body = json.loads(row.result_json)
    return SettlementDetail(
        **settlement_out(row).model_dump(),
        setlinfo=body.get("setlinfo") or {},
        setldetail=body.get("setldetail") or [],
        detlcutinfo=body.get("detlcutinfo") or [],
        acct_mulaid=body.get("acct_mulaid") or [],
        explanation=explanation,
    )


def person_out(info: PersonInfo) -> PersonOut:
    p = info.person
    return PersonOut(
        psn_no=p.psn_no,
        name=p.name,
        certno=p.certno,
        gend=p.gend,
        brdy=p.brdy,
        admdvs=p.admdvs,
        suspended_from=info.suspended_from,
        suspended_to=info.suspended_to,
        suspension_reason=info.suspension_reason,
        pin_set=info.pin_set,
        pin_must_change=info.pin_must_change,
        pin_locked=info.pin_locked,
        cards=[CardOut(card_no=c.card_no, status=c.status) for c in info.cards],
        enrolments=[enrolment_out(e) for e in info.enrolments],
        identities=[IdentityOut(id=i.id, idet_type=i.idet_type, begn_date=i.begn_date, end_date=i.end_date)
                    for i in info.identities],
    )  # fmt: skip


def enrolment_out(e: Any) -> EnrolmentOut:
    return EnrolmentOut(
        id=e.id, insutype=e.insutype, psn_type=e.psn_type, admdvs=e.admdvs, begn_date=e.begn_date,
        pause_date=e.pause_date, end_date=e.end_date, waiting_until=e.waiting_until,
    )  # fmt: skip


def binding_out(b: BindingRecord) -> BindingOut:
    return BindingOut(
        id=b.id, holder_psn_no=b.holder_psn_no, member_psn_no=b.member_psn_no, relation=b.relation,
        bound_at=b.bound_at, unbound_at=b.unbound_at,
    )  # fmt: skip


def binding_request_out(r: BindingRequestRecord) -> BindingRequestOut:
    return BindingRequestOut(
        id=r.id, holder_psn_no=r.holder_psn_no, member_psn_no=r.member_psn_no, relation=r.relation,
        status=r.status, awaiting_psn_no=r.awaiting_psn_no, requested_by=r.requested_by, requested_at=r.requested_at,
        expires_at=r.expires_at, decided_at=r.decided_at, decided_by=r.decided_by, consent_ref=r.consent_ref,
        binding_id=r.binding_id,
    )  # fmt: skip


def filing_out(f: FilingRecord) -> FilingOut:
    return FilingOut(
        id=f.id, psn_no=f.psn_no, kind=f.kind, offsite_type=f.offsite_type,
        mdtrtarea_admvs=f.mdtrtarea_admvs, dise_codg=f.dise_codg, begn_date=f.begn_date, end_date=f.end_date,
        status=f.status,
    )  # fmt: skip


def institution_out(i: InstitutionRecord | Any) -> InstitutionOut:
    return InstitutionOut(
        fixmedins_code=i.fixmedins_code, name=i.name, kind=i.kind, hosp_lv=i.hosp_lv, admdvs=i.admdvs,
        designated=bool(i.designated), valid_from=i.valid_from, valid_to=i.valid_to, networked=bool(i.networked),
    )  # fmt: skip


def staff_out(row: Any) -> StaffOut:
    r = staff_record(row)
    return StaffOut(
        username=r.username, role=r.role, disabled=r.disabled, locked=r.locked,
        created_at=r.created_at, updated_at=r.updated_at,
    )  # fmt: skip


def staff_row(conn: Connection, username: str) -> Any:
    row = conn.execute(select(staff_users).where(staff_users.c.username == username)).first()
    if row is None:
        raise ApiError(404, "STAFF_UNKNOWN", f"staff user {username} does not exist", field="username")
    return row
