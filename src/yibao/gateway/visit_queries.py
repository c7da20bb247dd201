"""5201 就诊信息查询, 5202 诊断信息查询, 5205 人员慢特病用药记录查询, 5302 人员定点信息查询.

Reads the national input (node ``data``, or the fields directly under ``input``) and answers with the
national output nodes and field names; the database work is :mod:`yibao.service.visit_history`'s. 5201 and
5202 see only the calling institution's own visits. 5205 and 5302 are about the person wherever they were
treated, and answer only for a person who shows a credential at the institution (``mdtrt_cert_type``,
``mdtrt_cert_no``, ``card_sn`` in ``data``) or has an open visit there — the rule of 5206/5301/5303.
A field the platform does not hold is answered as "" (docs/gateway.md lists them).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RequestError
from ..service import visit_history as history
from ..service.credentials import Credential
from .inputs import Call, optional_credential, payload_of, text_of

__all__ = ["BIZ_APPY_TYPES", "HANDLERS", "MAX_DAYS"]

_WHERE = "input.data"
#: The longest period one 5201 or 5205 covers (days from begntime to endtime).
MAX_DAYS = 366
#: biz_appy_type (业务申请类型) codes of the national dictionary: 01 门诊慢特病登记 … 20 外检外购登记, and 99.
BIZ_APPY_TYPES = frozenset([f"{n:02d}" for n in range(1, 21)] + ["99"])
#: yyyy-MM-dd, optionally followed by HH:mm:ss (ISO date-times reach here already in this form).
_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?: [0-9]{2}:[0-9]{2}:[0-9]{2})?$")
_ID_MAX = 40


def _time_of(body: Mapping[str, Any], key: str, *, required: bool, end: bool = False) -> dt.datetime | None:
    """A date-time field; a bare date is its first second (begntime) or its last (endtime)."""
    text = text_of(body, key, _WHERE, required=required, max_len=40)
    if not text:
        return None
    try:
        if not _TIME_RE.match(text):
            raise ValueError(text)
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RequestError(f"{_WHERE}.{key}", f"不是合法日期时间 (yyyy-MM-dd HH:mm:ss): {text[:40]!r}") from None
    if end and len(text) == 10:
        value = value.replace(hour=23, minute=59, second=59)
    return value


def _period(body: Mapping[str, Any], now: dt.datetime, *, end_required: bool) -> tuple[dt.datetime, dt.datetime]:
    begin = _time_of(body, "begntime", required=True)
    end = _time_of(body, "endtime", required=end_required, end=True) or now
    assert begin is not None
    if end < begin:
        raise RequestError(f"{_WHERE}.endtime", "结束时间早于开始时间 begntime")
    if end - begin > dt.timedelta(days=MAX_DAYS):
        raise RequestError(f"{_WHERE}.endtime", f"查询时间跨度至多 {MAX_DAYS} 天")
    return begin, end


def _too_many(limit: int) -> RequestError:
    return RequestError(f"{_WHERE}.endtime", f"查询结果超过 {limit} 条, 请缩小 begntime–endtime 的时间范围")


def _person(body: Mapping[str, Any]) -> tuple[str, Credential | None]:
    """psn_no, and the credential the person shows (5205/5302): one of the two is needed."""
    credential = optional_credential(body, _WHERE)
    psn_no = text_of(body, "psn_no", _WHERE, required=credential is None, max_len=30)
    return psn_no, credential


# -- 5201 就诊信息查询 ---------------------------------------------------------------------------------------
def visit_info(call: Call) -> dict[str, Any]:
    """``mdtrtinfo``: the institution's visits of ``psn_no`` that began between ``begntime`` and ``endtime``
    (optionally of one ``med_type`` or one ``mdtrt_id``), oldest first."""
    body = payload_of(call.data, "data")
    psn_no = text_of(body, "psn_no", _WHERE, max_len=30)
    begin, end = _period(body, call.clock(), end_required=True)
    med_type = text_of(body, "med_type", _WHERE, required=False, max_len=6)
    mdtrt_id = text_of(body, "mdtrt_id", _WHERE, required=False, max_len=_ID_MAX)
    found, more = history.visits_of(
        call.db, fixmedins_code=call.fixmedins_code, psn_no=psn_no, begin=begin, end=end, med_type=med_type,
        mdtrt_id=mdtrt_id,
    )  # fmt: skip
    if more:
        raise _too_many(history.MAX_VISITS)
    return {"mdtrtinfo": [_visit_row(v) for v in found]}


def _visit_row(v: history.VisitRecord) -> dict[str, Any]:
    inpatient = v.inpatient
    return {
        "mdtrt_id": v.mdtrt_id, "psn_no": v.psn_no, "psn_cert_type": "01", "certno": v.certno,
        "psn_name": v.psn_name, "gend": v.gend, "naty": v.naty, "brdy": v.brdy.isoformat(), "age": v.age,
        "coner_name": "", "tel": "", "insutype": v.insutype, "psn_type": v.psn_type, "maf_psn_flag": "",
        "cvlserv_flag": v.cvlserv_flag, "flxempe_flag": v.flxempe_flag, "nwb_flag": "", "insu_optins": v.insu_admdvs,
        "emp_name": v.emp_name, "begntime": v.begntime, "endtime": v.endtime, "mdtrt_cert_type": v.mdtrt_cert_type,
        "med_type": v.med_type, "ars_year_ipt_flag": "", "pre_pay_flag": "", "ipt_otp_no": v.ipt_otp_no,
        "medrcdno": "", "atddr_no": "", "chfpdr_name": "", "adm_dept_codg": "", "adm_dept_name": "", "adm_bed": "",
        "dscg_maindiag_code": "", "dscg_maindiag_name": "", "dscg_dept_codg": "", "dscg_dept_name": "",
        "dscg_bed": "", "dscg_way": "", "main_cond_dscr": "", "dise_codg": v.dise_codg, "dise_name": v.dise_name,
        "oprn_oprt_code": "", "oprn_oprt_name": "", "otp_diag_info": "" if inpatient else v.dise_name,
        "inhosp_stas": ("1" if v.open else "0") if inpatient else "", "die_date": "", "ipt_days": "",
        "fpsc_no": "", "matn_type": "", "birctrl_type": "", "latechb_flag": "", "geso_val": "", "fetts": "",
        "fetus_cnt": "", "pret_flag": "", "birctrl_matn_date": "", "cop_flag": "", "opter_id": "",
        "opter_name": "", "opt_time": "", "memo": "",
    }  # fmt: skip


# -- 5202 诊断信息查询 ---------------------------------------------------------------------------------------
def diagnosis_info(call: Call) -> dict[str, Any]:
    """``diseinfo``: the diagnoses of one of the institution's visits (``mdtrt_id``, ``psn_no``)."""
    body = payload_of(call.data, "data")
    mdtrt_id = text_of(body, "mdtrt_id", _WHERE, max_len=_ID_MAX)
    psn_no = text_of(body, "psn_no", _WHERE, max_len=30)
    found = history.diagnoses_of(call.db, fixmedins_code=call.fixmedins_code, mdtrt_id=mdtrt_id, psn_no=psn_no)
    return {
        "diseinfo": [
            {"diag_info_id": d.diag_info_id, "mdtrt_id": d.mdtrt_id, "psn_no": d.psn_no,
             "inout_diag_type": d.inout_diag_type, "diag_type": d.diag_type, "maindiag_flag": d.maindiag_flag,
             "diag_srt_no": d.diag_srt_no, "diag_code": d.diag_code, "diag_name": d.diag_name, "adm_cond": "",
             "diag_dept": "", "dise_dor_no": "", "dise_dor_name": "", "diag_time": "", "opter_id": "",
             "opter_name": "", "opt_time": ""}
            for d in found
        ]
    }  # fmt: skip


