"""Filings made by an institution on the person's behalf: 2501/2502 off-site (异地就医备案) and their
cancellation, 2503/2504 chronic or special disease (门慢门特病种备案) and theirs.

The input names the person by a credential (``mdtrt_cert_type``/``mdtrt_cert_no``) or the person
has a visit at the calling institution.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RequestError
from ..service import accounts
from .inputs import Call, GatewayError, credential_of, date_of, payload_of, text_of

__all__ = ["HANDLERS"]


# -- filings 2501 / 2502 (off-site, referral), 2503 / 2504 (chronic or special disease) ----------
def _filing_person(call: Call, body: Mapping[str, Any], where: str) -> str:
    """The person a filing is for: named by a credential, or with a visit at this institution."""
    psn_no = text_of(body, "psn_no", where, required=False)
    cred = credential_of(body) if text_of(body, "mdtrt_cert_type", where, required=False) else None
    if cred is None and not psn_no:
        raise RequestError(f"{where}.psn_no", "缺少必填字段")
    return accounts.filer_person(call.db, fixmedins_code=call.fixmedins_code, psn_no=psn_no or None, cred=cred,
                                 now=call.clock())  # fmt: skip


def _optional_date(body: Mapping[str, Any], key: str, where: str) -> dt.date | None:
    text = text_of(body, key, where, required=False)
    return date_of(text, f"{where}.{key}") if text else None


def _filing_refused(exc: RequestError) -> GatewayError:
    """The accounts service's refusals, in the gateway's words."""
    clash = re.search(r"filing (\d+)", exc.reason)
    which = f" (trt_dcla_detl_sn {clash.group(1)})" if clash else ""
    messages = {
        "SAME_REGION": "就医地与参保地属同一统筹区, 无需办理异地就医备案",
        "FILING_OVERLAP": f"与有效备案{which}时间重叠, 请先撤销原备案",
        "REGION_UNKNOWN": "就医地医保区划不存在",
        "PERSON_UNKNOWN": "参保人不存在",
    }
    return GatewayError(messages.get(exc.code, f"[{exc.field}] {exc.reason}"))


def file_offsite(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    psn_no = _filing_person(call, body, where)
    target = text_of(body, "mdtrtarea_admdvs", where, required=False) or text_of(body, "mdtrtarea_admvs", where)
    kind = text_of(body, "offsite_type", where, required=False) or "referral"
    if kind not in accounts.OFFSITE_TYPES:
        raise RequestError(f"{where}.offsite_type", f"须为 {' / '.join(accounts.OFFSITE_TYPES)}, 收到 {kind}")
    begn = _optional_date(body, "begndate", where) or call.clock().date()
    try:
        record = accounts.file_offsite(
            call.db, call.service.engine.policies, psn_no=psn_no, offsite_type=kind, mdtrtarea_admvs=target,
            begn_date=begn, end_date=_optional_date(body, "enddate", where), clock=call.clock,
        )  # fmt: skip
    except RequestError as exc:
        raise _filing_refused(exc) from None
    return {"result": _filing_out(record)}


def file_disease(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    psn_no = _filing_person(call, body, where)
    code = text_of(body, "opsp_dise_code", where, required=False) or text_of(body, "dise_codg", where)
    begn = _optional_date(body, "begndate", where) or call.clock().date()
    try:
        record = accounts.file_disease(
            call.db, psn_no=psn_no, dise_codg=code, begn_date=begn, end_date=_optional_date(body, "enddate", where),
            clock=call.clock,
        )  # fmt: skip
    except RequestError as exc:
        raise _filing_refused(exc) from None
    return {"result": _filing_out(record)}


def _filing_out(record: accounts.FilingRecord) -> dict[str, Any]:
    return {
        "trt_dcla_detl_sn": str(record.id), "psn_no": record.psn_no, "offsite_type": record.offsite_type or "",
        "mdtrtarea_admdvs": record.mdtrtarea_admvs or "", "opsp_dise_code": record.dise_codg or "",
        "begndate": record.begn_date.isoformat(), "enddate": record.end_date.isoformat() if record.end_date else "",
    }  # fmt: skip


def _cancel(kind: str) -> Callable[[Call], dict[str, Any]]:
    def cancel(call: Call) -> dict[str, Any]:
        body = payload_of(call.data, "data")
        where = "input.data"
        psn_no = _filing_person(call, body, where)
        sn = text_of(body, "trt_dcla_detl_sn", where)
        if not (sn.isascii() and sn.isdigit()) or len(sn) > 18:
            raise RequestError(f"{where}.trt_dcla_detl_sn", f"不是有效的备案流水号: {sn}")
        accounts.cancel_filing_of(call.db, psn_no=psn_no, filing_id=int(sn), kind=kind)
        return {"result": {"trt_dcla_detl_sn": sn, "psn_no": psn_no}}

    return cancel


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "2501": file_offsite,
    "2502": _cancel("offsite"),
    "2503": file_disease,
    "2504": _cancel("disease"),
}
