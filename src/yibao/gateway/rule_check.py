"""3101: the rule check (明细审核) of a visit's fee lines, in the visit's context."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, select

from ..db.schema import visit_fees
from ..errors import RequestError
from ..service import visits as visit_service
from ..service.credentials import Credential
from ..service.settlement import SettleCommand
from ..service.uow import transact
from .inpatient import fee_lines
from .inputs import Call, payload_of, text_of

__all__ = ["HANDLERS", "rule_of"]


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
    body = payload_of(call.data, "data")
    given = call.data.get("feedetail", body.get("feedetail"))
    mdtrt_id = text_of(body, "mdtrt_id", "input.data", required=False)
    if not mdtrt_id and isinstance(given, list) and given and isinstance(given[0], Mapping):
        mdtrt_id = str(given[0].get("mdtrt_id") or "").strip()
    if not mdtrt_id:
        raise RequestError("input.data.mdtrt_id", "missing required value")
    row = transact(call.db, lambda conn: visit_service.own_visit(conn, call.fixmedins_code, mdtrt_id), readonly=True)
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


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "3101": rule_check,
}
