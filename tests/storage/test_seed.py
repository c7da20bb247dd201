"""The demo region on SQLite and PostgreSQL: the population it builds, the ledger it leaves
(every entry balanced, no negative personal balance), that its demo persons can settle, and
that seeding twice changes nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Connection, Engine, func, select

from storage.test_accounts import unbalanced_entries
from storage.test_registry import ENGINE, HOSPITAL, POLICIES
from yibao.db import make_engine, upgrade
from yibao.db import schema as S
from yibao.idcard import parse_idcard
from yibao.seed import DEMO_PIN, DEMO_REGION, seed_demo
from yibao.service.credentials import Credential
from yibao.service.settlement import SettleCommand, SettlementService
from yibao.service.uow import transact

NOW = dt.datetime(2025, 3, 1, 9, 0, 0)
COUNT = 150


def clock() -> dt.datetime:
    return NOW


def table_sizes(conn: Connection) -> dict[str, int]:
    tables = S.metadata.sorted_tables
    return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in tables}


def test_seed_demo_population_ledger_and_idempotence(db: Engine) -> None:
    summary = seed_demo(db, POLICIES, clock=clock, count=COUNT)
    assert summary.created and summary.region == DEMO_REGION
    counts = summary.counts
    assert counts["persons"] == COUNT
    for psn_type in ("1101", "1201", "15", "1403"):
        assert counts[f"psn_type {psn_type}"] > 0, psn_type
    assert sum(v for k, v in counts.items() if k.startswith("psn_type ")) == COUNT
    assert counts["children (<18, resident)"] > 0 and counts["households with bindings"] > 0
    assert counts["bindings"] >= counts["households with bindings"]
    assert counts["offsite filings"] >= 1 and counts["disease filings"] >= 1 and counts["suspended"] == 1
    assert counts["low balances (< 100 yuan)"] > 0
    levels = {i.hosp_lv for i in summary.institutions}
    assert {"01", "02", "05", "08", "11"} <= levels
    assert sum(i.kind == "pharmacy" for i in summary.institutions) >= 3
    assert any(i.networked for i in summary.institutions) and not all(i.networked for i in summary.institutions)

    def check(conn: Connection) -> None:
        assert unbalanced_entries(conn) == []
        personal = conn.execute(
            select(S.ledger_accounts.c.code, S.ledger_accounts.c.balance_fen).where(
                S.ledger_accounts.c.kind.in_(S.PERSONAL_KINDS)
            )
        ).all()
        assert personal and min(balance for _, balance in personal) >= 0
        stored = dict(personal)
        sums = dict(
            conn.execute(
                select(S.ledger_accounts.c.code, -func.sum(S.postings.c.amount_fen))
                .select_from(S.postings.join(S.ledger_accounts))
                .where(S.ledger_accounts.c.kind.in_(S.PERSONAL_KINDS))
                .group_by(S.ledger_accounts.c.code)
            ).all()
        )
        assert all(stored[code] == total for code, total in sums.items())
        assert sum(stored.values()) > 0
        people = conn.execute(select(S.persons)).all()
        for person in people:
            card = parse_idcard(person.certno)
            assert (card.gend, card.birth_date) == (person.gend, person.brdy)
        cards = conn.execute(
            select(func.count(func.distinct(S.credentials.c.psn_no))).where(
                S.credentials.c.kind == "card", S.credentials.c.status == "active"
            )
        ).scalar_one()
        assert cards == len(people) == conn.execute(select(func.count()).select_from(S.pins)).scalar_one()
        kinds = set(conn.execute(select(S.contributions.c.kind).distinct()).scalars())
        assert kinds == {"employee_monthly", "retiree_allotment", "resident_premium"}

    transact(db, check)
    before = transact(db, table_sizes)
    again = seed_demo(db, POLICIES, clock=lambda: NOW + dt.timedelta(days=3), count=COUNT)
    assert not again.created
    assert (again.persons, again.institutions, dict(again.counts)) == (
        summary.persons,
        summary.institutions,
        dict(summary.counts),
    )
    assert transact(db, table_sizes) == before

    # The demo persons work as printed: a retiree at a level-1 hospital, a spouse topped up by family aid.
    by_name = {p.name: p for p in summary.persons}
    assert by_name["张伟"].pin == DEMO_PIN and not by_name["张伟"].pin_must_change
    assert by_name["王子涵"].pin_must_change
    service = SettlementService(db, ENGINE, clock=clock)
    bill = {
        "insutype": "310", "med_type": "11", "begntime": "2025-03-01 10:00:00", "acct_used_flag": "1",
        "feedetail": [{"feedetl_sn": "1", "hilist_name": "诊疗", "chrgitm_lv": "01", "cnt": "1", "pric": "1000.00",
                       "det_item_fee_sumamt": "1000.00"}],
    }  # fmt: skip
    level_1 = next(i.fixmedins_code for i in summary.institutions if i.hosp_lv == "08" and i.admdvs.startswith("2106"))
    for name in ("李秀英", "刘丽"):
        person = by_name[name]
        cred = Credential("03", person.card_no, person.card_sn, person.pin)
        reply = service.settle(SettleCommand(f"DEMO-{person.psn_no}", level_1, cred, bill))
        assert reply.body["setlinfo"]["acct_pay"] != "0.00"
    assert reply.body["setlinfo"]["acct_mulaid_pay"] != "0.00"  # 刘丽's husband's account tops up
    suspended = by_name["周杰"]
    reasons = service.entitlement(Credential("03", suspended.card_no, suspended.card_sn), HOSPITAL, "310", "11",
                                  NOW.date())  # fmt: skip
    assert "SETTLEMENT_SUSPENDED" in [r.code for r in reasons]
    assert transact(db, unbalanced_entries) == []


def test_seed_demo_is_deterministic(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        engine = make_engine(f"sqlite:///{tmp_path / name}.db", pool_size=2)
        upgrade(engine)
        summary = seed_demo(engine, POLICIES, clock=clock, count=40, rng_seed=7)
        people = transact(engine, lambda c: sorted(c.execute(select(S.persons.c.name, S.persons.c.certno)).all()))
        runs.append((summary, people))
        engine.dispose()
    assert runs[0] == runs[1]
