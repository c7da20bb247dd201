"""3201/3202: reconciliation (对账) of the calling institution's settlements, totals and details."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection

from ..db import repository as repo
from ..errors import RequestError
from ..money import format_fen
from ..service.uow import transact
from .inputs import Call, amount_fen, date_of, payload_of, text_of

__all__ = ["HANDLERS"]

#: Largest date range one reconciliation call may cover.
MAX_STMT_DAYS = 366
#: Rows one 3202 call may compare.
MAX_STMT_ROWS = 20_000


# -- 3201 / 3202 reconciliation -----------------------------------------------------------------
def _range(body: Mapping[str, Any], where: str) -> tuple[dt.datetime, dt.datetime]:
    begn = date_of(text_of(body, "stmt_begndate", where), f"{where}.stmt_begndate")
    end = date_of(text_of(body, "stmt_enddate", where), f"{where}.stmt_enddate")
    if end < begn:
        raise RequestError(f"{where}.stmt_enddate", "对账结束日期早于开始日期")
    if (end - begn).days >= MAX_STMT_DAYS:
        raise RequestError(f"{where}.stmt_enddate", f"一次对账最多 {MAX_STMT_DAYS} 天")
    return dt.datetime.combine(begn, dt.time()), dt.datetime.combine(end + dt.timedelta(days=1), dt.time())


def _ours(call: Call, body: Mapping[str, Any], where: str) -> list[tuple[Any, Mapping[str, Any]]]:
    """This institution's settlement and reversal rows in the range, with their stored setlinfo, filtered."""
    start, end = _range(body, where)
    optins = text_of(body, "setl_optins", where, required=False)
    insutype = text_of(body, "insutype", where, required=False)
    clr_type = text_of(body, "clr_type", where, required=False)

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
    body = payload_of(call.data, "data")
    where = "input.data"
    rows = _ours(call, body, where)
    ours = {
        "medfee_sumamt": sum(r.medfee_sumamt for r, _ in rows),
        "fund_pay_sumamt": sum(r.fund_pay_sumamt for r, _ in rows),
        "acct_pay": sum(r.acct_pay for r, _ in rows),
    }
    theirs = {key: amount_fen(body.get(key, 0) or 0, f"{where}.{key}") for key in ours}
    count_text = text_of(body, "fixmedins_setl_cnt", where)
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
            "setl_optins": text_of(body, "setl_optins", where, required=False),
            "stmt_rslt": "1" if differs else "0",
            "stmt_rslt_dscr": "对账不平: " + "; ".join(differs) if differs else "对账相符",
            **{key: format_fen(value) for key, value in ours.items()},
            "fixmedins_setl_cnt": len(rows),
        }
    }


def reconcile_details(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
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
        setl_id = text_of(item, "setl_id", at)
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


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "3201": reconcile_totals,
    "3202": reconcile_details,
}
