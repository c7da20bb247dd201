"""Concurrency proofs on SQLite and PostgreSQL: 32+ workers against one small balance and the shared pool.

Every worker call must end in a reply or a business refusal (a ``YibaoError``); a database
error reaching the caller (deadlock, lock timeout, serialization failure, CHECK violation) is a
failure. After each run: balances never went negative (sampled while running, and replies),
every entry balances, accumulators equal Σ deltas, and the Dandong annual deductible (300 yuan)
was charged exactly once per person.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select

from storage import builders as b
from storage.invariants import INSTITUTION, assert_invariants, bill, evoucher, settlement_engine
from yibao.db import make_engine
from yibao.db import repository as repo
from yibao.db import schema as S
from yibao.errors import YibaoError
from yibao.money import parse_fen
from yibao.service.credentials import Credential
from yibao.service.settlement import SettleCommand, SettlementService, StoredReply
from yibao.service.uow import transact

WORKERS = 32
DEDUCTIBLE = 30000  # Dandong employee outpatient pooling, retired: 300 yuan once a year


@dataclass
class Outcome:
    """What the callers saw: replies, business refusals, and anything else (which must not happen)."""

    replies: list[StoredReply] = field(default_factory=list)
    refusals: list[YibaoError] = field(default_factory=list)
    leaked: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, call: Callable[[], StoredReply]) -> StoredReply | None:
        try:
            reply = call()
        except YibaoError as refused:
            with self.lock:
                self.refusals.append(refused)
            return None
        except BaseException as exc:  # every other error is a leak to report
            with self.lock:
                self.leaked.append(exc)
            return None
        with self.lock:
            self.replies.append(reply)
        return reply

    def check_nothing_leaked(self, calls: int) -> None:
        assert not self.leaked, f"{len(self.leaked)} errors leaked to callers, first: {self.leaked[0]!r}"
        assert len(self.replies) + len(self.refusals) == calls


def hammer(jobs: list[Callable[[], Any]], workers: int = WORKERS) -> None:
    """Run the jobs on ``workers`` threads that start together (a barrier) and pull from one queue."""
    queue = list(reversed(jobs))
    guard = threading.Lock()
    barrier = threading.Barrier(workers)

    def run() -> None:
        barrier.wait()
        while True:
            with guard:
                if not queue:
                    return
                job = queue.pop()
            job()

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"


class BalanceSampler:
    """Polls the lowest personal balance while the workers run."""

    def __init__(self, db: Engine) -> None:
        self.db = db
        self.lowest: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        query = select(func.min(S.ledger_accounts.c.balance_fen)).where(S.ledger_accounts.c.kind.in_(S.PERSONAL_KINDS))
        while not self._stop.is_set():
            with self.db.connect() as conn:
                value = conn.execute(query).scalar()
            if value is not None:
                self.lowest = value if self.lowest is None else min(self.lowest, value)
            self.samples += 1
            time.sleep(0.005)

    def __enter__(self) -> BalanceSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def service(db: Engine) -> SettlementService:
    return SettlementService(db, settlement_engine(), clock=lambda: b.NOW)


def card(psn_no: str) -> Credential:
    return Credential("03", f"C{psn_no}", f"SN{psn_no}", b.PIN)


def settled_rows(db: Engine, psn_no: str | None = None) -> list[Any]:
    query = select(S.settlements)
    if psn_no is not None:
        query = query.where(S.settlements.c.psn_no == psn_no)
    with db.connect() as conn:
        return list(conn.execute(query).all())


def dedc_fen(row: Any) -> int:
    return parse_fen(json.loads(row.result_json)["setlinfo"]["act_pay_dedc"], allow_negative=True)


def balance(db: Engine, psn_no: str) -> int:
    return sum(transact(db, lambda c: repo.balances(c, psn_no), readonly=True))


# -- one person, small balance ----------------------------------------------------------------------
ONE_BALANCE = 65000  # 300 yuan of deductible + ten payments of 35 yuan
ONE_SETTLEMENTS = 50
# Serialised, the replies' balances are exactly these (any interleaving): three bills of 100 yuan eat
# the deductible from the account, then each pays 35 yuan (100 − 65 % pooled) until the account is empty.
ONE_BALANCES = sorted([55000, 45000, 35000, *range(31500, 0, -3500)] + [0] * 38)


def _one_person(conn: Connection) -> None:
    b.institution(conn)
    b.person(conn, "P1", balance_fen=ONE_BALANCE)


def _check_one_person(db: Engine, replies: list[StoredReply]) -> None:
    assert sorted(parse_fen(r.body["setlinfo"]["balc"]) for r in replies) == ONE_BALANCES
    rows = settled_rows(db, "P1")
    assert len(rows) == ONE_SETTLEMENTS and {r.kind for r in rows} == {"settle"}
    assert sum(dedc_fen(r) for r in rows) == DEDUCTIBLE  # the deductible, exactly once
    assert sum(r.acct_pay for r in rows) == ONE_BALANCE
    assert sum(r.fund_pay_sumamt for r in rows) == (ONE_SETTLEMENTS * 10000 - DEDUCTIBLE) * 65 // 100
    assert balance(db, "P1") == 0
    acc = transact(db, lambda c: repo.get_accumulators(c, "P1", 2025, "310"), readonly=True)
    assert acc["outpatient_pooling.dedc_amt"] == DEDUCTIBLE
    assert acc["outpatient_pooling.visit_cnt"] == ONE_SETTLEMENTS
    assert_invariants(db)


def all_settle_never_negative(db: Engine, jobs: list[Callable[[], Any]], outcome: Outcome) -> None:
    """Run the jobs on 32 threads: every one settles, nothing leaks, no sampled balance goes below zero."""
    with BalanceSampler(db) as sampler:
        hammer(jobs)
    outcome.check_nothing_leaked(len(jobs))
    assert len(outcome.replies) == len(jobs), [str(r) for r in outcome.refusals[:3]]
    assert sampler.lowest is not None and sampler.lowest >= 0


def test_one_person_small_balance(db: Engine) -> None:
    """50 settlements from 32 threads against an account that can pay for about ten of them."""
    transact(db, _one_person)
    svc = service(db)
    outcome = Outcome()
    jobs = [
        (lambda i=i: outcome.record(lambda: svc.settle(SettleCommand(f"ONE-{i}", INSTITUTION, card("P1"), bill(100)))))
        for i in range(ONE_SETTLEMENTS)
    ]
    with BalanceSampler(db) as sampler:
        hammer(jobs)
    outcome.check_nothing_leaked(ONE_SETTLEMENTS)
    assert len(outcome.replies) == ONE_SETTLEMENTS, [str(r) for r in outcome.refusals]
    assert sampler.samples > 0 and sampler.lowest is not None and sampler.lowest >= 0
    _check_one_person(db, outcome.replies)


# -- separate processes (separate engines, separate connection pools) -------------------------------
def _process_batch(url: str, msgids: list[str], threads: int) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """In a child process: settle ``msgids`` for P1 on ``threads`` threads with its own engine."""
    db = make_engine(url, pool_size=threads + 1)
    try:
        svc = service(db)
        outcome = Outcome()
        jobs = [
            (lambda m=m: outcome.record(lambda: svc.settle(SettleCommand(m, INSTITUTION, card("P1"), bill(100)))))
            for m in msgids
        ]
        hammer(jobs, threads)
        replies = [{"msgid": r.msgid, "setl_id": r.setl_id, "body": r.body} for r in outcome.replies]
        return replies, [str(e) for e in outcome.refusals], [repr(e) for e in outcome.leaked]
    finally:
        db.dispose()


def test_processes_against_one_person(db_url: str) -> None:
    """4 processes × 8 threads, each process with its own engine, against the same small balance."""
    db = make_engine(db_url, pool_size=4)
    try:
        transact(db, _one_person)
        batches = [[f"PROC-{i}" for i in range(ONE_SETTLEMENTS) if i % 4 == k] for k in range(4)]
        with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_process_batch, [db_url] * 4, batches, [8] * 4))
        leaked = [e for _, _, errors in results for e in errors]
        refused = [e for _, refusals, _ in results for e in refusals]
        assert not leaked, leaked[:3]
        assert not refused, refused[:3]
        replies = [
            StoredReply(r["msgid"], "settle", r["body"], r["setl_id"]) for replies, _, _ in results for r in replies
        ]
        assert len(replies) == ONE_SETTLEMENTS
        _check_one_person(db, replies)
    finally:
        db.dispose()


# -- the shared pool: many persons, one institution, one fund, family mutual aid ---------------------
POOL_PERSONS = 40
POOL_BALANCE = 20000
POOL_VISITS = 4  # bills of 400 yuan: (4 × 400 − 300) × 65 % from the fund, 755 yuan each person's share
POOL_BILL = 400


def test_shared_pool(db: Engine) -> None:
    """160 settlements of 40 persons from 32 threads; ten pairs top each other up (家庭共济)."""
    persons = [f"S{2 * n + 1:03d}" for n in range(POOL_PERSONS)]

    def setup(conn: Connection) -> None:
        b.institution(conn)
        for p in persons:
            b.person(conn, p, balance_fen=POOL_BALANCE)
            evoucher(conn, p, b.NOW)
        for a, c in zip(persons[0:20:2], persons[1:20:2], strict=True):  # both ways: locks in both orders
            for holder, member in ((a, c), (c, a)):
                conn.execute(
                    insert(S.family_bindings).values(
                        holder_psn_no=holder, member_psn_no=member, relation="spouse", bound_at=b.NOW
                    )
                )

    transact(db, setup)
    svc = service(db)
    outcome = Outcome()
    visits = [(p, v) for p in persons for v in range(POOL_VISITS)]
    random.Random(7).shuffle(visits)
    jobs = [
        (lambda p=p, v=v: outcome.record(lambda: svc.settle(
            SettleCommand(f"POOL-{p}-{v}", INSTITUTION, Credential("01", f"EV{p}"), bill(POOL_BILL))
        )))
        for p, v in visits
    ]  # fmt: skip
    all_settle_never_negative(db, jobs, outcome)
    assert all(parse_fen(r.body["setlinfo"]["balc"]) >= 0 for r in outcome.replies)

    rows = settled_rows(db)
    fund_each = (POOL_VISITS * POOL_BILL * 100 - DEDUCTIBLE) * 65 // 100
    for p in persons:
        mine = [r for r in rows if r.psn_no == p]
        assert len(mine) == POOL_VISITS
        assert sum(dedc_fen(r) for r in mine) == DEDUCTIBLE, p
        assert sum(r.fund_pay_sumamt for r in mine) == fund_each, p
        assert balance(db, p) == 0, p  # everyone's share exceeds every balance, pairs included
    assert sum(r.acct_pay for r in rows) == POOL_PERSONS * POOL_BALANCE
    assert sum(parse_fen(r.body["setlinfo"]["acct_mulaid_pay"]) for r in outcome.replies) > 0

    def payable_and_fund(conn: Connection) -> tuple[int, int]:
        entry_ids = [r.entry_id for r in rows]
        inst = repo.account_ids(conn, [f"inst:{INSTITUTION}:payable", "fund:210600:310100"])
        sums = dict(
            conn.execute(
                select(S.postings.c.account_id, func.sum(S.postings.c.amount_fen))
                .where(S.postings.c.entry_id.in_(entry_ids))
                .group_by(S.postings.c.account_id)
            ).all()
        )
        return -int(sums[inst[f"inst:{INSTITUTION}:payable"]]), int(sums[inst["fund:210600:310100"]])

    owed, pooled = transact(db, payable_and_fund)
    assert pooled == POOL_PERSONS * fund_each
    assert owed == POOL_PERSONS * (fund_each + POOL_BALANCE)
    assert_invariants(db)


# -- one account holder, many members drawing on it ------------------------------------------------
HOLDER_BALANCE = 50000
MEMBERS = 8


def test_one_holder_many_members(db: Engine) -> None:
    """40 settlements of 8 members with empty accounts, from 32 threads, all drawing on one holder (家庭共济)."""
    members = [f"M{2 * n + 1:03d}" for n in range(MEMBERS)]  # odd: men's ID sequence digits

    def setup(conn: Connection) -> None:
        b.institution(conn)
        b.person(conn, "H901", balance_fen=HOLDER_BALANCE)
        for m in members:
            b.person(conn, m)
            evoucher(conn, m, b.NOW)
            conn.execute(insert(S.family_bindings).values(
                holder_psn_no="H901", member_psn_no=m, relation="child", bound_at=b.NOW))  # fmt: skip

    transact(db, setup)
    svc = service(db)
    outcome = Outcome()
    jobs = [
        (lambda m=m, v=v: outcome.record(lambda: svc.settle(
            SettleCommand(f"FAM-{m}-{v}", INSTITUTION, Credential("01", f"EV{m}"), bill(100))
        )))
        for v in range(5) for m in members
    ]  # fmt: skip
    all_settle_never_negative(db, jobs, outcome)
    drawn = sum(parse_fen(r.body["setlinfo"]["acct_mulaid_pay"]) for r in outcome.replies)
    assert drawn == HOLDER_BALANCE == HOLDER_BALANCE - balance(db, "H901")  # the holder's account is used up exactly
    assert_invariants(db)


# -- settle, reverse and 冲正 at once ----------------------------------------------------------------
def test_mixed_settle_reverse_undo(db: Engine) -> None:
    """Settlements race their own reversals and 冲正; contested reversals are refused, never doubled."""
    persons = [f"X{2 * n + 1}" for n in range(8)]
    start = 30000

    def setup(conn: Connection) -> None:
        b.institution(conn)
        for p in persons:
            b.person(conn, p, balance_fen=start)
            evoucher(conn, p, b.NOW)

    transact(db, setup)
    svc = service(db)
    outcome = Outcome()
    rng = random.Random(11)
    settled: list[StoredReply] = []
    settled_lock = threading.Lock()
    kinds: Counter[str] = Counter()

    def settle(i: int) -> None:
        p = persons[i % len(persons)]
        cmd = SettleCommand(f"MIX-S{i}", INSTITUTION, Credential("01", f"EV{p}"), bill(rng.choice([60, 150, 420])))
        reply = outcome.record(lambda: svc.settle(cmd))
        if reply is not None:
            with settled_lock:
                settled.append(reply)

    def pick() -> StoredReply | None:
        for _ in range(400):
            with settled_lock:
                if settled:
                    return rng.choice(settled[-12:])
            time.sleep(0.002)
        return None

    def reverse(i: int) -> None:
        target = pick()
        if target is not None:
            with settled_lock:
                kinds["reverse"] += 1
            outcome.record(lambda: svc.reverse(target.setl_id or "", f"MIX-R{i}", INSTITUTION))

    def undo(i: int) -> None:
        target = pick()
        if target is not None:
            with settled_lock:
                kinds["undo"] += 1
            outcome.record(lambda: svc.undo(target.msgid, f"MIX-U{i}", INSTITUTION))

    jobs: list[Callable[[], None]] = []
    for i in range(72):
        jobs.append(lambda i=i: settle(i))
        if i % 3 == 0:
            jobs.append(lambda i=i: reverse(i))
        if i % 4 == 1:
            jobs.append(lambda i=i: undo(i))
    with BalanceSampler(db) as sampler:
        hammer(jobs)
    calls = 72 + kinds["reverse"] + kinds["undo"]
    outcome.check_nothing_leaked(calls)
    assert sampler.lowest is not None and sampler.lowest >= 0
    assert {type(e).__name__ for e in outcome.refusals} <= {"Forbidden"}, outcome.refusals[:3]

    rows = settled_rows(db)
    reversals = [r for r in rows if r.kind == "reversal"]
    assert len([r for r in rows if r.kind == "settle"]) == 72
    assert reversals, "no reversal happened"
    assert len(reversals) == sum(1 for r in outcome.replies if r.setl_id and r.operation in ("reverse", "undo"))
    for p in persons:  # no family here: the account pays exactly its settlements' signed acct_pay
        assert balance(db, p) == start - sum(r.acct_pay for r in rows if r.psn_no == p), p
        live = {r.setl_id for r in rows if r.psn_no == p and r.kind == "settle"} - {r.reverses_setl_id for r in rows}
        acc = transact(db, lambda c, p=p: repo.get_accumulators(c, p, 2025, "310"), readonly=True)
        assert acc.get("outpatient_pooling.visit_cnt", 0) == len(live), p
    assert_invariants(db)


def test_contested_reversal(db: Engine) -> None:
    """32 different reversal messages for one settlement: one reverses it, 31 are refused."""

    def setup(conn: Connection) -> None:
        b.institution(conn)
        b.person(conn, "R1", balance_fen=50000)
        evoucher(conn, "R1", b.NOW)

    transact(db, setup)
    svc = service(db)
    first = svc.settle(SettleCommand("CR-0", INSTITUTION, Credential("01", "EVR1"), bill(1000)))
    outcome = Outcome()
    hammer([
        (lambda i=i: outcome.record(lambda: svc.reverse(first.setl_id or "", f"CR-R{i}", INSTITUTION)))
        for i in range(WORKERS)
    ])  # fmt: skip
    outcome.check_nothing_leaked(WORKERS)
    assert len(outcome.replies) == 1 and len(outcome.refusals) == WORKERS - 1
    assert {type(e).__name__ for e in outcome.refusals} == {"Forbidden"}
    assert balance(db, "R1") == 50000
    assert_invariants(db)
