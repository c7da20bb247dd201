"""3201/3202: reconciliation (对账) of the calling institution's settlements, totals and details
(service/reconciliation.py compares)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RequestError
from ..service import reconciliation as statements
from ..service.reconciliation import AMOUNTS, Statement
from .inputs import Call, amount_fen, date_of, payload_of, text_of

__all__ = ["HANDLERS"]

#: Largest date range one reconciliation call may cover.
MAX_STMT_DAYS = 366
#: Rows one 3202 call may compare.
MAX_STMT_ROWS = 20_000


# -- 3201 / 3202 reconciliation -----------------------------------------------------------------
def _statement(call: Call, body: Mapping[str, Any], where: str) -> Statement:
    """The period and filters an input names."""
    begn = date_of(text_of(body, "stmt_begndate", where), f"{where}.stmt_begndate")
    end = date_of(text_of(body, "stmt_enddate", where), f"{where}.stmt_enddate")
    if end < begn:
        raise RequestError(f"{where}.stmt_enddate", "对账结束日期早于开始日期")
    if (end - begn).days >= MAX_STMT_DAYS:
        raise RequestError(f"{where}.stmt_enddate", f"一次对账最多 {MAX_STMT_DAYS} 天")
    return Statement(
        call.fixmedins_code, begn, end, setl_optins=text_of(body, "setl_optins", where, required=False),
        insutype=text_of(body, "insutype", where, required=False),
        clr_type=text_of(body, "clr_type", where, required=False),
    )  # fmt: skip


def _amounts(item: Mapping[str, Any], where: str) -> dict[str, int]:
    return {key: amount_fen(item.get(key, 0) or 0, f"{where}.{key}") for key in AMOUNTS}


def reconcile_totals(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    stmt = _statement(call, body, where)
    theirs = _amounts(body, where)
    count_text = text_of(body, "fixmedins_setl_cnt", where)
    if not (count_text.isascii() and count_text.isdigit() and len(count_text) <= 12):
        raise RequestError(f"{where}.fixmedins_setl_cnt", f"须为不超过 12 位的非负整数, 收到 {count_text[:40]}")
    info = statements.reconcile_totals(call.db, stmt, theirs=theirs, their_count=int(count_text))
    return {"stmtinfo": {"setl_optins": stmt.setl_optins, **info}}


def reconcile_details(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    stmt = _statement(call, body, where)
    given = call.data.get("detail", body.get("detail"))
    if not isinstance(given, list) or not all(isinstance(item, Mapping) for item in given):
        raise RequestError("input.detail", "须为对账明细列表 [{setl_id, medfee_sumamt, fund_pay_sumamt, acct_pay}]")
    if len(given) > MAX_STMT_ROWS:
        raise RequestError("input.detail", f"一次最多 {MAX_STMT_ROWS} 条")
    theirs: dict[str, dict[str, int]] = {}
    for i, item in enumerate(given):
        at = f"input.detail[{i}]"
        setl_id = text_of(item, "setl_id", at)
        if setl_id in theirs:
            raise RequestError(f"{at}.setl_id", f"结算 {setl_id} 重复")
        theirs[setl_id] = _amounts(item, at)
    result = statements.reconcile_details(call.db, stmt, theirs=theirs)
    return {"stmt_rslt": "1" if result else "0", "result": result}


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "3201": reconcile_totals,
    "3202": reconcile_details,
}
