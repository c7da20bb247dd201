"""Filings (2501–2504), the rule check of fee lines (3101), reconciliation (3201/3202) and the
settlement queries 5203/5204.

Filings are made by an institution on the person's behalf: the input names the person by a
credential (``mdtrt_cert_type``/``mdtrt_cert_no``) or the person has a visit at the calling
institution. Reconciliation and queries only ever see the calling institution's settlements.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, select

from ..db import repository as repo
from ..db.schema import filings, visit_fees, visits
from ..errors import RequestError
from ..money import format_fen
from ..service import accounts
from ..service.credentials import Credential
from ..service.settlement import SettleCommand
from ..service.uow import transact
from .inpatient import _text, amount_fen, fee_lines
from .transactions import Call, GatewayError, _credential, _date, _payload, _person_by, _visit

__all__ = ["HANDLERS", "rule_of"]

#: Largest date range one reconciliation call may cover.
MAX_STMT_DAYS = 366
#: Rows one 3202 call may compare.
MAX_STMT_ROWS = 20_000


# -- filings 2501 / 2502 (off-site, referral), 2503 / 2504 (chronic or special disease) ----------
def _filing_person(call: Call, body: Mapping[str, Any], where: str) -> str:
    """The person a filing is for: named by a credential, or with a visit at this institution."""
    psn_no = _text(body, "psn_no", where, required=False)
    if _text(body, "mdtrt_cert_type", where, required=False):
        named = _person_by(call, _credential(call, body))
        if psn_no and psn_no != named:
            raise GatewayError("psn_no 与凭证不符")
        return named
    if not psn_no:
        raise RequestError(f"{where}.psn_no", "missing required value")

    def work(conn: Connection) -> bool:
        row = conn.execute(
            select(visits.c.mdtrt_id)
            .where(
                visits.c.psn_no == psn_no,
                visits.c.fixmedins_code == call.fixmedins_code,
                visits.c.status != "cancelled",
            )
            .limit(1)
        ).first()
        return row is not None

    if not transact(call.db, work, readonly=True):
        raise GatewayError(
            f"本机构无参保人 {psn_no} 的就诊记录, 不能代办备案; 请同时提供参保人凭证 (mdtrt_cert_type, mdtrt_cert_no)"
        )
    return psn_no


def _optional_date(body: Mapping[str, Any], key: str, where: str) -> dt.date | None:
    text = _text(body, key, where, required=False)
    return _date(text, f"{where}.{key}") if text else None


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
    body = _payload(call.data, "data")
    where = "input.data"
    psn_no = _filing_person(call, body, where)
    target = _text(body, "mdtrtarea_admdvs", where, required=False) or _text(body, "mdtrtarea_admvs", where)
    kind = _text(body, "offsite_type", where, required=False) or "referral"
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
    body = _payload(call.data, "data")
    where = "input.data"
    psn_no = _filing_person(call, body, where)
    code = _text(body, "opsp_dise_code", where, required=False) or _text(body, "dise_codg", where)
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
        body = _payload(call.data, "data")
        where = "input.data"
        psn_no = _filing_person(call, body, where)
        sn = _text(body, "trt_dcla_detl_sn", where)
        if not (sn.isascii() and sn.isdigit()) or len(sn) > 18:
            raise RequestError(f"{where}.trt_dcla_detl_sn", f"不是有效的备案流水号: {sn}")
        row = transact(
            call.db, lambda conn: conn.execute(select(filings).where(filings.c.id == int(sn))).first(), readonly=True
        )
        if row is None or row.psn_no != psn_no or row.kind != kind:
            what = "异地就医备案" if kind == "offsite" else "门诊慢特病备案"
            raise GatewayError(f"参保人 {psn_no} 没有流水号为 {sn} 的{what}")
        if row.status != "active":
            raise GatewayError(f"备案 {sn} 已撤销")
        try:
            accounts.cancel_filing(call.db, filing_id=int(sn))
        except RequestError as exc:
            if exc.code == "FILING_CANCELLED":
                raise GatewayError(f"备案 {sn} 已撤销") from None
            raise
        return {"result": {"trt_dcla_detl_sn": sn, "psn_no": psn_no}}

    return cancel


# -- 3101 rule check (pre-event audit of fee lines) --------------------------------------------
#: (rule_id, rule_name) by the opening words of a split reason (engine/split.py).
_RULES = (
    ("丙类项目", "CLASS_C", "丙类 (自费) 项目"),
    ("限险种", "LMT_INSUTYPE", "限险种支付"),
    ("限医疗类别", "LMT_MED_TYPE", "限医疗类别 (如限住院)"),
    ("限支付", "LMT_COURSE_DAYS", "限支付疗程天数"),
    ("医院标记不符合", "LMT_INDICATION", "限定支付范围 (适应症)"),
)


def rule_of(reason: str) -> tuple[str, str]:
    """The rule a catalogue-restriction reason comes from: (rule_id, rule_name)."""
    for prefix, rule_id, name in _RULES:
        if reason.startswith(prefix):
            return rule_id, name
    if "性使用" in reason:
        return "LMT_GEND", "限性别使用"
    if "岁及以上" in reason:
        return "LMT_AGE_MIN", "限最低年龄"
    if "岁及以下" in reason:
        return "LMT_AGE_MAX", "限最高年龄"
    if "医疗机构使用" in reason:
        return "LMT_HOSP_LV", "限医疗机构等级"
    return "CATALOG", "目录限制"


def rule_check(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "data")
    given = call.data.get("feedetail", body.get("feedetail"))
    mdtrt_id = _text(body, "mdtrt_id", "input.data", required=False)
    if not mdtrt_id and isinstance(given, list) and given and isinstance(given[0], Mapping):
        mdtrt_id = str(given[0].get("mdtrt_id") or "").strip()
    if not mdtrt_id:
        raise RequestError("input.data.mdtrt_id", "missing required value")
    row = transact(call.db, lambda conn: _visit(conn, call, mdtrt_id), readonly=True)
    if given is not None:
        if not isinstance(given, list) or not given or not all(isinstance(line, Mapping) for line in given):
            raise RequestError("input.feedetail", "must be a non-empty list of fee lines")
        lines: list[Mapping[str, Any]] = given
    else:
        lines = transact(call.db, lambda conn: _active_lines(conn, mdtrt_id), readonly=True)
    if not lines:
        return {"result": []}
    payload: dict[str, Any] = {
        "insutype": row.insutype, "med_type": row.med_type, "begntime": row.begntime, "acct_used_flag": "0",
        "mdtrt_id": mdtrt_id, "feedetail": fee_lines(lines),
    }  # fmt: skip
    if row.dise_codg:
        payload["dise_codg"] = row.dise_codg
    command = SettleCommand(
        call.msgid, call.fixmedins_code, Credential(row.cert_type, row.cert_no, row.card_sn), payload
    )
    details = call.service.presettle(command).to_json(trace=False)["detlcutinfo"]
    result = []
    for d in details:
        reasons = [r for r in str(d.get("memo") or "").split("; ") if r] if d["fulamt_ownpay_amt"] != "0.00" else []
        found = [(*rule_of(r), r, d["fulamt_ownpay_amt"]) for r in reasons]
        if d["overlmt_amt"] != "0.00":
            cap = d.get("pric_uplmt_amt")
            found.append(("PRIC_UPLMT", "超限价", f"单价 {d['pric']} 超过限价 {cap} 元", d["overlmt_amt"]))
        for rule_id, rule_name, text, amount in found:
            result.append(
                {
                    "jr_id": f"{mdtrt_id}-{d['feedetl_sn']}-{rule_id}", "rule_id": rule_id, "rule_name": rule_name,
                    "vola_cont": f"{d['hilist_name']}: {text}", "mdtrt_id": mdtrt_id, "feedetl_sn": d["feedetl_sn"],
                    "hilist_code": d.get("hilist_code") or "", "vola_amt": amount, "vola_bhvr_type": "全自费"
                    if rule_id != "PRIC_UPLMT" else "超限价",
                }
            )  # fmt: skip
    return {"result": result}


def _active_lines(conn: Connection, mdtrt_id: str) -> list[Mapping[str, Any]]:
    texts = conn.execute(
        select(visit_fees.c.line_json)
        .where(visit_fees.c.mdtrt_id == mdtrt_id, visit_fees.c.status == "active")
        .order_by(visit_fees.c.uploaded_at, visit_fees.c.feedetl_sn)
    ).scalars()
    return [json.loads(text) for text in texts]


# -- 3201 / 3202 reconciliation -----------------------------------------------------------------
def _range(body: Mapping[str, Any], where: str) -> tuple[dt.datetime, dt.datetime]:
    begn = _date(_text(body, "stmt_begndate", where), f"{where}.stmt_begndate")
    end = _date(_text(body, "stmt_enddate", where), f"{where}.stmt_enddate")
    if end < begn:
        raise RequestError(f"{where}.stmt_enddate", "对账结束日期早于开始日期")
    if (end - begn).days >= MAX_STMT_DAYS:
        raise RequestError(f"{where}.stmt_enddate", f"一次对账最多 {MAX_STMT_DAYS} 天")
    return dt.datetime.combine(begn, dt.time()), dt.datetime.combine(end + dt.timedelta(days=1), dt.time())


def _ours(call: Call, body: Mapping[str, Any], where: str) -> list[tuple[Any, Mapping[str, Any]]]:
    """This institution's settlement and reversal rows in the range, with their stored setlinfo, filtered."""
    start, end = _range(body, where)
    optins = _text(body, "setl_optins", where, required=False)
    insutype = _text(body, "insutype", where, required=False)
    clr_type = _text(body, "clr_type", where, required=False)

    def work(conn: Connection) -> list[tuple[Any, Mapping[str, Any]]]:
        out = []
        for row in repo.settlements_between(conn, call.fixmedins_code, start, end):
            info = json.loads(row.result_json)["setlinfo"]
            if optins and str(info.get("insuplc_admdvs") or "") != optins:
                continue
            if insutype and row.insutype != insutype:
                continue
            if clr_type and str(info.get("clr_type") or "") != clr_type:
                continue
            out.append((row, info))
        return out

    return transact(call.db, work, readonly=True)