# -- 5205 人员慢特病用药记录查询 ---------------------------------------------------------------------------------
def chronic_drugs(call: Call) -> dict[str, Any]:
    """``feedetail``: the drug lines of the person's chronic/special-disease settlements at any institution,
    settled between ``begntime`` and ``endtime`` (default: now), oldest first."""
    body = payload_of(call.data, "data")
    psn_no, credential = _person(body)
    now = call.clock()
    begin, end = _period(body, now, end_required=False)
    found, more = history.chronic_drug_records(
        call.db, fixmedins_code=call.fixmedins_code, psn_no=psn_no, credential=credential, now=now, begin=begin,
        end=end,
    )  # fmt: skip
    if more:
        raise _too_many(history.MAX_DRUG_LINES)
    return {"feedetail": [_drug_row(r) for r in found]}


def _drug_row(r: history.DrugRecord) -> dict[str, Any]:
    sent = r.uploaded
    return {
        "feedetl_sn": r.feedetl_sn, "rx_drord_no": sent["rx_drord_no"], "fixmedins_code": r.fixmedins_code,
        "fixmedins_name": r.fixmedins_name, "psn_no": r.psn_no, "med_type": r.med_type,
        "fee_ocur_time": sent["fee_ocur_time"], "cnt": r.cnt, "pric": r.pric,
        "chrgitm_lv": r.chrgitm_lv, "hilist_code": r.hilist_code, "hilist_name": r.hilist_name,
        "list_type": r.list_type, "med_list_codg": sent["med_list_codg"] or r.hilist_code,
        "medins_list_codg": sent["medins_list_codg"], "medins_list_name": sent["medins_list_name"],
        "med_chrgitm_type": r.med_chrgitm_type, "prodname": "", "spec": "", "dosform_name": "",
        "lmt_used_flag": r.lmt_used_flag, "hosp_prep_flag": "", "hosp_appr_flag": sent["hosp_appr_flag"],
        "tcmdrug_used_way": sent["tcmdrug_used_way"], "prodplac_type": "", "bas_medn_flag": "",
        "hi_nego_drug_flag": "", "chld_medc_flag": "", "etip_flag": sent["etip_flag"],
        "etip_hosp_code": sent["etip_hosp_code"], "dscg_tkdrug_flag": sent["dscg_tkdrug_flag"],
        "list_sp_item_flag": "", "matn_fee_flag": sent["matn_fee_flag"],
    }  # fmt: skip


