"""An institution's settlements as stored (5203/5204): a settlement or reversal's setlinfo and fund
details, and the fee lines it settled (a reversal's are its original's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from ..db import repository as repo
from ..errors import YibaoError
from .uow import transact

__all__ = ["SettlementRecord", "SettlementRecordRefused", "own_settlement"]


class SettlementRecordRefused(YibaoError):
    """The settlement is not the institution's (or not the person's or visit's named)."""

    code = "SETTLEMENT_REFUSED"


@dataclass(frozen=True)
class SettlementRecord:
    """A stored settlement (or reversal) as its reply gave it."""

    setl_id: str
    mdtrt_id: str
    reversal: bool
    setlinfo: dict[str, Any]
    setldetail: list[dict[str, Any]]
    lines: list[dict[str, Any]]  # the per-line split (detlcutinfo) of the settlement, or of the one it reverses


def own_settlement(
    db: Engine, *, fixmedins_code: str, setl_id: str, psn_no: str | None = None, mdtrt_id: str | None = None
) -> SettlementRecord:
    """The institution's settlement ``setl_id``; refused when it is another institution's, or when a ``psn_no`` or
    ``mdtrt_id`` given is not its own."""

    def work(conn: Connection) -> SettlementRecord:
        row = repo.get_settlement(conn, setl_id)
        if row is None or row.fixmedins_code != fixmedins_code:
            raise SettlementRecordRefused(f"结算 {setl_id} 不存在或不属于本机构")
        if psn_no and row.psn_no != psn_no:
            raise SettlementRecordRefused("psn_no 与结算记录不符")
        if mdtrt_id and row.mdtrt_id != mdtrt_id:
            raise SettlementRecordRefused(f"结算 {setl_id} 不属于就诊 {mdtrt_id}")
        original = repo.get_settlement(conn, row.reverses_setl_id) if row.reverses_setl_id else row
        assert original is not None, "a reversal names a stored settlement"
        body = json.loads(row.result_json)
        return SettlementRecord(
            str(row.setl_id), row.mdtrt_id or "", row.kind == "reversal", body["setlinfo"], body.get("setldetail", []),
            json.loads(original.result_json).get("detlcutinfo", []),
        )  # fmt: skip

    return transact(db, work, readonly=True)