def reconcile_totals(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "data")
    where = "input.data"
    rows = _ours(call, body, where)
    ours = {
        "medfee_sumamt": sum(r.medfee_sumamt for r, _ in rows),
        "fund_pay_sumamt": sum(r.fund_pay_sumamt for r, _ in rows),
        "acct_pay": sum(r.acct_pay for r, _ in rows),
    }
    theirs = {key: amount_fen(body.get(key, 0) or 0, f"{where}.{key}") for key in ours}
    count_text = _text(body, "fixmedins_setl_cnt", where)
    if not (count_text.isascii() and count_text.isdigit() and len(count_text) <= 12):
        raise RequestError(f"{where}.fixmedins_setl_cnt", f"须为不超过 12 位的非负整数, 收到 {count_text[:40]}")
    differs = [
        f"{key} 机构 {format_fen(theirs[key])} / 中心 {format_fen(ours[key])}"
        for key in ours
        if theirs[key] != ours[key]
    ]
    if int(count_text) != len(rows):
        differs.append(f"fixmedins_setl_cnt 机构 {int(count_text)} / 中心 {len(rows)}")
    return {
        "stmtinfo": {
            "setl_optins": _text(body, "setl_optins", where, required=False),
            "stmt_rslt": "1" if differs else "0",
            "stmt_rslt_dscr": "对账不平: " + "; ".join(differs) if differs else "对账相符",
            **{key: format_fen(value) for key, value in ours.items()},
            "fixmedins_setl_cnt": len(rows),
        }
    }


