"""Inpatient transactions: admission 2401/2404, discharge 2402/2405, fee lines 2301/2302, settlement
2303/2304 (with interim settlement, 中途结算) and its reversal 2305.

No table of its own: an admission is a ``visits`` row (``status`` open = in hospital, settled =
discharged, cancelled = admission cancelled) and its fee lines are ``visit_fees`` rows. What has been
settled is derived from ``settlements``: the admission's *live* settlements are its ``kind='settle'``
rows that no reversal names; the lines each one settled are the ``feedetail`` of its stored request
(``request_json``), and it is an interim one when that request carries ``mid_setl_flag`` "1". So a
further settlement of the admission settles only the lines not yet settled, continues the visit
(``visit.continues``: no new admission counted) and is credited the deductible its earlier live
settlements bore (``visit.dedc_paid``): the per-admission deductible is charged once in all.
Reversals go newest first, so the live settlements are always the admission's earliest ones.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from ..db import repository as repo
from ..db.schema import settlements, visit_fees, visits
from ..errors import RequestError
from ..money import format_fen, parse_fen
from ..service import visits as visit_service
from ..service.credentials import Credential
from ..service.settlement import SettleCommand, is_inpatient
from ..service.uow import transact
from .inputs import Call, GatewayError, amount_fen, credential_of, date_of, derived_id, flag_of, payload_of, text_of

__all__ = ["HANDLERS", "Admission", "fee_lines", "load_admission"]

#: Fee-line fields passed on to the engine (a line must name a catalogue code: no what-if classes).
_KEEP = ("feedetl_sn", "med_list_codg", "hilist_code", "cnt", "pric", "det_item_fee_sumamt", "hosp_appr_flag",
         "medins_list_name", "hilist_name", "course_day")  # fmt: skip
#: Payload keys of an admission's settlement, as stored in its request_json (for replaying a retry).
_PAYLOAD_KEYS = ("insutype", "med_type", "begntime", "acct_used_flag", "mdtrt_id", "feedetail", "dise_codg",
                 "mid_setl_flag", "visit")  # fmt: skip
#: Writes to one admission are serialised within a process (striped locks by mdtrt_id).
_STRIPES = tuple(threading.Lock() for _ in range(64))


@contextmanager
def _serialised(mdtrt_id: str) -> Iterator[None]:
    with _STRIPES[zlib.crc32(mdtrt_id.encode()) % len(_STRIPES)]:
        yield


def fee_lines(lines: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The fee lines as the engine takes them (JSON numbers arrive as their exact text: gateway/envelope.py)."""
    return [{k: v for k, v in line.items() if k in _KEEP} for line in lines]


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
            raise GatewayError(f"住院 {self.row.mdtrt_id} 已撤销入院, 不能{action}")
        if status == "settled":
            raise GatewayError(f"住院 {self.row.mdtrt_id} 已办理出院, 不能{action}; 如需变更请先撤销出院 (2405)")
        if self.final is not None:
            raise GatewayError(
                f"住院 {self.row.mdtrt_id} 已完成出院结算 (setl_id {self.final.setl_id}), 不能{action}; "
                "如需变更请先撤销结算 (2305)"
            )


