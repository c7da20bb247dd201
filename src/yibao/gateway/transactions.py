"""The national-interface transactions (infno) the gateway answers: sign-in, person information,
entitlement, and the outpatient visit from registration to settlement, reversal and 冲正.

Each handler reads the envelope's ``input`` (gateway/inputs.py), calls the service layer
and shapes its ``output``. Identifiers the platform hands out (``sign_no``, ``mdtrt_id``)
are derived from the institution and the sender's ``msgid``, so a retried message finds
what its first attempt made instead of making a second one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RequestError
from ..money import format_fen
from ..service import queries, registry, signins, visits
from ..service.settlement import CIVIL_SERVANT_TYPES
from .inputs import (
    Call,
    GatewayError,
    amount_fen,
    credential_of,
    date_of,
    declared_total,
    derived_id,
    optional_credential,
    payload_of,
    text_of,
)  # fmt: skip

__all__ = ["HANDLERS", "SIGN_FREE", "Call", "GatewayError", "amount_fen", "signed_in"]

#: Transactions that need no operator sign-in (9001 is the sign-in itself).
SIGN_FREE = frozenset({"9001"})
#: Fee lines one 2204 upload may carry.
MAX_UPLOAD_LINES = visits.MAX_VISIT_LINES
signed_in = signins.is_signed_in


# -- 9001 / 9002 sign-in -------------------------------------------------------------------
def sign_in(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "signIn")
    opter = str(body.get("opter") or call.envelope.get("opter") or "").strip()
    if not opter:
        raise RequestError("input.signIn.opter", "缺少必填字段 (操作员编号)")
    opter_name = str(body.get("opter_name") or call.envelope.get("opter_name") or "")
    if len(opter) > 30 or len(opter_name) > 50:
        raise RequestError("input.signIn.opter", "操作员编号至多 30 个字符, 姓名至多 50 个字符")
    sign_no = derived_id("S", call)
    now = call.clock()
    signins.sign_in(call.db, sign_no=sign_no, fixmedins_code=call.fixmedins_code, opter=opter, opter_name=opter_name,
                    now=now)  # fmt: skip
    return {"signinoutb": {"sign_time": now.strftime("%Y-%m-%d %H:%M:%S"), "sign_no": sign_no}}


def sign_out(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "signOut")
    sign_no = str(body.get("sign_no") or call.envelope.get("sign_no") or "")
    now = call.clock()
    signins.sign_out(call.db, sign_no=sign_no, fixmedins_code=call.fixmedins_code, now=now)
    return {"signoutoutb": {"sign_time": now.strftime("%Y-%m-%d %H:%M:%S")}}


# -- 1101 person information ---------------------------------------------------------------
def person_info(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    psn_no = visits.person_of(call.db, credential_of(body), call.clock())
    info = registry.person_info(call.db, psn_no)
    today = call.clock().date()
    p = info.person
    age = today.year - p.brdy.year - ((today.month, today.day) < (p.brdy.month, p.brdy.day))
    balance = info.balance_current_fen + info.balance_historical_fen
    return {
        "baseinfo": {
            "psn_no": p.psn_no, "psn_cert_type": "01", "certno": p.certno, "psn_name": p.name, "gend": p.gend,
            "naty": p.naty or "", "brdy": p.brdy.isoformat(), "age": age, "exp_content": "",
        },
        "insuinfo": [
            {
                "insutype": e.insutype, "psn_type": e.psn_type, "insuplc_admdvs": e.admdvs,
                "psn_insu_stas": "1" if e.pause_date is None or e.pause_date > today else "2",
                "psn_insu_date": e.begn_date.isoformat(),
                "paus_insu_date": e.pause_date.isoformat() if e.pause_date else "",
                "balc": format_fen(balance) if e.insutype == "310" else "0.00",
                "cvlserv_flag": "1" if e.psn_type in CIVIL_SERVANT_TYPES else "0", "emp_name": e.emp_name or "",
            }
            for e in info.enrolments
            if e.end_date is None or e.end_date >= today
        ],
        "idetinfo": [
            {"psn_idet_type": i.idet_type, "psn_type_lv": "", "memo": "", "begntime": f"{i.begn_date} 00:00:00",
             "endtime": f"{i.end_date} 23:59:59" if i.end_date else ""}
            for i in info.identities
        ],
    }  # fmt: skip


# -- 2001 entitlement ------------------------------------------------------------------------
def entitlement(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    date = date_of(body.get("begntime") or call.clock().strftime("%Y-%m-%d"), "input.data.begntime")
    reasons = call.service.entitlement_of(
        call.field("psn_no") if "psn_no" in call.data else str(body.get("psn_no") or ""),
        call.fixmedins_code, str(body.get("insutype") or ""), str(body.get("med_type") or ""), date,
    )  # fmt: skip
    return {"trtinfo": [{"trt_chk_type": r.code, "trt_chk_rslt": "0", "trt_chk_memo": r.message} for r in reasons],
            "trt_enjymnt_flag": "0" if reasons else "1"}  # fmt: skip


# -- 2201 / 2202 registration, 2203 visit info ----------------------------------------------
def register(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    cred = credential_of(body, card_sn_required=False)
    begntime = str(body.get("begntime") or call.clock().strftime("%Y-%m-%d %H:%M:%S"))
    date_of(begntime, "input.data.begntime")
    mdtrt_id = derived_id("V", call)
    ipt_otp_no = text_of(body, "ipt_otp_no", "input.data", required=False, max_len=30) or mdtrt_id
    psn_no = visits.register(
        call.db, call.service, fixmedins_code=call.fixmedins_code, mdtrt_id=mdtrt_id, cred=cred,
        insutype=text_of(body, "insutype", "input.data", required=False, max_len=6),
        med_type=text_of(body, "med_type", "input.data", required=False, max_len=6) or "11",
        begntime=begntime, ipt_otp_no=ipt_otp_no,
        claimed_psn_no=text_of(body, "psn_no", "input.data", required=False, max_len=30) or None, now=call.clock(),
    )  # fmt: skip
    return {"data": {"mdtrt_id": mdtrt_id, "psn_no": psn_no, "ipt_otp_no": ipt_otp_no}}


def _visit_ref(body: Mapping[str, Any], where: str = "input.data") -> tuple[str, str | None]:
    """(mdtrt_id, psn_no or None) an input names."""
    mdtrt_id = text_of(body, "mdtrt_id", where, max_len=30)
    return mdtrt_id, text_of(body, "psn_no", where, required=False, max_len=30) or None


def cancel_registration(call: Call) -> dict[str, Any]:
    mdtrt_id, psn_no = _visit_ref(payload_of(call.data, "data"))
    visits.cancel_registration(call.db, fixmedins_code=call.fixmedins_code, mdtrt_id=mdtrt_id, psn_no=psn_no)
    return {}


def visit_info(call: Call) -> dict[str, Any]:
    info = call.data.get("mdtrtinfo")
    if not isinstance(info, Mapping):
        raise RequestError("input.mdtrtinfo", "缺少必填字段 (就诊信息)")
    mdtrt_id, psn_no = _visit_ref(info, "input.mdtrtinfo")
    # The main diagnosis: mdtrtinfo.dise_codg, or the first of diseinfo (as 2203 carries it nationally).
    dise_codg = text_of(info, "dise_codg", "input.mdtrtinfo", required=False, max_len=30)
    diseinfo = call.data.get("diseinfo")
    if not dise_codg and isinstance(diseinfo, list) and diseinfo and isinstance(diseinfo[0], Mapping):
        dise_codg = text_of(diseinfo[0], "diag_code", "input.diseinfo[0]", required=False, max_len=30)
    visits.record_visit_info(
        call.db, fixmedins_code=call.fixmedins_code, mdtrt_id=mdtrt_id, psn_no=psn_no,
        med_type=text_of(info, "med_type", "input.mdtrtinfo", required=False, max_len=6) or None,
        dise_codg=dise_codg or None,
    )  # fmt: skip
    return {}


# -- 2204 / 2205 fee lines -------------------------------------------------------------------
def upload_fees(call: Call) -> dict[str, Any]:
    lines = call.data.get("feedetail")
    if not isinstance(lines, list) or not lines:
        raise RequestError("input.feedetail", "须为非空列表")
    if len(lines) > MAX_UPLOAD_LINES:
        raise RequestError("input.feedetail", f"一次至多上传 {MAX_UPLOAD_LINES} 条费用明细")
    for i, line in enumerate(lines):
        if not isinstance(line, Mapping):
            raise RequestError(f"input.feedetail[{i}]", "须为对象")
        text_of(line, "feedetl_sn", f"input.feedetail[{i}]", max_len=30)
    mdtrt_ids = {str(line.get("mdtrt_id") or "") for line in lines}
    if len(mdtrt_ids) != 1:
        raise RequestError("input.feedetail[].mdtrt_id", "一次上传的费用明细须属于同一次就诊")
    mdtrt_id = mdtrt_ids.pop()
    result = visits.upload_fees(call.db, call.service, msgid=call.msgid, fixmedins_code=call.fixmedins_code,
                                mdtrt_id=mdtrt_id, lines=lines, now=call.clock())  # fmt: skip
    uploaded = {str(line["feedetl_sn"]).strip() for line in lines}
    return {
        "result": [
            {**detail, "mdtrt_id": mdtrt_id}
            for detail in result.to_json(trace=False)["detlcutinfo"]
            if detail["feedetl_sn"] in uploaded
        ]
    }


def revoke_fees(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    mdtrt_id, psn_no = _visit_ref(body)
    sn = text_of(body, "feedetl_sn", "input.data", required=False, max_len=30) or "0000"  # 0000: every line
    visits.revoke_fees(call.db, fixmedins_code=call.fixmedins_code, mdtrt_id=mdtrt_id, psn_no=psn_no, feedetl_sn=sn)
    return {}


# -- 2206 / 2207 / 2208 outpatient settlement -----------------------------------------------
def _settle_options(body: Mapping[str, Any]) -> visits.SettleOptions:
    pin = str(body.get("pin") or "").strip() or None
    if pin is not None and len(pin) > 64:
        raise RequestError("input.data.pin", "过长")
    acct_used_flag = str(body.get("acct_used_flag") or "0").strip()
    if acct_used_flag not in ("0", "1"):
        raise RequestError("input.data.acct_used_flag", f"须为 0 或 1, 收到 {acct_used_flag[:10]!r}")
    return visits.SettleOptions(
        med_type=text_of(body, "med_type", "input.data", required=False, max_len=6) or None,
        acct_used_flag=acct_used_flag, pin=pin,
        declared_total_fen=declared_total(body, "input.data"),
    )  # fmt: skip


def presettle(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    mdtrt_id, psn_no = _visit_ref(body)
    out = visits.presettle(call.db, call.service, msgid=call.msgid, fixmedins_code=call.fixmedins_code,
                           mdtrt_id=mdtrt_id, psn_no=psn_no, options=_settle_options(body))  # fmt: skip
    return {"setlinfo": out["setlinfo"], "setldetail": out["setldetail"]}


def settle(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    mdtrt_id, psn_no = _visit_ref(body)
    reply = visits.settle(call.db, call.service, msgid=call.msgid, fixmedins_code=call.fixmedins_code,
                          mdtrt_id=mdtrt_id, psn_no=psn_no, options=_settle_options(body))  # fmt: skip
    return {"setlinfo": reply.body["setlinfo"], "setldetail": reply.body["setldetail"]}


def reverse(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    setl_id = text_of(body, "setl_id", "input.data", max_len=40)
    mdtrt_id = text_of(body, "mdtrt_id", "input.data", required=False, max_len=30) or None
    reply = visits.reverse(call.db, call.service, setl_id=setl_id, msgid=call.msgid,
                           fixmedins_code=call.fixmedins_code, mdtrt_id=mdtrt_id)  # fmt: skip
    return {"setlinfo": reply.body["setlinfo"], "setldetail": reply.body.get("setldetail", [])}


# -- 2601 冲正 ----------------------------------------------------------------------------------
def undo(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    omsgid = str(body.get("omsgid") or call.data.get("omsgid") or "").strip()
    if not omsgid:
        raise RequestError("input.data.omsgid", "缺少必填字段 (原发送方报文 ID)")
    if len(omsgid) > 40:
        raise RequestError("input.data.omsgid", "过长 (至多 40 个字符)")
    reply = visits.undo(call.db, call.service, omsgid=omsgid, msgid=call.msgid, fixmedins_code=call.fixmedins_code)
    oinfno = str(body.get("oinfno") or "")[:8]
    return {"data": {"omsgid": omsgid, "oinfno": oinfno, **reply.body.get("setlinfo", reply.body)}}


# -- 5206 accumulators ---------------------------------------------------------------------------
def accumulators(call: Call) -> dict[str, Any]:
    """5206: only for a person who shows a credential at the institution, or has an open visit there."""
    body = payload_of(call.data, "data")
    psn_no = str(body.get("psn_no") or "").strip()
    cum_ym = str(body.get("cum_ym") or call.clock().strftime("%Y"))
    if not (cum_ym[:4].isdigit() and cum_ym[:4].isascii()):
        raise RequestError("input.data.cum_ym", f"须以四位年份开头 (yyyy 或 yyyyMM): {cum_ym[:20]!r}")
    year = int(cum_ym[:4])
    insutype = str(body.get("insutype") or "310")
    credential = optional_credential(body)
    rows = queries.accumulators_at_institution(
        call.db, call.fixmedins_code, psn_no, credential, year, insutype, call.clock()
    )
    return {
        "cuminfo": [
            {"insutype": insutype, "year": str(year), "cum_ym": cum_ym[:6] if len(cum_ym) >= 6 else f"{year}12",
             "cum_type_code": queries.cum_type_code(str(r["key"])), "cum": r["value"], "memo": r["meaning"],
             "cum_key": r["key"]}
            for r in rows
        ]
    }  # fmt: skip


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
