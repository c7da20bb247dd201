"""Admissions (住院) of an institution: admission 2401/2404, discharge 2402/2405, fee lines 2301/2302,
settlement 2303/2304 (with interim settlement, 中途结算) and its reversal 2305.

No table of its own: an admission is a ``visits`` row (``status`` open = in hospital, settled =
discharged, cancelled = admission cancelled) and its fee lines are ``visit_fees`` rows. What has been
settled is derived from ``settlements``: the admission's *live* settlements are its ``kind='settle'``
rows that no reversal names; the lines each one settled are the ``feedetail`` of its stored request
(``request_json``), and it is an interim one when that request carries ``mid_setl_flag`` "1". So a
further settlement of the admission settles only the lines not yet settled, continues the visit
(``visit.continues``: no new admission counted) and is credited the deductible its earlier live
settlements bore (``visit.dedc_paid``): the per-admission deductible is charged once in all.
Reversals go newest first, so the live settlements are always the admission's earliest ones.

Every function takes the calling institution (``fixmedins_code``) and acts only on its own
admissions; refusals are :class:`~yibao.service.visits.VisitRefused`. Writes to one admission are
serialised within a process (striped locks by ``mdtrt_id``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from ..db import repository as repo
from ..db.schema import settlements, visit_fees, visits
from ..engine import SettlementResult
from ..money import format_fen, parse_fen
from .credentials import Credential
from .fee_lines import active_lines, engine_lines, total_mismatch
from .settlement import SettleCommand, SettlementService, StoredReply, is_inpatient
from .uow import transact
from .visits import MAX_VISIT_LINES, SettleOptions, VisitRefused, own_visit, person_of

__all__ = [
    "Admission", "admit", "cancel_admission", "cancel_discharge", "discharge", "load_admission", "presettle",
    "reverse", "revoke_fees", "settle", "upload_fees",
]  # fmt: skip

#: Payload keys of an admission's settlement, as stored in its request_json (for replaying a retry).
_PAYLOAD_KEYS = ("insutype", "med_type", "begntime", "acct_used_flag", "mdtrt_id", "feedetail", "dise_codg",
                 "mid_setl_flag", "visit")  # fmt: skip
#: Writes to one admission are serialised within a process (striped locks by mdtrt_id).
_STRIPES = tuple(threading.Lock() for _ in range(64))


@contextmanager
def _serialised(mdtrt_id: str) -> Iterator[None]:
    with _STRIPES[zlib.crc32(mdtrt_id.encode()) % len(_STRIPES)]:
        yield


@dataclass(frozen=True)
class Admission:
    """An inpatient visit with what its settlements say about it."""

    row: Any
    live: tuple[Any, ...]  # its live settlements, oldest first
    settled: Mapping[str, str]  # feedetl_sn → setl_id of the live settlement that settled it
    dedc_paid_fen: int  # deductible borne by the live settlements
    final: Any | None  # the live final (non-interim) settlement, if any
    lines: tuple[Mapping[str, Any], ...]  # active fee lines, in upload order

    @property
    def pending(self) -> list[Mapping[str, Any]]:
        """Active lines no live settlement has settled."""
        return [line for line in self.lines if str(line["feedetl_sn"]) not in self.settled]

    def extra(self, mid_setl_flag: str) -> dict[str, Any]:
        """Payload fields of the admission's next settlement."""
        out: dict[str, Any] = {"mid_setl_flag": mid_setl_flag}
        if self.live:
            out["visit"] = {"continues": True, "dedc_paid": format_fen(self.dedc_paid_fen)}
        return out

    def require_open(self, action: str) -> None:
        """The admission accepts fee lines and settlements: in hospital and not finally settled."""
        status = self.row.status
        if status == "cancelled":
            raise VisitRefused(f"住院 {self.row.mdtrt_id} 已撤销入院, 不能{action}")
        if status == "settled":
            raise VisitRefused(f"住院 {self.row.mdtrt_id} 已办理出院, 不能{action}; 如需变更请先撤销出院 (2405)")
        if self.final is not None:
            raise VisitRefused(
                f"住院 {self.row.mdtrt_id} 已完成出院结算 (setl_id {self.final.setl_id}), 不能{action}; "
                "如需变更请先撤销结算 (2305)"
            )