# -- 5302 人员定点信息查询 -------------------------------------------------------------------------------------
def designated_info(call: Call) -> dict[str, Any]:
    """``psnfixmedin``: the person's designated institutions for ``biz_appy_type``."""
    body = payload_of(call.data, "data")
    psn_no, credential = _person(body)
    kind = text_of(body, "biz_appy_type", _WHERE, max_len=3)
    if kind not in BIZ_APPY_TYPES:
        raise RequestError(f"{_WHERE}.biz_appy_type", f"不是有效的业务申请类型 (01–20, 99): {kind!r}")
    found = history.designated_institutions(
        call.db, fixmedins_code=call.fixmedins_code, psn_no=psn_no, credential=credential, now=call.clock(),
        biz_appy_type=kind,
    )  # fmt: skip
    return {
        "psnfixmedin": [
            {"psn_no": f.psn_no, "insutype": f.insutype, "fix_srt_no": f.fix_srt_no,
             "fixmedins_code": f.fixmedins_code, "fixmedins_name": f.fixmedins_name,
             "begndate": f.begndate.isoformat(), "enddate": f.enddate.isoformat() if f.enddate else "", "memo": ""}
            for f in found
        ]
    }  # fmt: skip


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "5201": visit_info,
    "5202": diagnosis_info,
    "5205": chronic_drugs,
    "5302": designated_info,
}
