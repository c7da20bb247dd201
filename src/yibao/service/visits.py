"""Visits (就诊登记) of an institution: registration, visit details, fee lines, and an outpatient
visit's settlement, reversal and 冲正.

Every function takes the calling institution (``fixmedins_code``) and acts only on its own
visits: a visit of another institution is answered as one that does not exist. Each runs in
one unit of work. The national interface's field reading is the gateway's; these take plain
values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from .. import _json
from ..db import repository as repo
from ..db import settlement_rows, visit_rows
from ..db.schema import visit_fees, visits
from ..engine import SettlementResult
from ..errors import YibaoError
from ..money import format_fen, parse_fen
from .credentials import Credential, resolve_credential
from .fee_lines import engine_lines
from .settlement import SettleCommand, SettlementService, StoredReply, is_inpatient
from .uow import transact

__all__ = [
    "MAX_VISIT_LINES", "SettleOptions", "VisitRefused", "cancel_registration", "own_visit", "person_of",
    "presettle", "record_visit_info", "register", "reverse", "revoke_fees", "settle", "undo", "upload_fees",
]  # fmt: skip

#: Fee lines one visit may hold.
MAX_VISIT_LINES = 20_000


class VisitRefused(YibaoError):
    """The visit cannot take this step (unknown, another institution's, or in the wrong state)."""

    code = "VISIT_REFUSED"


@dataclass(frozen=True)
class SettleOptions:
    """What a pre-settlement or settlement of a visit may add to what the visit holds."""

    med_type: str | None = None  # overrides the registered med_type
    acct_used_flag: str = "0"  # 个人账户使用标志
    pin: str | None = None  # card password, when the terminal does not verify it
    declared_total_fen: int | None = None  # medfee_sumamt as the institution computed it


def person_of(db: Engine, cred: Credential, now: dt.datetime) -> str:
    """The person a credential names, refused if it names none or is not usable (lost, revoked …)."""
    psn_no, reasons = transact(db, lambda conn: resolve_credential(conn, cred, now), readonly=True)
    if psn_no is None or reasons:
        raise VisitRefused("; ".join(r.message for r in reasons) or "凭证无效")
    return psn_no


def own_visit(conn: Connection, fixmedins_code: str, mdtrt_id: str, psn_no: str | None = None) -> Any:
    """The institution's visit ``mdtrt_id`` (its ``visits`` row); refused when it is not the institution's or
    a ``psn_no`` given is not the visit's person."""
    row = conn.execute(select(visits).where(visits.c.mdtrt_id == mdtrt_id)).first()
    if row is None or row.fixmedins_code != fixmedins_code:
        raise VisitRefused(f"就诊 {mdtrt_id or '(空)'} 不存在或不属于本机构")
    if psn_no and row.psn_no != psn_no:
        raise VisitRefused("psn_no 与就诊登记不符")
    return row


def _own_visit_and_fees(
    conn: Connection, fixmedins_code: str, mdtrt_id: str, psn_no: str | None = None
) -> tuple[visit_rows.VisitRow, list[visit_rows.Fee]]:
    """As :func:`own_visit`, with all the visit's fee lines: one round trip."""
    row, fees = visit_rows.read_visit_and_fees(conn, mdtrt_id)
    if row is None or row.fixmedins_code != fixmedins_code:
        raise VisitRefused(f"就诊 {mdtrt_id or '(空)'} 不存在或不属于本机构")
    if psn_no and row.psn_no != psn_no:
        raise VisitRefused("psn_no 与就诊登记不符")
    return row, fees


def _outpatient_only(row: Any) -> None:
    """Admissions have their own transactions (2301–2305), which keep the per-admission rules."""
    if is_inpatient(row.med_type):
        raise VisitRefused(f"就诊 {row.mdtrt_id} 是住院, 请使用住院交易 (2301/2303/2304/2305)")


def _active(fees: list[visit_rows.Fee]) -> list[dict[str, Any]]:
    return [_json.loads(fee.line_json) for fee in fees if fee.status == "active"]


def register(
    db: Engine, service: SettlementService, *, fixmedins_code: str, mdtrt_id: str, cred: Credential, insutype: str,
    med_type: str, begntime: str, ipt_otp_no: str, claimed_psn_no: str | None, now: dt.datetime,
) -> str:  # fmt: skip
    """Identify the person, check entitlement and open the visit, in one unit of work; the person's psn_no.

    A retry with the same ``mdtrt_id`` finds the visit its first attempt opened."""
    assert mdtrt_id and begntime, "a visit has an id and a start time"
    date = dt.date.fromisoformat(begntime[:10])

    def work(conn: Connection) -> str:
        psn_no, reasons = service.identify_in(conn, cred, fixmedins_code, insutype, med_type, date)
        if psn_no is None:
            raise VisitRefused("; ".join(r.message for r in reasons) or "凭证无效")
        if (claimed_psn_no or psn_no) != psn_no:
            raise VisitRefused("psn_no 与凭证不符 (不得冒名就医)")
        if reasons:
            raise VisitRefused("; ".join(r.message for r in reasons))
        visit = visit_rows.VisitRow(
            mdtrt_id, psn_no, fixmedins_code, insutype, med_type, begntime[:19], cred.cert_type, cred.number,
            cred.card_sn, ipt_otp_no, None, "open",
        )  # fmt: skip
        visit_rows.open_visit(conn, visit, now)
        return psn_no

    return transact(db, work)


def cancel_registration(db: Engine, *, fixmedins_code: str, mdtrt_id: str, psn_no: str | None) -> None:
    """2202: cancel a registration that has not been settled."""

    def work(conn: Connection) -> None:
        row = own_visit(conn, fixmedins_code, mdtrt_id, psn_no)
        if row.status == "settled":
            raise VisitRefused("已结算的就诊不能撤销挂号, 请先撤销结算")
        conn.execute(update(visits).where(visits.c.mdtrt_id == mdtrt_id).values(status="cancelled"))

    transact(db, work)


def record_visit_info(
    db: Engine, *, fixmedins_code: str, mdtrt_id: str, psn_no: str | None, med_type: str | None, dise_codg: str | None
) -> None:
    """2203: the visit's medical type and main diagnosis, as the institution records them before settling."""

    def work(conn: Connection) -> None:
        row = own_visit(conn, fixmedins_code, mdtrt_id, psn_no)
        if row.status != "open":
            raise VisitRefused(f"就诊状态为 {row.status}, 不能上传就诊信息")
        values = {k: v for k, v in (("med_type", med_type), ("dise_codg", dise_codg)) if v}
        if values:
            conn.execute(update(visits).where(visits.c.mdtrt_id == mdtrt_id).values(**values))

    transact(db, work)


def upload_fees(
    db: Engine, service: SettlementService, *, msgid: str, fixmedins_code: str, mdtrt_id: str,
    lines: Sequence[Mapping[str, Any]], now: dt.datetime,
) -> SettlementResult:  # fmt: skip
    """2204: add fee lines to an open outpatient visit; a line already uploaded (same ``feedetl_sn``) is kept as
    first sent. The answer is the per-line split of the whole visit, as a pre-settlement computes it."""
    assert all(str(line.get("feedetl_sn") or "").strip() for line in lines), "every line has its feedetl_sn"

    def work(conn: Connection) -> SettlementResult:
        row, stored = _own_visit_and_fees(conn, fixmedins_code, mdtrt_id)
        _outpatient_only(row)
        if row.status != "open":
            raise VisitRefused(f"就诊状态为 {row.status}, 不能上传费用")
        fees = _active(stored)
        existing = {fee.feedetl_sn for fee in stored}
        new: list[tuple[str, str]] = []
        for line in lines:
            sn = str(line["feedetl_sn"]).strip()
            if sn in existing:
                continue  # re-upload of the same line (a retry): keep the first
            existing.add(sn)
            fees.append(dict(line))
            new.append((sn, _json.dumps(dict(line))))
        if len(existing) > MAX_VISIT_LINES:
            raise VisitRefused(f"一次就诊至多 {MAX_VISIT_LINES} 条费用明细")
        visit_rows.add_fees(conn, mdtrt_id, new, now)
        return service.split_in(conn, _command(msgid, fixmedins_code, row, SettleOptions(), fees))

    return transact(db, work)


def revoke_fees(db: Engine, *, fixmedins_code: str, mdtrt_id: str, psn_no: str | None, feedetl_sn: str) -> None:
    """2205: revoke one fee line of an open outpatient visit, or all of them (``feedetl_sn`` 0000)."""

    def work(conn: Connection) -> None:
        row = own_visit(conn, fixmedins_code, mdtrt_id, psn_no)
        _outpatient_only(row)
        if row.status != "open":
            raise VisitRefused(f"就诊状态为 {row.status}, 不能撤销费用")
        query = update(visit_fees).where(visit_fees.c.mdtrt_id == mdtrt_id)
        if feedetl_sn != "0000":
            query = query.where(visit_fees.c.feedetl_sn == feedetl_sn)
        conn.execute(query.values(status="revoked"))

    transact(db, work)


def _command(
    msgid: str, fixmedins_code: str, row: Any, options: SettleOptions, fees: list[dict[str, Any]]
) -> SettleCommand:
    if not fees:
        raise VisitRefused(f"就诊 {row.mdtrt_id} 没有已上传的费用明细")
    payload: dict[str, Any] = {
        "insutype": row.insutype, "med_type": options.med_type or row.med_type, "begntime": row.begntime,
        "acct_used_flag": options.acct_used_flag, "mdtrt_id": row.mdtrt_id,
        "feedetail": engine_lines(fees),
    }  # fmt: skip
    if row.dise_codg:
        payload["dise_codg"] = row.dise_codg
    return SettleCommand(msgid, fixmedins_code, Credential(row.cert_type, row.cert_no, row.card_sn, options.pin),
                         payload)  # fmt: skip


def _check_total(options: SettleOptions, setlinfo: Mapping[str, Any]) -> None:
    # Compared as money: 1075.3, "1075.30" and 1075.300 are the same total.
    declared = options.declared_total_fen
    if declared is not None and declared != parse_fen(setlinfo["medfee_sumamt"]):
        raise VisitRefused(
            f"medfee_sumamt {format_fen(declared)} 与已上传费用合计 {setlinfo['medfee_sumamt']} 不符"
        )


def presettle(
    db: Engine, service: SettlementService, *, msgid: str, fixmedins_code: str, mdtrt_id: str, psn_no: str | None,
    options: SettleOptions,
) -> dict[str, Any]:  # fmt: skip
    """2206: the settlement of the open visit's active lines, computed and not committed, as the national
    setlinfo/setldetail JSON."""

    def build(conn: Connection) -> SettleCommand:
        row, fees = _own_visit_and_fees(conn, fixmedins_code, mdtrt_id, psn_no)
        _outpatient_only(row)
        if row.status != "open":
            raise VisitRefused(f"就诊状态为 {row.status}, 不能预结算")
        return _command(msgid, fixmedins_code, row, options, _active(fees))

    body = service.presettle_body_with(build)
    _check_total(options, body["setlinfo"])
    return body


def settle(
    db: Engine, service: SettlementService, *, msgid: str, fixmedins_code: str, mdtrt_id: str, psn_no: str | None,
    options: SettleOptions,
) -> StoredReply:  # fmt: skip
    """2207: settle the open visit's active lines and close the visit, in one unit of work."""

    def build(conn: Connection) -> SettleCommand:
        row, fees = _own_visit_and_fees(conn, fixmedins_code, mdtrt_id, psn_no)
        _outpatient_only(row)
        # A retry of the settling message replays; anything else on a closed visit is refused.
        if row.status != "open" and settlement_rows.read_message(conn, fixmedins_code, msgid) is None:
            raise VisitRefused(f"就诊状态为 {row.status}, 不能结算")
        return _command(msgid, fixmedins_code, row, options, _active(fees))

    def close(conn: Connection, reply: StoredReply) -> None:
        # A visit settles once: a concurrent settlement of it under another msgid, or a declared
        # total that differs, undoes this one entirely.
        _check_total(options, reply.body["setlinfo"])
        if not visit_rows.close_visit(conn, mdtrt_id):
            raise VisitRefused(f"就诊 {mdtrt_id} 已结算或已撤销, 不能结算")

    return service.settle_with(build, then=close)


def _not_an_admission(db: Engine, setl_id: str) -> None:
    """Inpatient settlements are reversed newest first through 2305, which keeps the admission consistent."""

    def work(conn: Connection) -> Any:
        settlement = repo.get_settlement(conn, setl_id)
        if settlement is None or settlement.mdtrt_id is None:
            return None
        return conn.execute(select(visits.c.med_type).where(visits.c.mdtrt_id == settlement.mdtrt_id)).scalar()

    med_type = transact(db, work, readonly=True)
    if med_type is not None and is_inpatient(str(med_type)):
        raise VisitRefused(f"结算 {setl_id} 属于住院, 请使用 2305 撤销住院结算")


def reverse(
    db: Engine, service: SettlementService, *, setl_id: str, msgid: str, fixmedins_code: str, mdtrt_id: str | None
) -> StoredReply:
    """2208: reverse an outpatient settlement; the service reopens the settlement's own visit, and a
    ``mdtrt_id`` naming another visit is refused."""
    _not_an_admission(db, setl_id)
    return service.reverse(setl_id, msgid, fixmedins_code, mdtrt_id=mdtrt_id)


def undo(db: Engine, service: SettlementService, *, omsgid: str, msgid: str, fixmedins_code: str) -> StoredReply:
    """2601 冲正: undo the institution's own message ``omsgid`` (an admission's settlements go through 2305)."""
    target = transact(db, lambda conn: repo.get_message(conn, fixmedins_code, omsgid), readonly=True)
    if target is not None and target.setl_id is not None:
        _not_an_admission(db, target.setl_id)
    return service.undo(omsgid, msgid, fixmedins_code)
