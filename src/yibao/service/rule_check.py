"""The rule check (明细审核, 3101) of a visit's fee lines: which catalogue rules each line breaks, in
the context of the institution's own visit (its scheme, medical type, diagnosis and person).
Nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from .credentials import Credential
from .fee_lines import active_lines, engine_lines
from .settlement import SettleCommand, SettlementService
from .uow import transact
from .visits import own_visit

__all__ = ["rule_of", "violations"]

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


def violations(
    db: Engine, service: SettlementService, *, msgid: str, fixmedins_code: str, mdtrt_id: str,
    lines: Sequence[Mapping[str, Any]] | None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every rule the fee lines break (``lines``, or else the visit's active lines), one dict per line and rule
    as 3101 answers it (``jr_id``, ``rule_id``, ``vola_amt`` …); empty when no line breaks any."""

    def read(conn: Connection) -> tuple[Any, Sequence[Mapping[str, Any]]]:
        row = own_visit(conn, fixmedins_code, mdtrt_id)
        return row, (lines if lines is not None else active_lines(conn, mdtrt_id))

    row, checked = transact(db, read, readonly=True)
    if not checked:
        return []
    payload: dict[str, Any] = {
        "insutype": row.insutype, "med_type": row.med_type, "begntime": row.begntime, "acct_used_flag": "0",
        "mdtrt_id": mdtrt_id, "feedetail": engine_lines(checked),
    }  # fmt: skip
    if row.dise_codg:
        payload["dise_codg"] = row.dise_codg
    command = SettleCommand(msgid, fixmedins_code, Credential(row.cert_type, row.cert_no, row.card_sn), payload)
    details = service.presettle(command).to_json(trace=False)["detlcutinfo"]
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
    return result