def load_admission(conn: Connection, fixmedins_code: str, mdtrt_id: str, psn_no: str | None = None) -> Admission:
    """The admission ``mdtrt_id`` of the institution (refused if it is not an inpatient visit)."""
    row = own_visit(conn, fixmedins_code, mdtrt_id, psn_no or None)
    if not is_inpatient(row.med_type):
        raise VisitRefused(f"就诊 {mdtrt_id} 不是住院 (医疗类别 {row.med_type}), 请使用门诊交易 (2204–2208)")
    rows = conn.execute(
        select(settlements)
        .where(settlements.c.mdtrt_id == mdtrt_id, settlements.c.fixmedins_code == fixmedins_code)
        .order_by(settlements.c.entry_id)  # journal entries are numbered in commit order
    ).all()
    reversed_ids = {r.reverses_setl_id for r in rows if r.kind == "reversal"}
    live = tuple(r for r in rows if r.kind == "settle" and r.setl_id not in reversed_ids)
    settled: dict[str, str] = {}
    dedc = 0
    final = None
    for s in live:
        request = json.loads(s.request_json)
        for line in request.get("feedetail", []):
            settled[str(line.get("feedetl_sn"))] = s.setl_id
        dedc += parse_fen(json.loads(s.result_json)["setlinfo"]["act_pay_dedc"])
        if str(request.get("mid_setl_flag") or "0") != "1":
            final = s
    return Admission(row, live, settled, dedc, final, tuple(active_lines(conn, mdtrt_id)))


def _read(db: Engine, fixmedins_code: str, mdtrt_id: str, psn_no: str | None = None) -> Admission:
    return transact(db, lambda conn: load_admission(conn, fixmedins_code, mdtrt_id, psn_no), readonly=True)


def _command(msgid: str, fixmedins_code: str, row: Any, pin: str | None, payload: Mapping[str, Any]) -> SettleCommand:
    return SettleCommand(msgid, fixmedins_code, Credential(row.cert_type, row.cert_no, row.card_sn, pin), dict(payload))


def _admission_command(
    msgid: str, fixmedins_code: str, adm: Admission, lines: Sequence[Mapping[str, Any]], options: SettleOptions,
    mid_setl_flag: str = "0",
) -> SettleCommand:  # fmt: skip
    """A settlement (or pre-settlement) of ``lines`` as the admission's next settlement."""
    row = adm.row
    payload: dict[str, Any] = {
        "insutype": row.insutype, "med_type": row.med_type, "begntime": row.begntime,
        "acct_used_flag": options.acct_used_flag, "mdtrt_id": row.mdtrt_id, "feedetail": engine_lines(lines),
    }  # fmt: skip
    if row.dise_codg:
        payload["dise_codg"] = row.dise_codg
    payload.update(adm.extra(mid_setl_flag))
    return _command(msgid, fixmedins_code, row, options.pin, payload)


def _check_declared(options: SettleOptions, lines: Sequence[Mapping[str, Any]]) -> None:
    """A declared ``medfee_sumamt`` must be the total of the lines about to be settled (checked before)."""
    mismatch = total_mismatch(options.declared_total_fen, lines)
    if mismatch is not None:
        raise VisitRefused(mismatch)


# -- 2401 admission / 2404 cancel admission -------------------------------------------------
def admit(
    db: Engine, service: SettlementService, *, fixmedins_code: str, mdtrt_id: str, cred: Credential,
    claimed_psn_no: str | None, insutype: str, med_type: str, begntime: str, dise_codg: str, ipt_otp_no: str,
    now: dt.datetime,
) -> str:  # fmt: skip
    """2401: identify the person, check entitlement and open the admission; the person's psn_no.

    A retry with the same ``mdtrt_id`` finds the admission its first attempt opened; a person already in
    hospital at the institution is refused."""
    psn_no = person_of(db, cred, now)
    if (claimed_psn_no or psn_no) != psn_no:
        raise VisitRefused("psn_no 与凭证不符 (不得冒名就医)")
    if not is_inpatient(med_type):
        raise VisitRefused(f"入院办理的医疗类别须为住院类 (21 普通住院, 28 日间手术 …), 收到 {med_type}")
    reasons = service.entitlement_of(psn_no, fixmedins_code, insutype, med_type, dt.date.fromisoformat(begntime[:10]))
    if reasons:
        raise VisitRefused("; ".join(r.message for r in reasons))

    def work(conn: Connection) -> None:
        if conn.execute(select(visits.c.mdtrt_id).where(visits.c.mdtrt_id == mdtrt_id)).first() is not None:
            return  # a retry of this message: the admission exists
        for other in conn.execute(
            select(visits.c.mdtrt_id, visits.c.med_type).where(
                visits.c.psn_no == psn_no, visits.c.fixmedins_code == fixmedins_code, visits.c.status == "open"
            )
        ):
            if is_inpatient(other.med_type):
                raise VisitRefused(f"参保人 {psn_no} 在本机构已有在院记录 (mdtrt_id {other.mdtrt_id}), 不能重复入院")
        conn.execute(
            insert(visits).values(
                mdtrt_id=mdtrt_id, psn_no=psn_no, fixmedins_code=fixmedins_code, insutype=insutype,
                med_type=med_type, begntime=begntime[:19], cert_type=cred.cert_type, cert_no=cred.number,
                card_sn=cred.card_sn, ipt_otp_no=ipt_otp_no, dise_codg=dise_codg[:20] or None, status="open",
                created_at=now,
            )
        )  # fmt: skip

    transact(db, work)
    return psn_no


