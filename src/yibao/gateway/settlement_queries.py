"""5203/5204: one of the calling institution's settlements, and its fee lines, as stored."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from ..db import repository as repo
from ..service.uow import transact
from .inputs import Call, GatewayError, payload_of, text_of

__all__ = ["HANDLERS"]


# -- 5203 settlement / 5204 its fee details --------------------------------------------------------
def _own_settlement(call: Call) -> tuple[Any, dict[str, Any], Any]:
    body = payload_of(call.data, "data")
    where = "input.data"
    setl_id = text_of(body, "setl_id", where)
    psn_no = text_of(body, "psn_no", where, required=False)
    mdtrt_id = text_of(body, "mdtrt_id", where, required=False)

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
    "5203": settlement_info,
    "5204": fee_details,
}
