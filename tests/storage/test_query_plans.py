"""PostgreSQL: a settlement's reads find their rows through indexes, never by scanning a table.

A region holds millions of persons and accounts; a statement that scans ``persons`` or
``ledger_accounts`` costs in proportion. With a few thousand filler rows and fresh
statistics, every statement of a settlement's read (family mutual aid on, so the payer
set is the person and their account holders) is explained with the parameters it ran
with, and no plan may contain a sequential scan of a large table.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from storage import builders as b
from storage.test_smoke_settlement import ENGINE, PAYLOAD
from yibao.db import fastsql, pg_pipeline
from yibao.service.credentials import Credential
from yibao.service.settlement import SettleCommand, SettlementService
from yibao.service.uow import transact

LARGE_TABLES = ("persons", "ledger_accounts")  # the ones filled here
FILLER = 3000


def _fill(conn: Connection) -> None:
    b.institution(conn, "H21060000001")
    b.person(conn, "P1", balance_fen=50_000)
    conn.execute(
        text(
            "INSERT INTO persons (psn_no, name, certno, gend, brdy, admdvs)"
            " SELECT 'F' || n, '填充' || n, 'X' || lpad(n::text, 17, '0'), '1', DATE '1970-01-01', '210600'"
            " FROM generate_series(1, :n) AS n"
        ),
        {"n": FILLER},
    )
    for kind in ("psn_current", "psn_historical"):
        conn.execute(
            text(
                "INSERT INTO ledger_accounts (code, kind, owner, balance_fen)"
                " SELECT 'psn:F' || n || ':' || :kind, :kind, 'F' || n, 100 FROM generate_series(1, :n) AS n"
            ),
            {"n": FILLER, "kind": kind},
        )


def test_settlement_reads_use_indexes(db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    if db.dialect.name != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    transact(db, _fill)
    with db.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    batches: list[list[tuple[str, Any]]] = []
    run = pg_pipeline.run

    def capture(raw: Any, statements: Any, **kw: Any) -> Any:
        batches.append(list(statements))
        return run(raw, statements, **kw)

    monkeypatch.setattr(fastsql.pg_pipeline, "run", capture)
    service = SettlementService(db, ENGINE, clock=lambda: b.NOW)
    reply = service.settle(SettleCommand("plan-1", "H21060000001", Credential("03", "CP1", "SNP1", b.PIN), PAYLOAD))
    assert reply.setl_id is not None
    reads = [(sql, params) for batch in batches for sql, params in batch if sql.lstrip().startswith("SELECT")]
    assert any("FOR UPDATE" in sql for sql, _ in reads), "the read with its lock was captured"
    raw = db.raw_connection()
    try:
        cursor = raw.cursor()
        for sql, params in reads:
            cursor.execute("EXPLAIN " + sql.replace("?", "%s"), list(params))
            plan = "\n".join(row[0] for row in cursor.fetchall())
            for table in LARGE_TABLES:
                assert f"Seq Scan on {table} " not in plan, f"{sql}\n{plan}"
        raw.rollback()
    finally:
        raw.close()