def cancel_admission(db: Engine, *, fixmedins_code: str, mdtrt_id: str, psn_no: str | None) -> None:
    """2404: cancel an admission with no live settlement and no active fee line (a retry is answered again)."""

    def work(conn: Connection) -> None:
        adm = load_admission(conn, fixmedins_code, mdtrt_id, psn_no)
        if adm.row.status == "cancelled":
            return  # already cancelled (a retry)
        if adm.row.status == "settled":
            raise VisitRefused(f"住院 {mdtrt_id} 已办理出院, 不能撤销入院")
        if adm.live:
            ids = ", ".join(s.setl_id for s in adm.live)
            raise VisitRefused(f"住院 {mdtrt_id} 有未撤销的结算 ({ids}), 不能撤销入院; 请先撤销结算 (2305)")
        if adm.lines:
            raise VisitRefused(
                f"住院 {mdtrt_id} 有 {len(adm.lines)} 条未撤销的费用明细, 不能撤销入院; 请先撤销费用明细 (2302)"
            )
        conn.execute(update(visits).where(visits.c.mdtrt_id == mdtrt_id).values(status="cancelled"))

    with _serialised(mdtrt_id):
        transact(db, work)


# -- 2402 discharge / 2405 cancel discharge ------------------------------------------------------
def discharge(db: Engine, *, fixmedins_code: str, mdtrt_id: str, psn_no: str | None) -> str:
    """2402: discharge a finally settled admission; the final settlement's setl_id."""

    def work(conn: Connection) -> str:
        adm = load_admission(conn, fixmedins_code, mdtrt_id, psn_no)
        if adm.row.status == "settled":
            return adm.final.setl_id if adm.final is not None else ""  # already discharged (a retry)
        if adm.row.status == "cancelled":
            raise VisitRefused(f"住院 {mdtrt_id} 已撤销入院, 不能办理出院")
        if adm.final is None:
            raise VisitRefused(f"住院 {mdtrt_id} 尚未完成出院结算 (2304, mid_setl_flag=0), 不能办理出院")
        conn.execute(update(visits).where(visits.c.mdtrt_id == mdtrt_id).values(status="settled"))
        return str(adm.final.setl_id)

    with _serialised(mdtrt_id):
        return transact(db, work)


def cancel_discharge(db: Engine, *, fixmedins_code: str, mdtrt_id: str, psn_no: str | None) -> None:
    """2405: back in hospital, once the final settlement has been reversed."""

    def work(conn: Connection) -> None:
        adm = load_admission(conn, fixmedins_code, mdtrt_id, psn_no)
        if adm.row.status == "open":
            raise VisitRefused(f"住院 {mdtrt_id} 未办理出院, 无需撤销出院")
        if adm.row.status == "cancelled":
            raise VisitRefused(f"住院 {mdtrt_id} 已撤销入院, 不能撤销出院")
        if adm.final is not None:
            raise VisitRefused(
                f"住院 {mdtrt_id} 的出院结算 (setl_id {adm.final.setl_id}) 未撤销, 不能撤销出院; 请先撤销结算 (2305)"
            )
        conn.execute(update(visits).where(visits.c.mdtrt_id == mdtrt_id).values(status="open"))

    with _serialised(mdtrt_id):
        transact(db, work)


