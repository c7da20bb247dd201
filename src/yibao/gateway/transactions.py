"""The national-interface transactions (infno) the gateway answers.

Each handler takes the call context and the envelope's ``input`` and returns the
``output``. Identifiers the platform hands out (``sign_no``, ``mdtrt_id``) are
derived from the institution and the sender's ``msgid``, so a retried message
finds what its first attempt made instead of making a second one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from .. import _json
from ..db import repository as repo
from ..db import settlement_rows, visit_rows
from ..db.schema import signins, visit_fees, visits
from ..errors import RequestError, YibaoError
from ..money import format_fen, parse_fen
from ..service import queries
from ..service.credentials import CERT_TYPES, Credential, resolve_credential
from ..service.settlement import SettleCommand, SettlementService, StoredReply, is_inpatient
from ..service.uow import transact

__all__ = ["HANDLERS", "SIGN_FREE", "Call", "GatewayError"]

#: Transactions that need no operator sign-in (9001 is the sign-in itself).
SIGN_FREE = frozenset({"9001"})
#: Fee lines one visit may hold.
MAX_VISIT_LINES = 20_000


class GatewayError(YibaoError):
    """A business refusal answered with a non-zero infcode."""

    code = "GATEWAY_REFUSED"


@dataclass(frozen=True)
class Call:
    """One envelope being answered."""

    db: Engine
    service: SettlementService
    clock: Callable[[], dt.datetime]
    infno: str
    msgid: str
    fixmedins_code: str
    envelope: Mapping[str, Any]
    data: Mapping[str, Any]

    def field(self, key: str, *, required: bool = True) -> str:
        value = self.data.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise RequestError(f"input.{key}", "missing required value")
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise RequestError(f"input.{key}", "must be a string")
        return str(value).strip()


def _outpatient_only(row: Any) -> None:
    """Admissions have their own transactions (2301–2305), which keep the per-admission rules."""
    if is_inpatient(row.med_type):
        raise GatewayError(f"就诊 {row.mdtrt_id} 是住院, 请使用住院交易 (2301/2303/2304/2305)")


def _derived_id(prefix: str, call: Call) -> str:
    digest = hashlib.sha256(f"{call.fixmedins_code}|{call.infno}|{call.msgid}".encode()).hexdigest()
    return f"{prefix}{digest[:23]}"


def amount_fen(value: Any, field: str) -> int:
    """An amount as HIS systems send it (decimal string, integer, or a JSON number's exact text) in fen;
    may be negative."""
    try:
        return parse_fen(value, allow_negative=True)
    except ValueError as exc:
        raise RequestError(field, f"不是合法金额 (最多两位小数): {str(value)[:40]}") from exc


def _payload(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """National inputs nest the business fields under ``data`` (or another key); accept both."""
    inner = data.get(key)
    return inner if isinstance(inner, Mapping) else data


# -- 9001 / 9002 sign-in -------------------------------------------------------------------
def sign_in(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "signIn")
    opter = str(body.get("opter") or call.envelope.get("opter") or "").strip()
    if not opter:
        raise RequestError("input.signIn.opter", "missing required value")
    sign_no = _derived_id("S", call)
    now = call.clock()

    def work(conn: Connection) -> None:
        if conn.execute(select(signins.c.sign_no).where(signins.c.sign_no == sign_no)).first() is None:
            conn.execute(
                insert(signins).values(
                    sign_no=sign_no, fixmedins_code=call.fixmedins_code, opter=opter,
                    opter_name=str(body.get("opter_name") or call.envelope.get("opter_name") or ""),
                    signed_in_at=now, signed_out_at=None,
                )
            )  # fmt: skip

    transact(call.db, work)
    return {"signinoutb": {"sign_time": now.strftime("%Y-%m-%d %H:%M:%S"), "sign_no": sign_no}}


def sign_out(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "signOut")
    sign_no = str(body.get("sign_no") or call.envelope.get("sign_no") or "")
    now = call.clock()

    def work(conn: Connection) -> None:
        conn.execute(
            update(signins)
            .where(signins.c.sign_no == sign_no, signins.c.fixmedins_code == call.fixmedins_code)
            .values(signed_out_at=now)
        )

    transact(call.db, work)
    return {"signoutoutb": {"sign_time": now.strftime("%Y-%m-%d %H:%M:%S")}}


def signed_in(db: Engine, sign_no: str, fixmedins_code: str) -> bool:
    row = transact(
        db, lambda conn: conn.execute(select(signins).where(signins.c.sign_no == sign_no)).first(), readonly=True
    )
    return row is not None and row.fixmedins_code == fixmedins_code and row.signed_out_at is None


# -- 1101 person information ---------------------------------------------------------------
#: A credential number (card number, e-voucher code, ID number): printable ASCII, bounded.
_CERT_NO_RE = re.compile(r"^[\x21-\x7e]{1,64}$")
_CARD_SN_RE = re.compile(r"^[\x21-\x7e]{1,32}$")


def _credential(call: Call, body: Mapping[str, Any], *, card_sn_required: bool = True) -> Credential:
    """The credential an input names. ``card_sn`` (卡识别码) is read off the card at 1101; registrations
    (2201, 2401) carry none in the national interface, and a card number then counts as an ID number does
    (its status is checked, and account payment still needs the PIN)."""
    cert_type = str(body.get("mdtrt_cert_type") or "").strip()
    if cert_type not in CERT_TYPES:
        raise RequestError("input.mdtrt_cert_type", "must be 01 (电子凭证), 02 (身份证) or 03 (社保卡)")
    number = str(body.get("mdtrt_cert_no") or "").strip()
    if not number:
        raise RequestError("input.mdtrt_cert_no", "missing required value")
    if not _CERT_NO_RE.match(number):
        raise RequestError("input.mdtrt_cert_no", "凭证号只能含可打印的半角 ASCII 字符, 至多 64 位 (全角字符不可用)")
    card_sn = str(body.get("card_sn") or "").strip() or None
    if cert_type == "03" and card_sn is None and card_sn_required:
        raise RequestError("input.card_sn", "a social security card needs its card_sn")
    if card_sn is not None and not _CARD_SN_RE.match(card_sn):
        raise RequestError("input.card_sn", "卡识别码只能含可打印的半角 ASCII 字符, 至多 32 位")
    pin = str(body.get("pin") or "").strip() or None
    if pin is not None and len(pin) > 64:
        raise RequestError("input.pin", "过长")
    return Credential(cert_type, number, card_sn, pin)


def _person_by(call: Call, cred: Credential) -> str:
    psn_no, reasons = transact(call.db, lambda conn: resolve_credential(conn, cred, call.clock()), readonly=True)
    if psn_no is None or reasons:
        raise GatewayError("; ".join(r.message for r in reasons) or "凭证无效")
    return psn_no


def person_info(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "data")
    psn_no = _person_by(call, _credential(call, body))
    from ..service import registry

    info = registry.person_info(call.db, psn_no)
    today = call.clock().date()
    p = info.person
    age = today.year - p.brdy.year - ((today.month, today.day) < (p.brdy.month, p.brdy.day))
    balance = info.balance_current_fen + info.balance_historical_fen
    return {
        "baseinfo": {
            "psn_no": p.psn_no, "psn_cert_type": "01", "certno": p.certno, "psn_name": p.name, "gend": p.gend,
            "brdy": p.brdy.isoformat(), "age": age,
        },
        "insuinfo": [
            {
                "insutype": e.insutype, "psn_type": e.psn_type, "insuplc_admdvs": e.admdvs,
                "psn_insu_stas": "1" if e.pause_date is None or e.pause_date > today else "2",
                "psn_insu_date": e.begn_date.isoformat(),
                "paus_insu_date": e.pause_date.isoformat() if e.pause_date else "",
                "balc": format_fen(balance) if e.insutype == "310" else "0.00",
            }
            for e in info.enrolments
            if e.end_date is None or e.end_date >= today
        ],
        "idetinfo": [
            {"psn_idet_type": i.idet_type, "begntime": i.begn_date.isoformat(),
             "endtime": i.end_date.isoformat() if i.end_date else ""}
            for i in info.identities
        ],
    }  # fmt: skip


# -- 2001 entitlement ------------------------------------------------------------------------
def entitlement(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "data")
    date = _date(body.get("begntime") or call.clock().strftime("%Y-%m-%d"), "input.data.begntime")
    reasons = call.service.entitlement_of(
        call.field("psn_no") if "psn_no" in call.data else str(body.get("psn_no") or ""),
        call.fixmedins_code, str(body.get("insutype") or ""), str(body.get("med_type") or ""), date,
    )  # fmt: skip
    return {"trtinfo": [{"trt_chk_type": r.code, "trt_chk_rslt": "0", "trt_chk_memo": r.message} for r in reasons],
            "trt_enjymnt_flag": "0" if reasons else "1"}  # fmt: skip


def _date(value: Any, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise RequestError(field, f"not a date: {value!r}") from None


# -- 2201 / 2202 registration, 2203 visit info ----------------------------------------------
def register(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "data")
    cred = _credential(call, body, card_sn_required=False)
    insutype = str(body.get("insutype") or "")
    begntime = str(body.get("begntime") or call.clock().strftime("%Y-%m-%d %H:%M:%S"))
    date = _date(begntime, "input.data.begntime")
    med_type = str(body.get("med_type") or "11")
    mdtrt_id = _derived_id("V", call)
    ipt_otp_no = str(body.get("ipt_otp_no") or mdtrt_id)
    now = call.clock()

    def work(conn: Connection) -> str:
        # Identify, check entitlement and open the visit in one unit of work.
        psn_no, reasons = call.service.identify_in(conn, cred, call.fixmedins_code, insutype, med_type, date)
        if psn_no is None:
            raise GatewayError("; ".join(r.message for r in reasons) or "凭证无效")
        if str(body.get("psn_no") or psn_no) != psn_no:
            raise GatewayError("psn_no 与凭证不符 (不得冒名就医)")
        if reasons:
            raise GatewayError("; ".join(r.message for r in reasons))
        visit = visit_rows.VisitRow(
            mdtrt_id, psn_no, call.fixmedins_code, insutype, med_type, begntime[:19], cred.cert_type, cred.number,
            cred.card_sn, ipt_otp_no, None, "open",
        )  # fmt: skip
        visit_rows.open_visit(conn, visit, now)
        return psn_no

    psn_no = transact(call.db, work)
    return {"data": {"mdtrt_id": mdtrt_id, "psn_no": psn_no, "ipt_otp_no": ipt_otp_no}}


def _visit(conn: Connection, call: Call, mdtrt_id: str, psn_no: str | None = None) -> Any:
    row = conn.execute(select(visits).where(visits.c.mdtrt_id == mdtrt_id)).first()
    if row is None or row.fixmedins_code != call.fixmedins_code:
        raise GatewayError(f"就诊 {mdtrt_id} 不存在或不属于本机构")
    if psn_no and row.psn_no != psn_no:
        raise GatewayError("psn_no 与就诊登记不符")
    return row


def cancel_registration(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "data")
    mdtrt_id = str(body.get("mdtrt_id") or "")

    def work(conn: Connection) -> None:
        row = _visit(conn, call, mdtrt_id, str(body.get("psn_no") or "") or None)
        if row.status == "settled":
            raise GatewayError("已结算的就诊不能撤销挂号, 请先撤销结算")
        conn.execute(update(visits).where(visits.c.mdtrt_id == mdtrt_id).values(status="cancelled"))

    transact(call.db, work)
    return {}


def visit_info(call: Call) -> dict[str, Any]:
    info = call.data.get("mdtrtinfo")
    if not isinstance(info, Mapping):
        raise RequestError("input.mdtrtinfo", "missing required value")
    mdtrt_id = str(info.get("mdtrt_id") or "")

    def work(conn: Connection) -> None:
        row = _visit(conn, call, mdtrt_id, str(info.get("psn_no") or "") or None)
        if row.status != "open":
            raise GatewayError(f"就诊状态为 {row.status}, 不能上传就诊信息")
        values: dict[str, Any] = {}
        if info.get("med_type"):
            values["med_type"] = str(info["med_type"])
        if info.get("dise_codg"):
            values["dise_codg"] = str(info["dise_codg"])
        if values:
            conn.execute(update(visits).where(visits.c.mdtrt_id == mdtrt_id).values(**values))

    transact(call.db, work)
    return {}


# -- 2204 / 2205 fee lines -------------------------------------------------------------------


def upload_fees(call: Call) -> dict[str, Any]:
    lines = call.data.get("feedetail")
    if not isinstance(lines, list) or not lines:
        raise RequestError("input.feedetail", "must be a non-empty list")
    mdtrt_ids = {str(line.get("mdtrt_id") or "") for line in lines if isinstance(line, Mapping)}
    if len(mdtrt_ids) != 1:
        raise RequestError("input.feedetail[].mdtrt_id", "all lines of one upload belong to one visit")
    mdtrt_id = mdtrt_ids.pop()
    now = call.clock()

    def work(conn: Connection) -> Any:
        row, stored = _visit_and_fees(conn, call, mdtrt_id)
        _outpatient_only(row)
        if row.status != "open":
            raise GatewayError(f"就诊状态为 {row.status}, 不能上传费用")
        fees = [_json.loads(fee.line_json) for fee in stored if fee.status == "active"]
        existing = {fee.feedetl_sn for fee in stored}
        new: list[tuple[str, str]] = []
        for i, line in enumerate(lines):
            if not isinstance(line, Mapping) or not str(line.get("feedetl_sn") or "").strip():
                raise RequestError(f"input.feedetail[{i}].feedetl_sn", "missing required value")
            sn = str(line["feedetl_sn"]).strip()
            if sn in existing:
                continue  # re-upload of the same line (a retry): keep the first
            existing.add(sn)
            fees.append(dict(line))
            new.append((sn, _json.dumps(dict(line))))
        if len(existing) > MAX_VISIT_LINES:
            raise RequestError("input.feedetail", f"a visit holds at most {MAX_VISIT_LINES} lines")
        visit_rows.add_fees(conn, mdtrt_id, new, now)
        # The per-line split, as a pre-settlement computes it (nothing is settled).
        return call.service.split_in(conn, _command(call, row, {}, fees))

    result = transact(call.db, work)
    uploaded = {str(line["feedetl_sn"]).strip() for line in lines}
    return {
        "result": [
            {**detail, "mdtrt_id": mdtrt_id}
            for detail in result.to_json(trace=False)["detlcutinfo"]
            if detail["feedetl_sn"] in uploaded
        ]
    }


def revoke_fees(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "data")
    mdtrt_id = str(body.get("mdtrt_id") or "")
    sn = str(body.get("feedetl_sn") or "0000")

    def work(conn: Connection) -> None:
        row = _visit(conn, call, mdtrt_id, str(body.get("psn_no") or "") or None)
        _outpatient_only(row)
        if row.status != "open":
            raise GatewayError(f"就诊状态为 {row.status}, 不能撤销费用")
        query = update(visit_fees).where(visit_fees.c.mdtrt_id == mdtrt_id)
        if sn != "0000":  # 0000 = every line of the visit
            query = query.where(visit_fees.c.feedetl_sn == sn)
        conn.execute(query.values(status="revoked"))

    transact(call.db, work)
    return {}


# -- 2206 / 2207 / 2208 outpatient settlement -----------------------------------------------
def _visit_and_fees(
    conn: Connection, call: Call, mdtrt_id: str, psn_no: str | None = None
) -> tuple[visit_rows.VisitRow, list[visit_rows.Fee]]:
    """The institution's own visit (checked as :func:`_visit` does) and all its fee lines: one round trip."""
    row, fees = visit_rows.read_visit_and_fees(conn, mdtrt_id)
    if row is None or row.fixmedins_code != call.fixmedins_code:
        raise GatewayError(f"就诊 {mdtrt_id} 不存在或不属于本机构")
    if psn_no and row.psn_no != psn_no:
        raise GatewayError("psn_no 与就诊登记不符")
    return row, fees


def _active(fees: list[visit_rows.Fee]) -> list[dict[str, Any]]:
    return [_json.loads(fee.line_json) for fee in fees if fee.status == "active"]


def _command(call: Call, row: Any, body: Mapping[str, Any], fees: list[dict[str, Any]]) -> SettleCommand:
    if not fees:
        raise GatewayError(f"就诊 {row.mdtrt_id} 没有已上传的费用明细")
    keep = ("feedetl_sn", "med_list_codg", "hilist_code", "cnt", "pric", "det_item_fee_sumamt", "hosp_appr_flag",
            "medins_list_name", "hilist_name", "course_day")  # fmt: skip
    feedetail = [{k: v for k, v in fee.items() if k in keep} for fee in fees]
    payload = {
        "insutype": row.insutype, "med_type": str(body.get("med_type") or row.med_type), "begntime": row.begntime,
        "acct_used_flag": str(body.get("acct_used_flag") or "0"), "mdtrt_id": row.mdtrt_id, "feedetail": feedetail,
    }  # fmt: skip
    if row.dise_codg:
        payload["dise_codg"] = row.dise_codg
    pin = str(body.get("pin") or "").strip() or None
    return SettleCommand(
        call.msgid, call.fixmedins_code, Credential(row.cert_type, row.cert_no, row.card_sn, pin), payload
    )


def _not_an_admission(call: Call, setl_id: str) -> None:
    """Inpatient settlements are reversed newest first through 2305, which keeps the admission consistent."""

    def work(conn: Connection) -> Any:
        settlement = repo.get_settlement(conn, setl_id)
        if settlement is None or settlement.mdtrt_id is None:
            return None
        return conn.execute(select(visits.c.med_type).where(visits.c.mdtrt_id == settlement.mdtrt_id)).scalar()

    med_type = transact(call.db, work, readonly=True)
    if med_type is not None and is_inpatient(str(med_type)):
        raise GatewayError(f"结算 {setl_id} 属于住院, 请使用 2305 撤销住院结算")


def _check_total(body: Mapping[str, Any], setlinfo: Mapping[str, Any]) -> None:
    declared = body.get("medfee_sumamt")
    if declared in (None, ""):
        return
    # Compared as money: 1075.3, "1075.30" and 1075.300 are the same total.
    if amount_fen(declared, "input.data.medfee_sumamt") != parse_fen(setlinfo["medfee_sumamt"]):
        raise GatewayError(f"medfee_sumamt {declared} 与已上传费用合计 {setlinfo['medfee_sumamt']} 不符")


def _settlement_body(call: Call) -> tuple[Mapping[str, Any], str, str | None]:
    body = _payload(call.data, "data")
    return body, str(body.get("mdtrt_id") or ""), str(body.get("psn_no") or "") or None


def presettle(call: Call) -> dict[str, Any]:
    body, mdtrt_id, psn_no = _settlement_body(call)

    def build(conn: Connection) -> SettleCommand:
        row, fees = _visit_and_fees(conn, call, mdtrt_id, psn_no)
        _outpatient_only(row)
        if row.status != "open":
            raise GatewayError(f"就诊状态为 {row.status}, 不能预结算")
        return _command(call, row, body, _active(fees))

    out = call.service.presettle_with(build).to_json(trace=False)
    _check_total(body, out["setlinfo"])
    return {"setlinfo": out["setlinfo"], "setldetail": out["setldetail"]}


def settle(call: Call) -> dict[str, Any]:
    body, mdtrt_id, psn_no = _settlement_body(call)

    def build(conn: Connection) -> SettleCommand:
        # The visit and its lines are read in the settlement's own unit of work.
        row, fees = _visit_and_fees(conn, call, mdtrt_id, psn_no)
        _outpatient_only(row)
        # A retry of the settling message replays; anything else on a closed visit is refused.
        if row.status != "open" and settlement_rows.read_message(conn, call.fixmedins_code, call.msgid) is None:
            raise GatewayError(f"就诊状态为 {row.status}, 不能结算")
        return _command(call, row, body, _active(fees))

    def close(conn: Connection, reply: StoredReply) -> None:
        # A visit settles once: a concurrent settlement of it under another msgid, or a declared
        # total that differs, undoes this one entirely.
        _check_total(body, reply.body["setlinfo"])
        if not visit_rows.close_visit(conn, mdtrt_id):
            raise GatewayError(f"就诊 {mdtrt_id} 已结算或已撤销, 不能结算")

    reply = call.service.settle_with(build, then=close)
    return {"setlinfo": reply.body["setlinfo"], "setldetail": reply.body["setldetail"]}


def reverse(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "data")
    setl_id = str(body.get("setl_id") or "")
    if not setl_id:
        raise RequestError("input.data.setl_id", "missing required value")
    _not_an_admission(call, setl_id)
    # The service reopens the settlement's own visit; a mdtrt_id naming another visit is refused.
    mdtrt_id = str(body.get("mdtrt_id") or "").strip() or None
    reply = call.service.reverse(setl_id, call.msgid, call.fixmedins_code, mdtrt_id=mdtrt_id)
    return {"setlinfo": reply.body["setlinfo"], "setldetail": reply.body.get("setldetail", [])}


# -- 2601 冲正 ----------------------------------------------------------------------------------
def undo(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "data")
    omsgid = str(body.get("omsgid") or call.data.get("omsgid") or "")
    if not omsgid:
        raise RequestError("input.data.omsgid", "missing required value")
    target = transact(call.db, lambda conn: repo.get_message(conn, call.fixmedins_code, omsgid), readonly=True)
    if target is not None and target.setl_id is not None:
        _not_an_admission(call, target.setl_id)
    reply = call.service.undo(omsgid, call.msgid, call.fixmedins_code)
    return {
        "data": {"omsgid": omsgid, "oinfno": str(body.get("oinfno") or ""), **reply.body.get("setlinfo", reply.body)}
    }


# -- 5206 accumulators ---------------------------------------------------------------------------
def accumulators(call: Call) -> dict[str, Any]:
    """5206: only for a person who shows a credential at the institution, or has an open visit there."""
    body = _payload(call.data, "data")
    psn_no = str(body.get("psn_no") or "").strip()
    cum_ym = str(body.get("cum_ym") or call.clock().strftime("%Y"))
    if not (cum_ym[:4].isdigit() and cum_ym[:4].isascii()):
        raise RequestError("input.data.cum_ym", f"must start with a four-digit year (YYYY or YYYYMM): {cum_ym!r}")
    year = int(cum_ym[:4])
    insutype = str(body.get("insutype") or "310")
    credential = _credential(call, body) if body.get("mdtrt_cert_type") or body.get("mdtrt_cert_no") else None
    rows = queries.accumulators_at_institution(
        call.db, call.fixmedins_code, psn_no, credential, year, insutype, call.clock()
    )
    return {
        "cuminfo": [{"cum_type_code": r["key"], "cum": r["value"], "memo": r["meaning"], "year": year} for r in rows]
    }


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "9001": sign_in,
    "9002": sign_out,
    "1101": person_info,
    "2001": entitlement,
    "2201": register,
    "2202": cancel_registration,
    "2203": visit_info,
    "2204": upload_fees,
    "2205": revoke_fees,
    "2206": presettle,
    "2207": settle,
    "2208": reverse,
    "2601": undo,
    "5206": accumulators,
}