def load_admission(conn: Connection, call: Call, mdtrt_id: str, psn_no: str | None = None) -> Admission:
    """The admission ``mdtrt_id`` of the calling institution (refused if it is not an inpatient visit)."""
    if not mdtrt_id:
        raise RequestError("input.data.mdtrt_id", "missing required value")
    row = visit_service.own_visit(conn, call.fixmedins_code, mdtrt_id, psn_no or None)
    if not is_inpatient(row.med_type):
        raise GatewayError(f"就诊 {mdtrt_id} 不是住院 (医疗类别 {row.med_type}), 请使用门诊交易 (2204–2208)")
    rows = conn.execute(
        select(settlements)
        .where(settlements.c.mdtrt_id == mdtrt_id, settlements.c.fixmedins_code == call.fixmedins_code)
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
    texts = conn.execute(
        select(visit_fees.c.line_json)
        .where(visit_fees.c.mdtrt_id == mdtrt_id, visit_fees.c.status == "active")
        .order_by(visit_fees.c.uploaded_at, visit_fees.c.feedetl_sn)
    ).scalars()
    lines = tuple(json.loads(text) for text in texts)
    return Admission(row, live, settled, dedc, final, lines)


def _read(call: Call, mdtrt_id: str, psn_no: str | None = None) -> Admission:
    return transact(call.db, lambda conn: load_admission(conn, call, mdtrt_id, psn_no), readonly=True)


def _command(call: Call, row: Any, body: Mapping[str, Any], payload: Mapping[str, Any]) -> SettleCommand:
    pin = str(body.get("pin") or "").strip() or None
    return SettleCommand(
        call.msgid, call.fixmedins_code, Credential(row.cert_type, row.cert_no, row.card_sn, pin), dict(payload)
    )


def admission_command(
    call: Call, adm: Admission, body: Mapping[str, Any], lines: list[Mapping[str, Any]], mid_setl_flag: str = "0"
) -> SettleCommand:
    """A settlement (or pre-settlement) of ``lines`` as the admission's next settlement."""
    row = adm.row
    payload: dict[str, Any] = {
        "insutype": row.insutype, "med_type": row.med_type, "begntime": row.begntime,
        "acct_used_flag": flag_of(body, "acct_used_flag", "input.data"), "mdtrt_id": row.mdtrt_id,
        "feedetail": fee_lines(lines),
    }  # fmt: skip
    if row.dise_codg:
        payload["dise_codg"] = row.dise_codg
    payload.update(adm.extra(mid_setl_flag))
    return _command(call, row, body, payload)


def _check_declared(body: Mapping[str, Any], lines: list[Mapping[str, Any]], where: str) -> None:
    """A declared ``medfee_sumamt`` must be the total of the lines about to be settled (checked before)."""
    declared = body.get("medfee_sumamt")
    if declared is None or declared == "":
        return
    total = 0
    for line in lines:
        try:
            total += parse_fen(str(line.get("det_item_fee_sumamt")))
        except ValueError:
            return  # the engine names the malformed line
    if amount_fen(declared, f"{where}.medfee_sumamt") != total:
        raise GatewayError(f"medfee_sumamt {declared} 与未结算费用合计 {format_fen(total)} 不符")


# -- 2401 admission / 2404 cancel admission -------------------------------------------------
def admit(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "mdtrtinfo")
    where = "input.mdtrtinfo"
    cred = credential_of(body, card_sn_required=False)
    psn_no = visit_service.person_of(call.db, cred, call.clock())
    if text_of(body, "psn_no", where, required=False) not in ("", psn_no):
        raise GatewayError("psn_no 与凭证不符 (不得冒名就医)")
    med_type = text_of(body, "med_type", where)
    if not is_inpatient(med_type):
        raise GatewayError(f"入院办理的医疗类别须为住院类 (21 普通住院, 28 日间手术 …), 收到 {med_type}")
    insutype = text_of(body, "insutype", where)
    begntime = text_of(body, "begntime", where, required=False) or call.clock().strftime("%Y-%m-%d %H:%M:%S")
    date = date_of(begntime, f"{where}.begntime")
    reasons = call.service.entitlement_of(psn_no, call.fixmedins_code, insutype, med_type, date)
    if reasons:
        raise GatewayError("; ".join(r.message for r in reasons))
    dise_codg = text_of(body, "dise_codg", where, required=False) or _main_diagnosis(call.data.get("diseinfo"))
    mdtrt_id = derived_id("V", call)
    ipt_otp_no = text_of(body, "ipt_no", where, required=False) or text_of(body, "ipt_otp_no", where, required=False)
    ipt_otp_no = (ipt_otp_no or mdtrt_id)[:30]
    now = call.clock()

    def work(conn: Connection) -> None:
        if conn.execute(select(visits.c.mdtrt_id).where(visits.c.mdtrt_id == mdtrt_id)).first() is not None:
            return  # a retry of this message: the admission exists
        for other in conn.execute(
            select(visits.c.mdtrt_id, visits.c.med_type).where(
                visits.c.psn_no == psn_no, visits.c.fixmedins_code == call.fixmedins_code, visits.c.status == "open"
            )
        ):
            if is_inpatient(other.med_type):
                raise GatewayError(f"参保人 {psn_no} 在本机构已有在院记录 (mdtrt_id {other.mdtrt_id}), 不能重复入院")
        conn.execute(
            insert(visits).values(
                mdtrt_id=mdtrt_id, psn_no=psn_no, fixmedins_code=call.fixmedins_code, insutype=insutype,
                med_type=med_type, begntime=begntime[:19], cert_type=cred.cert_type, cert_no=cred.number,
                card_sn=cred.card_sn, ipt_otp_no=ipt_otp_no, dise_codg=dise_codg[:20] or None, status="open",
                created_at=now,
            )
        )  # fmt: skip

    transact(call.db, work)
    return {"result": {"mdtrt_id": mdtrt_id, "psn_no": psn_no, "ipt_otp_no": ipt_otp_no}}


def _main_diagnosis(diseinfo: Any) -> str:
    if not isinstance(diseinfo, list):
        return ""
    rows = [d for d in diseinfo if isinstance(d, Mapping) and d.get("diag_code")]
    main = next((d for d in rows if str(d.get("maindiag_flag") or "") == "1"), rows[0] if rows else None)
    return str(main["diag_code"]).strip() if main is not None else ""


def cancel_admission(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    mdtrt_id = text_of(body, "mdtrt_id", "input.data")

    def work(conn: Connection) -> None:
        adm = load_admission(conn, call, mdtrt_id, text_of(body, "psn_no", "input.data", required=False))
        if adm.row.status == "cancelled":
            return  # already cancelled (a retry)
        if adm.row.status == "settled":
            raise GatewayError(f"住院 {mdtrt_id} 已办理出院, 不能撤销入院")
        if adm.live:
            ids = ", ".join(s.setl_id for s in adm.live)
            raise GatewayError(f"住院 {mdtrt_id} 有未撤销的结算 ({ids}), 不能撤销入院; 请先撤销结算 (2305)")
        if adm.lines:
            raise GatewayError(
                f"住院 {mdtrt_id} 有 {len(adm.lines)} 条未撤销的费用明细, 不能撤销入院; 请先撤销费用明细 (2302)"
            )
        conn.execute(update(visits).where(visits.c.mdtrt_id == mdtrt_id).values(status="cancelled"))

    with _serialised(mdtrt_id):
        transact(call.db, work)
    return {}


# -- 2402 discharge / 2405 cancel discharge ------------------------------------------------------
def discharge(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "dscginfo")
    where = "input.dscginfo"
    mdtrt_id = text_of(body, "mdtrt_id", where)
    endtime = text_of(body, "endtime", where, required=False)
    if endtime:
        date_of(endtime, f"{where}.endtime")

    def work(conn: Connection) -> str:
        adm = load_admission(conn, call, mdtrt_id, text_of(body, "psn_no", where, required=False))
        if adm.row.status == "settled":
            return adm.final.setl_id if adm.final is not None else ""  # already discharged (a retry)
        if adm.row.status == "cancelled":
            raise GatewayError(f"住院 {mdtrt_id} 已撤销入院, 不能办理出院")
        if adm.final is None:
            raise GatewayError(f"住院 {mdtrt_id} 尚未完成出院结算 (2304, mid_setl_flag=0), 不能办理出院")
        conn.execute(update(visits).where(visits.c.mdtrt_id == mdtrt_id).values(status="settled"))
        return str(adm.final.setl_id)

    with _serialised(mdtrt_id):
        setl_id = transact(call.db, work)
    return {"result": {"mdtrt_id": mdtrt_id, "setl_id": setl_id}}


def cancel_discharge(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    mdtrt_id = text_of(body, "mdtrt_id", "input.data")

    def work(conn: Connection) -> None:
        adm = load_admission(conn, call, mdtrt_id, text_of(body, "psn_no", "input.data", required=False))
        if adm.row.status == "open":
            raise GatewayError(f"住院 {mdtrt_id} 未办理出院, 无需撤销出院")
        if adm.row.status == "cancelled":
            raise GatewayError(f"住院 {mdtrt_id} 已撤销入院, 不能撤销出院")
        if adm.final is not None:
            raise GatewayError(
                f"住院 {mdtrt_id} 的出院结算 (setl_id {adm.final.setl_id}) 未撤销, 不能撤销出院; 请先撤销结算 (2305)"
            )
        conn.execute(update(visits).where(visits.c.mdtrt_id == mdtrt_id).values(status="open"))

    with _serialised(mdtrt_id):
        transact(call.db, work)
    return {}


# -- 2301 / 2302 fee lines -----------------------------------------------------------------------
def upload_fees(call: Call) -> dict[str, Any]:
    lines = call.data.get("feedetail")
    if not isinstance(lines, list) or not lines:
        raise RequestError("input.feedetail", "must be a non-empty list")
    sns: list[str] = []
    for i, line in enumerate(lines):
        if not isinstance(line, Mapping):
            raise RequestError(f"input.feedetail[{i}]", "must be an object")
        sn = str(line.get("feedetl_sn") or "").strip()
        if not sn or len(sn) > 30:
            raise RequestError(f"input.feedetail[{i}].feedetl_sn", "missing, or longer than 30 characters")
        sns.append(sn)
    if len(set(sns)) != len(sns):
        raise RequestError("input.feedetail[].feedetl_sn", "一次上传中费用明细流水号重复")
    mdtrt_ids = {str(line.get("mdtrt_id") or "").strip() for line in lines}
    if len(mdtrt_ids) != 1:
        raise RequestError("input.feedetail[].mdtrt_id", "all lines of one upload belong to one admission")
    mdtrt_id = mdtrt_ids.pop()
    now = call.clock()
    with _serialised(mdtrt_id):
        adm = _read(call, mdtrt_id)
        adm.require_open("上传费用明细")
        stored = _stored_lines(call, mdtrt_id)
        given: list[Mapping[str, Any]] = []
        for sn, line in zip(sns, lines, strict=True):
            status, text = stored.get(sn, ("", ""))
            if status == "revoked":
                raise GatewayError(f"费用明细流水号 {sn} 已撤销, 不能重复使用; 请使用新的流水号")
            # A line already stored (a retry) keeps its first upload.
            given.append(json.loads(text) if status == "active" else {**line, "feedetl_sn": sn})
        if len(stored) + len(given) > visit_service.MAX_VISIT_LINES:
            raise RequestError("input.feedetail", f"a visit holds at most {visit_service.MAX_VISIT_LINES} lines")
        # Split first: a line the catalogue refuses (unknown code …) is refused before anything is stored.
        result = call.service.presettle(admission_command(call, adm, {"acct_used_flag": "0"}, given))

        def work(conn: Connection) -> None:
            load_admission(conn, call, mdtrt_id).require_open("上传费用明细")
            for sn, line in zip(sns, lines, strict=True):
                if sn in stored:
                    continue
                conn.execute(
                    insert(visit_fees).values(
                        mdtrt_id=mdtrt_id, feedetl_sn=sn,
                        line_json=json.dumps({**line, "feedetl_sn": sn}, ensure_ascii=False),
                        status="active", uploaded_at=now,
                    )
                )  # fmt: skip

        transact(call.db, work)
    return {"result": [{**detail, "mdtrt_id": mdtrt_id} for detail in result.to_json(trace=False)["detlcutinfo"]]}


def _stored_lines(call: Call, mdtrt_id: str) -> dict[str, tuple[str, str]]:
    def work(conn: Connection) -> dict[str, tuple[str, str]]:
        rows = conn.execute(
            select(visit_fees.c.feedetl_sn, visit_fees.c.status, visit_fees.c.line_json).where(
                visit_fees.c.mdtrt_id == mdtrt_id
            )
        )
        return {r.feedetl_sn: (r.status, r.line_json) for r in rows}

    return transact(call.db, work, readonly=True)


def revoke_fees(call: Call) -> dict[str, Any]:
    raw = call.data.get("data", call.data)
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(item, Mapping) for item in items):
        raise RequestError("input.data", "须为对象或对象列表 {feedetl_sn, mdtrt_id, psn_no}")
    mdtrt_ids = {str(item.get("mdtrt_id") or "").strip() for item in items}
    if len(mdtrt_ids) != 1:
        raise RequestError("input.data[].mdtrt_id", "一次撤销的明细须属于同一次住院")
    mdtrt_id = mdtrt_ids.pop()
    wanted = [str(item.get("feedetl_sn") or "0000").strip() for item in items]
    psn_no = str(items[0].get("psn_no") or "").strip()

    def work(conn: Connection) -> int:
        adm = load_admission(conn, call, mdtrt_id, psn_no)
        adm.require_open("撤销费用明细")
        known = {
            r.feedetl_sn: r.status
            for r in conn.execute(
                select(visit_fees.c.feedetl_sn, visit_fees.c.status).where(visit_fees.c.mdtrt_id == mdtrt_id)
            )
        }
        targets: set[str] = set()
        for sn in wanted:
            if sn == "0000":  # every line not yet settled
                targets.update(str(line["feedetl_sn"]) for line in adm.pending)
                continue
            if sn not in known:
                raise GatewayError(f"费用明细 {sn} 不存在")
            if sn in adm.settled:
                raise GatewayError(f"费用明细 {sn} 已结算 (setl_id {adm.settled[sn]}), 不能撤销; 请先撤销结算 (2305)")
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
        transact(call.db, work)
    return {}


# -- 2303 / 2304 settlement, 2305 reversal ----------------------------------------------------------
def presettle(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    adm = _read(call, text_of(body, "mdtrt_id", where), text_of(body, "psn_no", where, required=False))
    adm.require_open("预结算")
    pending = adm.pending
    if not pending:
        raise GatewayError(f"住院 {adm.row.mdtrt_id} 没有未结算的费用明细")
    mid = flag_of(body, "mid_setl_flag", where)
    _check_declared(body, pending, where)
    out = call.service.presettle(admission_command(call, adm, body, pending, mid)).to_json(trace=False)
    return {"setlinfo": out["setlinfo"], "setldetail": out["setldetail"]}


def settle(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    mdtrt_id = text_of(body, "mdtrt_id", where)
    psn_no = text_of(body, "psn_no", where, required=False)
    mid = flag_of(body, "mid_setl_flag", where)
    with _serialised(mdtrt_id):
        command = transact(call.db, lambda conn: _retried(conn, call, mdtrt_id, body, mid), readonly=True)
        if command is None:
            adm = _read(call, mdtrt_id, psn_no)
            adm.require_open("结算")
            pending = adm.pending
            if not pending:
                raise GatewayError(f"住院 {mdtrt_id} 没有未结算的费用明细, 请先上传费用 (2301)")
            _check_declared(body, pending, where)
            command = admission_command(call, adm, body, pending, mid)
        reply = call.service.settle(command)
    return {"setlinfo": reply.body["setlinfo"], "setldetail": reply.body["setldetail"]}


def _retried(conn: Connection, call: Call, mdtrt_id: str, body: Mapping[str, Any], mid: str) -> SettleCommand | None:
    """For a retry of a 2304 that settled, the command its first attempt sent (so the stored reply replays)."""
    message = repo.get_message(conn, call.fixmedins_code, call.msgid)
    if message is None or message.setl_id is None:
        return None
    done = repo.get_settlement(conn, message.setl_id)
    if done is None or done.kind != "settle" or done.mdtrt_id != mdtrt_id:
        return None  # another transaction's msgid: the settlement service refuses the reuse
    request = json.loads(done.request_json)
    payload = {key: request[key] for key in _PAYLOAD_KEYS if key in request}
    # What the retry may vary must match the first attempt, or the service refuses the msgid reuse.
    payload.update(acct_used_flag=flag_of(body, "acct_used_flag", "input.data"), mid_setl_flag=mid)
    return _command(call, visit_service.own_visit(conn, call.fixmedins_code, mdtrt_id), body, payload)


def reverse(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    setl_id = text_of(body, "setl_id", where)
    given_mdtrt = text_of(body, "mdtrt_id", where, required=False)
    psn_no = text_of(body, "psn_no", where, required=False)

    def target_of(conn: Connection) -> Any:
        if repo.get_message(conn, call.fixmedins_code, call.msgid) is not None:
            return None  # a retry: the settlement service replays (or refuses a reused msgid)
        target = repo.get_settlement(conn, setl_id)
        if target is None or target.fixmedins_code != call.fixmedins_code:
            raise GatewayError(f"结算 {setl_id} 不存在或不属于本机构")
        return target

    def check(conn: Connection, target: Any) -> None:
        if target.kind != "settle":
            raise GatewayError(f"{setl_id} 是冲销记录, 不能撤销")
        if psn_no and target.psn_no != psn_no:
            raise GatewayError("psn_no 与结算记录不符")
        if given_mdtrt and target.mdtrt_id != given_mdtrt:
            raise GatewayError(f"结算 {setl_id} 不属于住院 {given_mdtrt}")
        row = conn.execute(select(visits.c.med_type).where(visits.c.mdtrt_id == target.mdtrt_id)).first()
        if row is None or not is_inpatient(row.med_type):
            raise GatewayError(f"结算 {setl_id} 不是住院结算, 请使用对应的撤销交易 (2208 门诊, 2103 药店)")
        live = load_admission(conn, call, target.mdtrt_id).live
        if all(s.setl_id != setl_id for s in live):
            raise GatewayError(f"结算 {setl_id} 已撤销, 不能重复撤销")
        if live[-1].setl_id != setl_id:
            raise GatewayError(f"同一次住院的结算须按倒序撤销: 请先撤销最近一次结算 {live[-1].setl_id}")

    target = transact(call.db, target_of, readonly=True)
    with _serialised(target.mdtrt_id if target is not None else setl_id):
        if target is not None:
            transact(call.db, lambda conn: check(conn, target), readonly=True)
        reply = call.service.reverse(setl_id, call.msgid, call.fixmedins_code)
    return {"setlinfo": reply.body["setlinfo"], "setldetail": reply.body.get("setldetail", [])}


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "2401": admit,
    "2402": discharge,
    "2404": cancel_admission,
    "2405": cancel_discharge,
    "2301": upload_fees,
    "2302": revoke_fees,
    "2303": presettle,
    "2304": settle,
    "2305": reverse,
}
