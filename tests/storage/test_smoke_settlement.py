"""The settlement service end to end on both databases (detailed proofs live beside this file)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

from storage import builders as b
from yibao import Engine as SettlementEngine
from yibao import PolicyStore, load_demo_catalog
from yibao.db import repository as repo
from yibao.errors import SettlementRefused
from yibao.service.credentials import Credential
from yibao.service.settlement import SettleCommand, SettlementService
from yibao.service.uow import transact

ENGINE = SettlementEngine(PolicyStore.load_dir("src/yibao/data/policies"), load_demo_catalog())
PAYLOAD = {
    "insutype": "310",
    "med_type": "11",
    "begntime": "2025-03-01 09:00:00",
    "acct_used_flag": "1",
    "feedetail": [
        {"feedetl_sn": "1", "hilist_name": "诊疗", "chrgitm_lv": "01", "cnt": "1", "pric": "1000.00",
         "det_item_fee_sumamt": "1000.00"},
        {"feedetl_sn": "2", "hilist_name": "自费药", "chrgitm_lv": "03", "cnt": "1", "pric": "50.00",
         "det_item_fee_sumamt": "50.00"},
    ],
}  # fmt: skip


def test_settle_replay_reverse_undo(db: Engine) -> None:
    def setup(conn: Connection) -> None:
        b.institution(conn)
        b.person(conn, "P1", balance_fen=80000)

    transact(db, setup)
    svc = SettlementService(db, ENGINE, clock=lambda: b.NOW)
    cred = Credential("03", "CP1", "SNP1", b.PIN)
    first = svc.settle(SettleCommand("M1", "H21060000001", cred, PAYLOAD))
    info = first.body["setlinfo"]
    # Dandong published example: fund 455, person 595 from the account.
    assert (info["hifp_pay"], info["psn_part_amt"], info["acct_pay"], info["balc"]) == (
        "455.00", "595.00", "595.00", "205.00",
    )  # fmt: skip
    again = svc.settle(SettleCommand("M1", "H21060000001", cred, PAYLOAD))
    assert again.replayed and again.body == first.body
    reversal = svc.reverse(first.setl_id or "", "M2", "H21060000001")
    assert reversal.body["setlinfo"]["hifp_pay"] == "-455.00"
    acc, balances = transact(db, lambda c: (repo.get_accumulators(c, "P1", 2025, "310"), repo.balances(c, "P1")))
    assert set(acc.values()) == {0} and balances == (80000, 0)
    undone = svc.undo("NOPE", "M3", "H21060000001")
    assert undone.body["undone"] is False
    # The journal is append-only at the database level.
    with db.connect() as conn:
        try:
            conn.execute(text("UPDATE postings SET amount_fen = 0"))
            raise AssertionError("update of postings was allowed")
        except Exception as exc:  # the driver error type differs per database
            assert "append-only" in str(exc)


def test_server_dropped_connections_are_retried_on_fresh_ones(db: Engine) -> None:
    """Without a pre-ping, a pooled connection the server killed fails once, invisibly to the caller."""
    if db.dialect.name != "postgresql":
        return  # an embedded SQLite file has no server to drop the connection
    transact(db, lambda conn: (b.institution(conn), b.person(conn, "P1", balance_fen=80000)))
    svc = SettlementService(db, ENGINE, clock=lambda: b.NOW)
    cred = Credential("03", "CP1", "SNP1", b.PIN)
    first = svc.settle(SettleCommand("R1", "H21060000001", cred, PAYLOAD))
    # The pool now holds an idle connection; the server terminates it (as on a restart).
    other = create_engine(db.url, poolclass=NullPool)
    with other.connect() as conn:
        others = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        others += " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        killed = conn.execute(text(others)).scalar_one()
    other.dispose()
    assert killed >= 1
    second = svc.settle(SettleCommand("R2", "H21060000001", cred, PAYLOAD))
    assert not second.replayed and second.setl_id != first.setl_id
    assert svc.settle(SettleCommand("R2", "H21060000001", cred, PAYLOAD)).replayed


def test_settle_with_an_id_number(db: Engine) -> None:
    """mdtrt_cert_type 02: the ID number names the person (and the PIN guards the account)."""
    transact(db, lambda conn: (b.institution(conn), b.person(conn, "P1", balance_fen=80000)))
    svc = SettlementService(db, ENGINE, clock=lambda: b.NOW)
    certno = b.certno("210600", dt.date(1958, 5, 1), 1, "1")
    settled = svc.settle(SettleCommand("ID1", "H21060000001", Credential("02", certno.lower(), None, b.PIN), PAYLOAD))
    assert settled.body["setlinfo"]["psn_no"] == "P1" and settled.body["setlinfo"]["acct_pay"] == "595.00"
    unknown = b.certno("210600", dt.date(1990, 1, 1), 3, "1")
    with pytest.raises(SettlementRefused) as refused:
        svc.settle(SettleCommand("ID2", "H21060000001", Credential("02", unknown, None, b.PIN), PAYLOAD))
    assert [r.code for r in refused.value.reasons] == ["PERSON_NOT_FOUND"]
    with pytest.raises(SettlementRefused) as wrong_pin:
        svc.settle(SettleCommand("ID3", "H21060000001", Credential("02", certno, None, "000000"), PAYLOAD))
    assert [r.code for r in wrong_pin.value.reasons] == ["PIN_WRONG"]
