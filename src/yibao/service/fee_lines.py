"""Fee lines (费用明细) as a settlement takes them: the fields passed on to the engine, a visit's
active lines as uploaded, and the check of a total the institution declares for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, select

from ..db.schema import visit_fees
from ..money import format_fen, parse_fen

__all__ = ["ENGINE_FIELDS", "active_lines", "engine_lines", "total_mismatch"]

#: Fee-line fields passed on to the engine (a line must name a catalogue code: no what-if classes);
#: the rest of a line is kept as uploaded.
ENGINE_FIELDS = ("feedetl_sn", "med_list_codg", "hilist_code", "cnt", "pric", "det_item_fee_sumamt",
                 "hosp_appr_flag", "medins_list_name", "hilist_name", "course_day")  # fmt: skip


def engine_lines(lines: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The fee lines as the engine takes them (JSON numbers arrive as their exact text: gateway/envelope.py)."""
    return [{k: v for k, v in line.items() if k in ENGINE_FIELDS} for line in lines]


def active_lines(conn: Connection, mdtrt_id: str) -> list[dict[str, Any]]:
    """A visit's active (not revoked) fee lines as uploaded, in upload order."""
    texts = conn.execute(
        select(visit_fees.c.line_json)
        .where(visit_fees.c.mdtrt_id == mdtrt_id, visit_fees.c.status == "active")
        .order_by(visit_fees.c.uploaded_at, visit_fees.c.feedetl_sn)
    ).scalars()
    return [json.loads(text) for text in texts]


def total_mismatch(declared_fen: int | None, lines: Iterable[Mapping[str, Any]]) -> str | None:
    """Why a declared ``medfee_sumamt`` is not the total of the lines about to be settled; None when it is, when
    none is declared, or when a line's amount is malformed (the engine names that line)."""
    if declared_fen is None:
        return None
    total = 0
    for line in lines:
        try:
            total += parse_fen(str(line.get("det_item_fee_sumamt")))
        except ValueError:
            return None
    if declared_fen == total:
        return None
    return f"medfee_sumamt {format_fen(declared_fen)} 与未结算费用合计 {format_fen(total)} 不符"
