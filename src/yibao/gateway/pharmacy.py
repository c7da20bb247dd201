"""Pharmacy purchase (定点药店购药, med_type 41): 2101 pre-settle, 2102 settle, 2103 reverse.

No registration: the credential and the fee lines come with the settlement itself. Only an
institution of kind ``pharmacy`` may call these. Every line must name a catalogue code — goods
that are not in the insurance catalogue (a smart watch, wellness products) are refused by the
catalogue as an unknown code, so the personal account can never pay for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, select

from ..db import repository as repo
from ..db.schema import visits
from ..errors import RequestError
from ..service import visits as visit_service
from ..service.settlement import SettleCommand
from ..service.uow import transact
from .inpatient import _check_declared, fee_lines
from .inputs import Call, GatewayError, credential_of, date_of, derived_id, flag_of, payload_of, text_of

__all__ = ["HANDLERS", "PHARMACY_MED_TYPE"]

PHARMACY_MED_TYPE = "41"


def _require_pharmacy(call: Call) -> None:
    row = transact(call.db, lambda conn: repo.get_institution(conn, call.fixmedins_code), readonly=True)
    if row is None or row.kind != "pharmacy":
        raise GatewayError(f"机构 {call.fixmedins_code} 不是定点零售药店, 不能办理药店购药结算 (2101–2103)")


def _stored_begntime(call: Call) -> str | None:
    """The service time the first attempt of this msgid settled with (a retry must send the same payload)."""

    def work(conn: Connection) -> str | None:
        message = repo.get_message(conn, call.fixmedins_code, call.msgid)
        if message is None or message.setl_id is None:
            return None
        done = repo.get_settlement(conn, message.setl_id)
        if done is None or done.fixmedins_code != call.fixmedins_code:
            return None
        return str(json.loads(done.request_json).get("begntime") or "") or None

    return transact(call.db, work, readonly=True)


def _purchase(call: Call, *, settle: bool) -> SettleCommand:
    _require_pharmacy(call)
    body = payload_of(call.data, "data")
    where = "input.data"
    cred = credential_of(body)
    psn_no = visit_service.person_of(call.db, cred, call.clock())
    if text_of(body, "psn_no", where, required=False) not in ("", psn_no):
        raise GatewayError("psn_no 与凭证不符 (不得冒名购药)")
    med_type = text_of(body, "med_type", where, required=False) or PHARMACY_MED_TYPE
    if med_type != PHARMACY_MED_TYPE:
        raise GatewayError(f"药店购药的医疗类别须为 41, 收到 {med_type}")
    insutype = text_of(body, "insutype", where)
    lines = call.data.get("feedetail", body.get("feedetail"))
    if not isinstance(lines, list) or not lines or not all(isinstance(line, Mapping) for line in lines):
        raise RequestError("input.feedetail", "must be a non-empty list of fee lines")
    for i, line in enumerate(lines):
        if not (line.get("med_list_codg") or line.get("hilist_code")):
            raise RequestError(f"input.feedetail[{i}].med_list_codg", "药店购药明细须填写医保目录编码")
    begntime = (settle and _stored_begntime(call)) or text_of(body, "begntime", where, required=False)
    begntime = begntime or call.clock().strftime("%Y-%m-%d %H:%M:%S")
    date_of(begntime, f"{where}.begntime")
    _check_declared(body, lines, where)
    payload: dict[str, Any] = {
        "insutype": insutype, "med_type": med_type, "begntime": begntime[:19],
        "acct_used_flag": flag_of(body, "acct_used_flag", where), "feedetail": fee_lines(lines),
    }  # fmt: skip
    if settle:
        payload["mdtrt_id"] = derived_id("D", call)
    return SettleCommand(call.msgid, call.fixmedins_code, cred, payload)


def presettle(call: Call) -> dict[str, Any]:
    out = call.service.presettle(_purchase(call, settle=False)).to_json(trace=False)
    return {"setlinfo": out["setlinfo"], "setldetail": out["setldetail"], "detlcutinfo": out["detlcutinfo"]}


def settle(call: Call) -> dict[str, Any]:
    reply = call.service.settle(_purchase(call, settle=True))
    body = reply.body
    return {"setlinfo": body["setlinfo"], "setldetail": body["setldetail"], "detlcutinfo": body.get("detlcutinfo", [])}


def reverse(call: Call) -> dict[str, Any]:
    _require_pharmacy(call)
    body = payload_of(call.data, "data")
    where = "input.data"
    setl_id = text_of(body, "setl_id", where)
    psn_no = text_of(body, "psn_no", where, required=False)

    def check(conn: Connection) -> None:
        if repo.get_message(conn, call.fixmedins_code, call.msgid) is not None:
            return  # a retry: the settlement service replays (or refuses a reused msgid)
        target = repo.get_settlement(conn, setl_id)
        if target is None or target.fixmedins_code != call.fixmedins_code:
            raise GatewayError(f"结算 {setl_id} 不存在或不属于本机构")
        if psn_no and target.psn_no != psn_no:
            raise GatewayError("psn_no 与结算记录不符")
        if target.kind != "settle":
            raise GatewayError(f"{setl_id} 是冲销记录, 不能撤销")
        registered = conn.execute(select(visits.c.mdtrt_id).where(visits.c.mdtrt_id == target.mdtrt_id)).first()
        if target.med_type != PHARMACY_MED_TYPE or registered is not None:
            raise GatewayError(f"结算 {setl_id} 不是药店购药结算")
        if repo.reversal_of(conn, setl_id) is not None:
            raise GatewayError(f"结算 {setl_id} 已撤销, 不能重复撤销")

    transact(call.db, check, readonly=True)
    reply = call.service.reverse(setl_id, call.msgid, call.fixmedins_code)
    return {"setlinfo": reply.body["setlinfo"], "setldetail": reply.body.get("setldetail", [])}


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "2101": presettle,
    "2102": settle,
    "2103": reverse,
}