# -- 2301 / 2302 fee lines -----------------------------------------------------------------------
def upload_fees(
    db: Engine, service: SettlementService, *, msgid: str, fixmedins_code: str, mdtrt_id: str,
    lines: Sequence[Mapping[str, Any]], now: dt.datetime,
) -> SettlementResult:  # fmt: skip
    """2301: add fee lines (each with its own ``feedetl_sn``) to an open admission. A line already uploaded
    keeps its first upload (a retry); a revoked line's number is not reused. The lines are split first, so a
    line the catalogue refuses is refused before anything is stored; the answer is that split."""
    sns = [str(line["feedetl_sn"]) for line in lines]
    assert all(sns) and len(set(sns)) == len(sns), "every line has its own feedetl_sn"
    with _serialised(mdtrt_id):
        adm = _read(db, fixmedins_code, mdtrt_id)
        adm.require_open("上传费用明细")
        stored = transact(db, lambda conn: _stored_lines(conn, mdtrt_id), readonly=True)
        given: list[Mapping[str, Any]] = []
        for sn, line in zip(sns, lines, strict=True):
            status, text = stored.get(sn, ("", ""))
            if status == "revoked":
                raise VisitRefused(f"费用明细流水号 {sn} 已撤销, 不能重复使用; 请使用新的流水号")
            # A line already stored (a retry) keeps its first upload.
            given.append(json.loads(text) if status == "active" else line)
        if len(stored) + len(given) > MAX_VISIT_LINES:
            raise VisitRefused(f"一次住院至多 {MAX_VISIT_LINES} 条费用明细")
        result = service.presettle(_admission_command(msgid, fixmedins_code, adm, given, SettleOptions()))

        def work(conn: Connection) -> None:
            load_admission(conn, fixmedins_code, mdtrt_id).require_open("上传费用明细")
            for sn, line in zip(sns, lines, strict=True):
                if sn in stored:
                    continue
                conn.execute(
                    insert(visit_fees).values(
                        mdtrt_id=mdtrt_id, feedetl_sn=sn, line_json=json.dumps(dict(line), ensure_ascii=False),
                        status="active", uploaded_at=now,
                    )
                )  # fmt: skip

        transact(db, work)
    return result


def _stored_lines(conn: Connection, mdtrt_id: str) -> dict[str, tuple[str, str]]:
    """Every fee line the admission has had: feedetl_sn → (status, line_json)."""
    rows = conn.execute(
        select(visit_fees.c.feedetl_sn, visit_fees.c.status, visit_fees.c.line_json).where(
            visit_fees.c.mdtrt_id == mdtrt_id
        )
    )
    return {r.feedetl_sn: (r.status, r.line_json) for r in rows}


def revoke_fees(
    db: Engine, *, fixmedins_code: str, mdtrt_id: str, psn_no: str | None, feedetl_sns: Sequence[str]
) -> int:
    """2302: revoke fee lines not yet settled (``0000``: all of them); how many were revoked."""

    def work(conn: Connection) -> int:
        adm = load_admission(conn, fixmedins_code, mdtrt_id, psn_no)
        adm.require_open("撤销费用明细")
        known = {sn: status for sn, (status, _) in _stored_lines(conn, mdtrt_id).items()}
        targets: set[str] = set()
        for sn in feedetl_sns:
            if sn == "0000":  # every line not yet settled
                targets.update(str(line["feedetl_sn"]) for line in adm.pending)
                continue
            if sn not in known:
                raise VisitRefused(f"费用明细 {sn} 不存在")
            if sn in adm.settled:
                raise VisitRefused(f"费用明细 {sn} 已结算 (setl_id {adm.settled[sn]}), 不能撤销; 请先撤销结算 (2305)")
            if known[sn] == "active":
                targets.add(sn)
        for sn in sorted(targets):
            conn.execute(
                update(visit_fees)
                .where(visit_fees.c.mdtrt_id == mdtrt_id, visit_fees.c.feedetl_sn == sn)
                .values(status="revoked")
            )
        return len(targets)

    with _serialised(mdtrt_id):
        return transact(db, work)


# -- 2303 / 2304 settlement, 2305 reversal ----------------------------------------------------------
def _next_settlement(
    db: Engine, *, msgid: str, fixmedins_code: str, mdtrt_id: str, psn_no: str | None, options: SettleOptions,
    mid_setl_flag: str, action: str,
) -> SettleCommand:  # fmt: skip
    """The admission's next settlement, of its lines not yet settled: refused when the admission is not open, has
    no such line, or they do not add up to a declared total."""
    adm = _read(db, fixmedins_code, mdtrt_id, psn_no)
    adm.require_open(action)
    pending = adm.pending
    if not pending:
        raise VisitRefused(f"住院 {mdtrt_id} 没有未结算的费用明细, 请先上传费用 (2301)")
    _check_declared(options, pending)
    return _admission_command(msgid, fixmedins_code, adm, pending, options, mid_setl_flag)


