"""Reconciliation (对账, 3201/3202) of an institution's settlements: the totals and the per-settlement
amounts the institution declares for a period, compared with what the platform stored.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from ..db import repository as repo
from ..money import format_fen
from .uow import transact

__all__ = ["AMOUNTS", "Statement", "reconcile_details", "reconcile_totals"]

#: The amounts compared, per settlement and in total (fen).
AMOUNTS = ("medfee_sumamt", "fund_pay_sumamt", "acct_pay")


@dataclass(frozen=True)
class Statement:
    """Which of the institution's settlements and reversals are reconciled: settled between ``begn`` and ``end``
    (both days included), optionally only of one insuring region (``setl_optins``), scheme or clearing type."""

    fixmedins_code: str
    begn: dt.date
    end: dt.date
    setl_optins: str = ""
    insutype: str = ""
    clr_type: str = ""


def _ours(db: Engine, stmt: Statement) -> list[Any]:
    """The statement's settlement and reversal rows."""
    start = dt.datetime.combine(stmt.begn, dt.time())
    until = dt.datetime.combine(stmt.end + dt.timedelta(days=1), dt.time())

    def work(conn: Connection) -> list[Any]:
        out = []
        for row in repo.settlements_between(conn, stmt.fixmedins_code, start, until):
            info = json.loads(row.result_json)["setlinfo"]
            if stmt.setl_optins and str(info.get("insuplc_admdvs") or "") != stmt.setl_optins:
                continue
            if stmt.insutype and row.insutype != stmt.insutype:
                continue
            if stmt.clr_type and str(info.get("clr_type") or "") != stmt.clr_type:
                continue
            out.append(row)
        return out

    return transact(db, work, readonly=True)


def reconcile_totals(db: Engine, stmt: Statement, *, theirs: Mapping[str, int], their_count: int) -> dict[str, Any]:
    """3201: the platform's totals and count against the institution's (``theirs``: fen by :data:`AMOUNTS`), as
    the ``stmtinfo`` answer's fields (``stmt_rslt`` "0" when they agree)."""
    rows = _ours(db, stmt)
    ours = {key: sum(getattr(r, key) for r in rows) for key in AMOUNTS}
    differs = [
        f"{key} 机构 {format_fen(theirs[key])} / 中心 {format_fen(ours[key])}" for key in AMOUNTS
        if theirs[key] != ours[key]
    ]  # fmt: skip
    if their_count != len(rows):
        differs.append(f"fixmedins_setl_cnt 机构 {their_count} / 中心 {len(rows)}")
    return {
        "stmt_rslt": "1" if differs else "0",
        "stmt_rslt_dscr": "对账不平: " + "; ".join(differs) if differs else "对账相符",
        **{key: format_fen(value) for key, value in ours.items()},
        "fixmedins_setl_cnt": len(rows),
    }


def reconcile_details(db: Engine, stmt: Statement, *, theirs: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    """3202: every settlement whose amounts differ, or that only one side has (``theirs``: setl_id → fen by
    :data:`AMOUNTS`), as the answer's ``result`` rows, by setl_id; empty when all agree."""
    ours = {row.setl_id: row for row in _ours(db, stmt)}
    result = []
    for setl_id in sorted(set(ours) | set(theirs)):
        row, sent = ours.get(setl_id), theirs.get(setl_id)
        mine = {key: getattr(row, key) for key in AMOUNTS} if row is not None else None
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
                f"{k} 机构 {format_fen(sent[k])} / 中心 {format_fen(mine[k])}" for k in AMOUNTS if sent[k] != mine[k]
            )
        result.append(
            {
                "setl_id": setl_id, "psn_no": row.psn_no if row is not None else "",
                "mdtrt_id": (row.mdtrt_id or "") if row is not None else "",
                "msgid": row.msgid if row is not None else "",
                "refd_setl_flag": "1" if row is not None and row.kind == "reversal" else "0", "stmt_rslt": rslt,
                "memo": memo, **{k: format_fen(mine[k]) if mine is not None else "" for k in AMOUNTS},
                **{f"fixmedins_{k}": format_fen(sent[k]) if sent is not None else "" for k in AMOUNTS},
            }
        )  # fmt: skip
    return result
