"""Visits (就诊登记) and their uploaded fee lines, driver-level: the gateway's outpatient hot path.

2201 opens a visit, 2204 adds fee lines to it, 2207 settles what it holds and closes
it. Each of those reads or writes these rows once per call, so they go through
:mod:`.fastsql` like the settlement's own rows (one round trip per batch).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection

from .fastsql import Statement, batch

__all__ = ["Fee", "VisitRow", "add_fees", "close_visit", "open_visit", "read_visit_and_fees", "reopen_visit"]

#: Fee lines per INSERT (SQLite allows 32 766 parameters per statement).
FEE_ROWS_PER_STATEMENT = 500

_COLUMNS = (
    "mdtrt_id", "psn_no", "fixmedins_code", "insutype", "med_type", "begntime", "cert_type", "cert_no", "card_sn",
    "ipt_otp_no", "dise_codg", "status",
)  # fmt: skip
_VISIT = f"SELECT {', '.join(_COLUMNS)} FROM visits WHERE mdtrt_id = ?"
_FEES = "SELECT feedetl_sn, line_json, status FROM visit_fees WHERE mdtrt_id = ? ORDER BY uploaded_at, feedetl_sn"
_OPEN = (
    f"INSERT INTO visits ({', '.join(_COLUMNS)}, created_at) VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})"
    " ON CONFLICT (mdtrt_id) DO NOTHING"
)
_REOPEN = "UPDATE visits SET status = 'open' WHERE mdtrt_id = ? AND fixmedins_code = ? AND status = 'settled'"
_CLOSE = "UPDATE visits SET status = 'settled' WHERE mdtrt_id = ? AND status = 'open' RETURNING mdtrt_id"
# Lines as (feedetl_sn, line_json) rows of a VALUES list.
_ADD_FEES = (
    "INSERT INTO visit_fees (mdtrt_id, uploaded_at, feedetl_sn, line_json, status)"
    " SELECT ?, ?, column1, column2, 'active' FROM (VALUES {values}) AS v"
)


class VisitRow(NamedTuple):
    mdtrt_id: str
    psn_no: str
    fixmedins_code: str
    insutype: str
    med_type: str
    begntime: str
    cert_type: str
    cert_no: str
    card_sn: str | None
    ipt_otp_no: str
    dise_codg: str | None
    status: str  # open | cancelled | settled


class Fee(NamedTuple):
    feedetl_sn: str
    line_json: str
    status: str  # active | revoked


def read_visit_and_fees(conn: Connection, mdtrt_id: str) -> tuple[VisitRow | None, list[Fee]]:
    """The visit and every fee line uploaded to it (revoked ones too), in upload order."""
    visit, fees = batch(conn, [(_VISIT, (mdtrt_id,)), (_FEES, (mdtrt_id,))])
    return (VisitRow(*visit[0]) if visit else None), [Fee(*row) for row in fees]


def open_visit(conn: Connection, visit: VisitRow, now: dt.datetime) -> None:
    """Register the visit; a retry of the same registration (same ``mdtrt_id``) changes nothing."""
    batch(conn, [(_OPEN, (*visit, now))])


def add_fees(conn: Connection, mdtrt_id: str, lines: Sequence[tuple[str, str]], now: dt.datetime) -> None:
    """Append (feedetl_sn, line_json) lines as active fees, many per statement, one round trip."""
    statements: list[Statement] = []
    for start in range(0, len(lines), FEE_ROWS_PER_STATEMENT):
        chunk = lines[start : start + FEE_ROWS_PER_STATEMENT]
        sql = _ADD_FEES.format(values=", ".join(["(?, ?)"] * len(chunk)))
        statements.append((sql, [mdtrt_id, now, *(value for line in chunk for value in line)]))
    if statements:
        batch(conn, statements)


def close_visit(conn: Connection, mdtrt_id: str) -> bool:
    """Mark an open visit settled; False if it was not open (settled or cancelled meanwhile)."""
    return bool(batch(conn, [(_CLOSE, (mdtrt_id,))])[0])


def reopen_visit(conn: Connection, mdtrt_id: str, fixmedins_code: str) -> None:
    """Open again the institution's settled visit ``mdtrt_id`` (its settlement was reversed)."""
    batch(conn, [(_REOPEN, (mdtrt_id, fixmedins_code))])
