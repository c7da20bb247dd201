"""Pharmacy purchase (定点药店购药, med_type 41): 2101 pre-settle, 2102 settle, 2103 reverse.

Each handler reads the national ``input`` (gateway/inputs.py), calls service/pharmacy.py and
shapes the ``output``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RequestError
from ..service import pharmacy
from .inputs import Call, credential_of, date_of, declared_total, derived_id, flag_of, payload_of, text_of

__all__ = ["HANDLERS", "PHARMACY_MED_TYPE"]

PHARMACY_MED_TYPE = pharmacy.PHARMACY_MED_TYPE


def _purchase(call: Call) -> pharmacy.Purchase:
    body = payload_of(call.data, "data")
    where = "input.data"
    cred = credential_of(body)
    claimed = text_of(body, "psn_no", where, required=False) or None
    med_type = text_of(body, "med_type", where, required=False) or PHARMACY_MED_TYPE
    insutype = text_of(body, "insutype", where)
    lines = call.data.get("feedetail", body.get("feedetail"))
    if not isinstance(lines, list) or not lines or not all(isinstance(line, Mapping) for line in lines):
        raise RequestError("input.feedetail", "须为非空的费用明细列表")
    for i, line in enumerate(lines):
        if not (line.get("med_list_codg") or line.get("hilist_code")):
            raise RequestError(f"input.feedetail[{i}].med_list_codg", "药店购药明细须填写医保目录编码")
    begntime = text_of(body, "begntime", where, required=False) or None
    if begntime:
        date_of(begntime, f"{where}.begntime")
    return pharmacy.Purchase(
        cred=cred, claimed_psn_no=claimed, insutype=insutype, med_type=med_type, begntime=begntime,
        acct_used_flag=flag_of(body, "acct_used_flag", where), lines=tuple(lines),
        declared_total_fen=declared_total(body, where),
    )  # fmt: skip


def presettle(call: Call) -> dict[str, Any]:
    out = pharmacy.presettle(call.db, call.service, msgid=call.msgid, fixmedins_code=call.fixmedins_code,
                             purchase=_purchase(call), now=call.clock())  # fmt: skip
    return {"setlinfo": out["setlinfo"], "setldetail": out["setldetail"], "detlcutinfo": out["detlcutinfo"]}


def settle(call: Call) -> dict[str, Any]:
    reply = pharmacy.settle(call.db, call.service, msgid=call.msgid, fixmedins_code=call.fixmedins_code,
                            mdtrt_id=derived_id("D", call), purchase=_purchase(call), now=call.clock())  # fmt: skip
    body = reply.body
    return {"setlinfo": body["setlinfo"], "setldetail": body["setldetail"], "detlcutinfo": body.get("detlcutinfo", [])}


def reverse(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    reply = pharmacy.reverse(
        call.db, call.service, msgid=call.msgid, fixmedins_code=call.fixmedins_code,
        setl_id=text_of(body, "setl_id", where), psn_no=text_of(body, "psn_no", where, required=False) or None,
    )  # fmt: skip
    return {"setlinfo": reply.body["setlinfo"], "setldetail": reply.body.get("setldetail", [])}


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "2101": presettle,
    "2102": settle,
    "2103": reverse,
}
