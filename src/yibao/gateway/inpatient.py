"""Inpatient transactions: admission 2401/2404, discharge 2402/2405, fee lines 2301/2302, settlement
2303/2304 (with interim settlement, 中途结算) and its reversal 2305.

Each handler reads the national ``input`` (gateway/inputs.py), calls service/admissions.py, which
holds the admission and its rules, and shapes the ``output``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RequestError
from ..service import admissions
from ..service.visits import SettleOptions
from .inputs import Call, credential_of, date_of, declared_total, derived_id, flag_of, payload_of, text_of

__all__ = ["HANDLERS"]


def _options(body: Mapping[str, Any], where: str) -> SettleOptions:
    return SettleOptions(
        acct_used_flag=flag_of(body, "acct_used_flag", where), pin=str(body.get("pin") or "").strip() or None,
        declared_total_fen=declared_total(body, where),
    )  # fmt: skip


def _psn_no(body: Mapping[str, Any], where: str) -> str | None:
    return text_of(body, "psn_no", where, required=False) or None


# -- 2401 admission / 2404 cancel admission -------------------------------------------------
def admit(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "mdtrtinfo")
    where = "input.mdtrtinfo"
    cred = credential_of(body, card_sn_required=False)
    med_type = text_of(body, "med_type", where)
    insutype = text_of(body, "insutype", where)
    begntime = text_of(body, "begntime", where, required=False) or call.clock().strftime("%Y-%m-%d %H:%M:%S")
    date_of(begntime, f"{where}.begntime")
    dise_codg = text_of(body, "dise_codg", where, required=False) or _main_diagnosis(call.data.get("diseinfo"))
    mdtrt_id = derived_id("V", call)
    ipt_otp_no = text_of(body, "ipt_no", where, required=False) or text_of(body, "ipt_otp_no", where, required=False)
    ipt_otp_no = (ipt_otp_no or mdtrt_id)[:30]
    psn_no = admissions.admit(
        call.db, call.service, fixmedins_code=call.fixmedins_code, mdtrt_id=mdtrt_id, cred=cred,
        claimed_psn_no=text_of(body, "psn_no", where, required=False) or None, insutype=insutype, med_type=med_type,
        begntime=begntime, dise_codg=dise_codg, ipt_otp_no=ipt_otp_no, now=call.clock(),
    )  # fmt: skip
    return {"result": {"mdtrt_id": mdtrt_id, "psn_no": psn_no, "ipt_otp_no": ipt_otp_no}}


def _main_diagnosis(diseinfo: Any) -> str:
    if not isinstance(diseinfo, list):
        return ""
    rows = [d for d in diseinfo if isinstance(d, Mapping) and d.get("diag_code")]
    main = next((d for d in rows if str(d.get("maindiag_flag") or "") == "1"), rows[0] if rows else None)
    return str(main["diag_code"]).strip() if main is not None else ""


def cancel_admission(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    admissions.cancel_admission(call.db, fixmedins_code=call.fixmedins_code, mdtrt_id=text_of(body, "mdtrt_id", where),
                                psn_no=_psn_no(body, where))  # fmt: skip
    return {}


# -- 2402 discharge / 2405 cancel discharge ------------------------------------------------------
def discharge(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "dscginfo")
    where = "input.dscginfo"
    mdtrt_id = text_of(body, "mdtrt_id", where)
    endtime = text_of(body, "endtime", where, required=False)
    if endtime:
        date_of(endtime, f"{where}.endtime")
    setl_id = admissions.discharge(call.db, fixmedins_code=call.fixmedins_code, mdtrt_id=mdtrt_id,
                                   psn_no=_psn_no(body, where))  # fmt: skip
    return {"result": {"mdtrt_id": mdtrt_id, "setl_id": setl_id}}


def cancel_discharge(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    admissions.cancel_discharge(call.db, fixmedins_code=call.fixmedins_code, mdtrt_id=text_of(body, "mdtrt_id", where),
                                psn_no=_psn_no(body, where))  # fmt: skip
    return {}


# -- 2301 / 2302 fee lines -----------------------------------------------------------------------
def upload_fees(call: Call) -> dict[str, Any]:
    lines = call.data.get("feedetail")
    if not isinstance(lines, list) or not lines:
        raise RequestError("input.feedetail", "须为非空列表")
    given: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not isinstance(line, Mapping):
            raise RequestError(f"input.feedetail[{i}]", "须为对象")
        given.append({**line, "feedetl_sn": text_of(line, "feedetl_sn", f"input.feedetail[{i}]", max_len=30)})
    if len({line["feedetl_sn"] for line in given}) != len(given):
        raise RequestError("input.feedetail[].feedetl_sn", "一次上传中费用明细流水号重复")
    mdtrt_id = _one_admission({str(line.get("mdtrt_id") or "").strip() for line in given}, "input.feedetail[]", "上传")
    result = admissions.upload_fees(call.db, call.service, msgid=call.msgid, fixmedins_code=call.fixmedins_code,
                                    mdtrt_id=mdtrt_id, lines=given, now=call.clock())  # fmt: skip
    return {"result": [{**detail, "mdtrt_id": mdtrt_id} for detail in result.to_json(trace=False)["detlcutinfo"]]}


def _one_admission(mdtrt_ids: set[str], where: str, action: str) -> str:
    """The one admission every item of an input names."""
    if len(mdtrt_ids) != 1:
        raise RequestError(f"{where}.mdtrt_id", f"一次{action}的明细须属于同一次住院")
    mdtrt_id = mdtrt_ids.pop()
    if not mdtrt_id:
        raise RequestError(f"{where}.mdtrt_id", "缺少必填字段")
    return mdtrt_id


def revoke_fees(call: Call) -> dict[str, Any]:
    raw = call.data.get("data", call.data)
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(item, Mapping) for item in items):
        raise RequestError("input.data", "须为对象或对象列表 {feedetl_sn, mdtrt_id, psn_no}")
    mdtrt_id = _one_admission({str(item.get("mdtrt_id") or "").strip() for item in items}, "input.data[]", "撤销")
    admissions.revoke_fees(
        call.db, fixmedins_code=call.fixmedins_code, mdtrt_id=mdtrt_id,
        psn_no=str(items[0].get("psn_no") or "").strip() or None,
        feedetl_sns=[str(item.get("feedetl_sn") or "0000").strip() for item in items],
    )  # fmt: skip
    return {}


# -- 2303 / 2304 settlement, 2305 reversal ----------------------------------------------------------
def presettle(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    out = admissions.presettle(
        call.db, call.service, msgid=call.msgid, fixmedins_code=call.fixmedins_code,
        mdtrt_id=text_of(body, "mdtrt_id", where), psn_no=_psn_no(body, where), options=_options(body, where),
        mid_setl_flag=flag_of(body, "mid_setl_flag", where),
    )  # fmt: skip
    return {"setlinfo": out["setlinfo"], "setldetail": out["setldetail"]}


def settle(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    reply = admissions.settle(
        call.db, call.service, msgid=call.msgid, fixmedins_code=call.fixmedins_code,
        mdtrt_id=text_of(body, "mdtrt_id", where), psn_no=_psn_no(body, where), options=_options(body, where),
        mid_setl_flag=flag_of(body, "mid_setl_flag", where),
    )  # fmt: skip
    return {"setlinfo": reply.body["setlinfo"], "setldetail": reply.body["setldetail"]}


def reverse(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    reply = admissions.reverse(
        call.db, call.service, msgid=call.msgid, fixmedins_code=call.fixmedins_code,
        setl_id=text_of(body, "setl_id", where), mdtrt_id=text_of(body, "mdtrt_id", where, required=False) or None,
        psn_no=_psn_no(body, where),
    )  # fmt: skip
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
