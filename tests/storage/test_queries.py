"""Queries: balance, usage records with lines, 5206 accumulators, annual statement."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import Connection, Engine

from storage import builders as b
from storage.test_smoke_settlement import ENGINE, PAYLOAD
from yibao.errors import RequestError
from yibao.service import queries
from yibao.service.credentials import Credential
from yibao.service.settlement import SettleCommand, SettlementService
from yibao.service.uow import transact


def test_queries_after_settle_and_reverse(db: Engine) -> None:
    def setup(conn: Connection) -> None:
        b.institution(conn)
        b.person(conn, "P7", balance_fen=100000)

    transact(db, setup)
    ticks = itertools.count()
    svc = SettlementService(db, ENGINE, clock=lambda: b.NOW + dt.timedelta(minutes=next(ticks)))
    cred = Credential("03", "CP7", "SNP7", b.PIN)
    first = svc.settle(SettleCommand("Q1", "H21060000001", cred, PAYLOAD))
    svc.settle(SettleCommand("Q2", "H21060000001", cred, PAYLOAD))
    svc.reverse(first.setl_id or "", "Q3", "H21060000001")

    # The second visit found the deductible already borne (fund 650, account 350 + 50 self-pay = 400);
    # the first (595 from the account) was then reversed: 1000 − 400.
    expected = {"psn_no": "P7", "current_year": "600.00", "historical": "0.00", "balc": "600.00"}
    assert queries.balance(db, "P7") == expected
    records = queries.usage_records(db, "P7", 2025)
    assert [r["kind"] for r in records] == ["reversal", "settle", "settle"]
    assert records[1]["lines"][1]["fulamt_ownpay_amt"] == "50.00"
    acc = {row["key"]: row["value"] for row in queries.accumulators(db, "P7", 2025, "310")}
    # Reversal takes back exactly the first settlement's deltas, the deductible among them.
    assert acc["outpatient_pooling.dedc_amt"] == "0.00"
    assert acc["outpatient_pooling.visit_cnt"] == 1
    statement = queries.annual_statement(db, "P7", 2025)
    assert (statement["settlements"], statement["reversals"]) == (2, 1)
    assert statement["fund_pay_sumamt"] == "650.00"  # 455 + 650 − 455
    with pytest.raises(RequestError):
        queries.balance(db, "NOBODY")
    # Any stored settlement can be explained again, from its stored trace and policy version.
    again = queries.explain_settlement(db, first.setl_id or "")
    assert again["policy_version"].startswith("210600@") and any("起付线" in t for t in again["explanation"])
    reversed_ = queries.explain_settlement(db, records[0]["setl_id"], "en")
    assert reversed_["kind"] == "reversal" and reversed_["explanation"][0].startswith("Reversal of settlement")