def presettle(
    db: Engine, service: SettlementService, *, msgid: str, fixmedins_code: str, mdtrt_id: str, psn_no: str | None,
    options: SettleOptions, mid_setl_flag: str,
) -> dict[str, Any]:  # fmt: skip
    """2303: the admission's next settlement, computed and not committed, as the national setlinfo/setldetail
    JSON (with the person and clearing fields)."""
    command = _next_settlement(db, msgid=msgid, fixmedins_code=fixmedins_code, mdtrt_id=mdtrt_id, psn_no=psn_no,
                               options=options, mid_setl_flag=mid_setl_flag, action="预结算")  # fmt: skip
    return service.presettle_body_with(lambda _conn: command)


def settle(
    db: Engine, service: SettlementService, *, msgid: str, fixmedins_code: str, mdtrt_id: str, psn_no: str | None,
    options: SettleOptions, mid_setl_flag: str,
) -> StoredReply:  # fmt: skip
    """2304: settle the admission's lines not yet settled (an interim settlement when ``mid_setl_flag`` is "1");
    a retry of a message that settled replays its stored reply."""
    with _serialised(mdtrt_id):
        command = transact(
            db, lambda conn: _retried(conn, msgid, fixmedins_code, mdtrt_id, options, mid_setl_flag), readonly=True
        )
        if command is None:
            command = _next_settlement(
                db, msgid=msgid, fixmedins_code=fixmedins_code, mdtrt_id=mdtrt_id, psn_no=psn_no, options=options,
                mid_setl_flag=mid_setl_flag, action="结算",
            )  # fmt: skip
        return service.settle(command)


def _retried(
    conn: Connection, msgid: str, fixmedins_code: str, mdtrt_id: str, options: SettleOptions, mid_setl_flag: str
) -> SettleCommand | None:
    """For a retry of a 2304 that settled, the command its first attempt sent (so the stored reply replays)."""
    message = repo.get_message(conn, fixmedins_code, msgid)
    if message is None or message.setl_id is None:
        return None
    done = repo.get_settlement(conn, message.setl_id)
    if done is None or done.kind != "settle" or done.mdtrt_id != mdtrt_id:
        return None  # another transaction's msgid: the settlement service refuses the reuse
    request = json.loads(done.request_json)
    payload = {key: request[key] for key in _PAYLOAD_KEYS if key in request}
    # What the retry may vary must match the first attempt, or the service refuses the msgid reuse.
    payload.update(acct_used_flag=options.acct_used_flag, mid_setl_flag=mid_setl_flag)
    return _command(msgid, fixmedins_code, own_visit(conn, fixmedins_code, mdtrt_id), options.pin, payload)


def reverse(
    db: Engine, service: SettlementService, *, msgid: str, fixmedins_code: str, setl_id: str, mdtrt_id: str | None,
    psn_no: str | None,
) -> StoredReply:  # fmt: skip
    """2305: reverse the admission's latest live settlement (an admission's settlements are reversed newest
    first); a retry of the message replays."""

    def target_of(conn: Connection) -> Any:
        if repo.get_message(conn, fixmedins_code, msgid) is not None:
            return None  # a retry: the settlement service replays (or refuses a reused msgid)
        target = repo.get_settlement(conn, setl_id)
        if target is None or target.fixmedins_code != fixmedins_code:
            raise VisitRefused(f"结算 {setl_id} 不存在或不属于本机构")
        return target

    def check(conn: Connection, target: Any) -> None:
        if target.kind != "settle":
            raise VisitRefused(f"{setl_id} 是冲销记录, 不能撤销")
        if psn_no and target.psn_no != psn_no:
            raise VisitRefused("psn_no 与结算记录不符")
        if mdtrt_id and target.mdtrt_id != mdtrt_id:
            raise VisitRefused(f"结算 {setl_id} 不属于住院 {mdtrt_id}")
        row = conn.execute(select(visits.c.med_type).where(visits.c.mdtrt_id == target.mdtrt_id)).first()
        if row is None or not is_inpatient(row.med_type):
            raise VisitRefused(f"结算 {setl_id} 不是住院结算, 请使用对应的撤销交易 (2208 门诊, 2103 药店)")
        live = load_admission(conn, fixmedins_code, target.mdtrt_id).live
        if all(s.setl_id != setl_id for s in live):
            raise VisitRefused(f"结算 {setl_id} 已撤销, 不能重复撤销")
        if live[-1].setl_id != setl_id:
            raise VisitRefused(f"同一次住院的结算须按倒序撤销: 请先撤销最近一次结算 {live[-1].setl_id}")

    target = transact(db, target_of, readonly=True)
    with _serialised(target.mdtrt_id if target is not None else setl_id):
        if target is not None:
            transact(db, lambda conn: check(conn, target), readonly=True)
        return service.reverse(setl_id, msgid, fixmedins_code)