def reconcile_details(call: Call) -> dict[str, Any]:
    body = _payload(call.data, "data")
    where = "input.data"
    given = call.data.get("detail", body.get("detail"))
    if not isinstance(given, list) or not all(isinstance(item, Mapping) for item in given):
        raise RequestError("input.detail", "须为对账明细列表 [{setl_id, medfee_sumamt, fund_pay_sumamt, acct_pay}]")
    if len(given) > MAX_STMT_ROWS:
        raise RequestError("input.detail", f"一次最多 {MAX_STMT_ROWS} 条")
    keys = ("medfee_sumamt", "fund_pay_sumamt", "acct_pay")
    theirs: dict[str, dict[str, int]] = {}
    for i, item in enumerate(given):
        at = f"input.detail[{i}]"
        setl_id = _text(item, "setl_id", at)
        if setl_id in theirs:
            raise RequestError(f"{at}.setl_id", f"结算 {setl_id} 重复")
        theirs[setl_id] = {key: amount_fen(item.get(key, 0) or 0, f"{at}.{key}") for key in keys}
    ours = {row.setl_id: row for row, _ in _ours(call, body, where)}
    result = []
    for setl_id in sorted(set(ours) | set(theirs)):
        row, sent = ours.get(setl_id), theirs.get(setl_id)
        mine = {key: getattr(row, key) for key in keys} if row is not None else None
        if mine == sent:
            continue
        if row is None:
            rslt, memo = "3", "机构有、中心无 (该期间本机构无此结算)"
        elif sent is None:
            rslt, memo = "2", "中心有、机构无"
        else:
            assert mine is not None
            rslt = "1"
            memo = "金额不符: " + "; ".join(
                f"{k} 机构 {format_fen(sent[k])} / 中心 {format_fen(mine[k])}" for k in keys if sent[k] != mine[k]
            )
        result.append(
            {
                "setl_id": setl_id, "psn_no": row.psn_no if row is not None else "",
                "mdtrt_id": (row.mdtrt_id or "") if row is not None else "",
                "msgid": row.msgid if row is not None else "",
                "refd_setl_flag": "1" if row is not None and row.kind == "reversal" else "0", "stmt_rslt": rslt,
                "memo": memo, **{k: format_fen(mine[k]) if mine is not None else "" for k in keys},
                **{f"fixmedins_{k}": format_fen(sent[k]) if sent is not None else "" for k in keys},
            }
        )  # fmt: skip
    return {"stmt_rslt": "1" if result else "0", "result": result}


