"""5203/5204: one of the calling institution's settlements, and its fee lines, as stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..service.settlement_records import SettlementRecord, own_settlement
from .inputs import Call, payload_of, text_of

__all__ = ["HANDLERS"]


# -- 5203 settlement / 5204 its fee details --------------------------------------------------------
def _own_settlement(call: Call) -> SettlementRecord:
    body = payload_of(call.data, "data")
    where = "input.data"
    return own_settlement(
        call.db, fixmedins_code=call.fixmedins_code, setl_id=text_of(body, "setl_id", where),
        psn_no=text_of(body, "psn_no", where, required=False) or None,
        mdtrt_id=text_of(body, "mdtrt_id", where, required=False) or None,
    )  # fmt: skip


def _flag(record: SettlementRecord) -> str:
    return "1" if record.reversal else "0"


def settlement_info(call: Call) -> dict[str, Any]:
    record = _own_settlement(call)
    return {"setlinfo": {**record.setlinfo, "refd_setl_flag": _flag(record)}, "setldetail": record.setldetail}


def fee_details(call: Call) -> dict[str, Any]:
    record = _own_settlement(call)
    return {
        "feedetail": [
            {**line, "setl_id": record.setl_id, "mdtrt_id": record.mdtrt_id, "refd_setl_flag": _flag(record)}
            for line in record.lines
        ]
    }


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "5203": settlement_info,
    "5204": fee_details,
}