# -- 5203 settlement / 5204 its fee details --------------------------------------------------------
def _own_settlement(call: Call) -> tuple[Any, dict[str, Any], Any]:
    body = _payload(call.data, "data")
    where = "input.data"
    setl_id = _text(body, "setl_id", where)
    psn_no = _text(body, "psn_no", where, required=False)
    mdtrt_id = _text(body, "mdtrt_id", where, required=False)

    def work(conn: Connection) -> tuple[Any, dict[str, Any], Any]:
        row = repo.get_settlement(conn, setl_id)
        if row is None or row.fixmedins_code != call.fixmedins_code:
            raise GatewayError(f"结算 {setl_id} 不存在或不属于本机构")
        if psn_no and row.psn_no != psn_no:
            raise GatewayError("psn_no 与结算记录不符")
        if mdtrt_id and row.mdtrt_id != mdtrt_id:
            raise GatewayError(f"结算 {setl_id} 不属于就诊 {mdtrt_id}")
        original = repo.get_settlement(conn, row.reverses_setl_id) if row.reverses_setl_id else row
        return row, json.loads(row.result_json), original

    return transact(call.db, work, readonly=True)


def settlement_info(call: Call) -> dict[str, Any]:
    row, body, _ = _own_settlement(call)
    info = {**body["setlinfo"], "refd_setl_flag": "1" if row.kind == "reversal" else "0"}
    return {"setlinfo": info, "setldetail": body.get("setldetail", [])}


def fee_details(call: Call) -> dict[str, Any]:
    row, _, original = _own_settlement(call)
    lines = json.loads(original.result_json).get("detlcutinfo", [])
    flag = "1" if row.kind == "reversal" else "0"
    return {
        "feedetail": [
            {**line, "setl_id": row.setl_id, "mdtrt_id": row.mdtrt_id or "", "refd_setl_flag": flag} for line in lines
        ]
    }


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "2501": file_offsite,
    "2502": _cancel("offsite"),
    "2503": file_disease,
    "2504": _cancel("disease"),
    "3101": rule_check,
    "3201": reconcile_totals,
    "3202": reconcile_details,
    "5203": settlement_info,
    "5204": fee_details,
}
