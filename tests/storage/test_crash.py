"""Crash safety on SQLite and PostgreSQL: kill -9 a settlement worker, replay every request, check.

A worker process (crash_worker.py) settles a list of requests, each with its msgid, and ACKs each
reply on stdout. It is killed with SIGKILL at injected points — after a commit before the ACK,
inside the transaction between steps, right before commit — and, under load on four threads, from
outside at a random moment (twice: the first recovery is killed as well). A fresh worker then
replays EVERY request. Afterwards: every acknowledged settlement exists exactly once and is what the
replay answered, every request has exactly one effect, every invariant holds, and — for sequential
runs — every settlement's money equals that of a run that never crashed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select

from storage import builders as b
from storage.invariants import INSTITUTION, assert_invariants, bill, evoucher, settlement_engine
from yibao.db import make_engine, upgrade
from yibao.db import schema as S
from yibao.service.credentials import Credential
from yibao.service.settlement import SettleCommand, SettlementService
from yibao.service.uow import transact

WORKER = Path(__file__).with_name("crash_worker.py")
PERSONS = {"K1": 50000, "K3": 30000, "K5": 8000, "K7": 120000}  # K1 pays with card + PIN, the others e-voucher
TIMEOUT = 60


def _requests() -> list[dict[str, Any]]:
    rng = random.Random(2025)
    out: list[dict[str, Any]] = []
    for i in range(28):
        p = rng.choice(sorted(PERSONS))
        cred = ("03", f"C{p}", f"SN{p}", b.PIN) if p == "K1" else ("01", f"EV{p}", None, None)
        out.append({"op": "settle", "msgid": f"CR-{i:02d}", "fixmedins_code": INSTITUTION, "cred": list(cred),
                    "payload": bill(rng.choice([80, 150, 260, 700]), acct=rng.random() < 0.85)})  # fmt: skip
        if i in (6, 15, 22):  # 冲正 of an earlier settlement
            out.append({"op": "undo", "msgid": f"CR-U{i}", "fixmedins_code": INSTITUTION, "target": f"CR-{i - 4:02d}"})
    out.append({"op": "undo", "msgid": "CR-UX", "fixmedins_code": INSTITUTION, "target": "CR-NEVER-SENT"})
    return out


REQUESTS = _requests()


def _setup(conn: Connection) -> None:
    b.institution(conn)
    for p, balance in PERSONS.items():
        b.person(conn, p, balance_fen=balance)
        evoucher(conn, p, b.NOW)


@dataclass
class Run:
    returncode: int
    acks: list[tuple[str, str]]
    lines: list[str]
    stderr: str


def _command(db_url: str, requests_file: Path, threads: int) -> list[str]:
    return [sys.executable, str(WORKER), db_url, str(requests_file), "--threads", str(threads)]


def _parse(stdout: str) -> list[tuple[str, str]]:
    acks = []
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] == "ACK":
            assert len(parts) == 3, line
            acks.append((parts[1], parts[2]))
    return acks


def run_worker(db_url: str, requests_file: Path, *, crash_at: str | None = None, threads: int = 1) -> Run:
    env = {k: v for k, v in os.environ.items() if k != "YIBAO_CRASH_AT"}
    if crash_at:
        env["YIBAO_CRASH_AT"] = crash_at
    done = subprocess.run(
        _command(db_url, requests_file, threads), env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    return Run(done.returncode, _parse(done.stdout), done.stdout.splitlines(), done.stderr)


def run_and_kill(db_url: str, requests_file: Path, rng: random.Random, *, threads: int, after_acks: int) -> Run:
    """Run a worker under load and SIGKILL it from outside after ``after_acks`` ACKs plus a random pause."""
    proc = subprocess.Popen(
        _command(db_url, requests_file, threads), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + TIMEOUT
    while len([x for x in lines if x.startswith("ACK")]) < after_acks and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
    time.sleep(rng.uniform(0, 0.03))  # land anywhere: between requests or inside a transaction
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate(timeout=TIMEOUT)
    lines.extend(rest.splitlines())
    return Run(proc.returncode, _parse("\n".join(lines)), lines, err)


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple[int, int, int, str]]:
    """(fund, account, cash, kind) per msgid of a run that never crashed (in-process, on a scratch SQLite)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = make_engine(f"sqlite:///{tmp}/ref.db", pool_size=2)
        upgrade(db)
        transact(db, _setup)
        svc = SettlementService(db, settlement_engine())
        for r in REQUESTS:
            if r["op"] == "settle":
                svc.settle(SettleCommand(r["msgid"], r["fixmedins_code"], Credential(*r["cred"]), r["payload"]))
            else:
                svc.undo(r["target"], r["msgid"], r["fixmedins_code"])
        out = _money(db)
        db.dispose()
    return out


def _money(db: Engine) -> dict[str, tuple[int, int, int, str]]:
    with db.connect() as conn:
        rows = conn.execute(select(S.settlements)).all()
    return {r.msgid: (r.fund_pay_sumamt, r.acct_pay, r.psn_cash_pay, r.kind) for r in rows}


@pytest.fixture
def prepared(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Path, Engine]]:
    engine = make_engine(db_url, pool_size=2)
    transact(engine, _setup)
    requests_file = tmp_path / "requests.json"
    requests_file.write_text(json.dumps(REQUESTS, ensure_ascii=False), encoding="utf-8")
    yield db_url, requests_file, engine
    engine.dispose()


def check_recovered(db: Engine, runs: list[Run]) -> dict[str, str]:
    """The state after the last (complete) run; returns msgid → setl_id ('-' for none)."""
    final = runs[-1]
    assert final.returncode == 0 and final.lines[-1] == "DONE", final.stderr[-2000:]
    assert not [x for r in runs for x in r.lines if x.startswith("NAK")], "a request was refused"
    answered = dict(final.acks)
    assert sorted(answered) == sorted(r["msgid"] for r in REQUESTS), "the replay must answer every request"
    # Every acknowledgement, from any run, named what is stored: replays returned the stored reply.
    for run in runs:
        for msgid, setl_id in run.acks:
            assert answered[msgid] == setl_id, f"{msgid}: acknowledged {setl_id}, stored {answered[msgid]}"

    with db.connect() as conn:
        settlements = conn.execute(select(S.settlements)).all()
        messages = {m.msgid: m for m in conn.execute(select(S.messages)).all()}
    by_msgid: dict[str, list[Any]] = {}
    for s in settlements:
        by_msgid.setdefault(s.msgid, []).append(s)
    by_setl = {s.setl_id: s for s in settlements}
    for r in REQUESTS:
        msgid = r["msgid"]
        assert msgid in messages, f"{msgid}: no stored reply"
        mine = by_msgid.get(msgid, [])
        if r["op"] == "settle":
            assert len(mine) == 1 and mine[0].kind == "settle", f"{msgid}: {len(mine)} settlements"
            assert answered[msgid] == mine[0].setl_id
        elif answered[msgid] == "-":
            assert mine == [], f"{msgid}: a no-op 冲正 made a settlement"
        else:
            assert len(mine) == 1 and mine[0].kind == "reversal", f"{msgid}: {len(mine)} settlements"
            assert by_setl[mine[0].reverses_setl_id].msgid == r["target"]
    assert set(by_msgid) <= {r["msgid"] for r in REQUESTS}
    assert_invariants(db)
    return answered


@pytest.mark.parametrize(
    "crash_at",
    [
        "before_ack:5",  # after commit, before the reply reaches the caller's stdout
        "after_commit:9",  # committed, the service has not returned yet
        "before_commit:7",  # the whole unit of work done, not committed
        "read_money:6",  # a settlement holds its row locks, nothing written yet
        "write_settlement:11",  # every row of a settlement written in one pipeline, not committed
        "post_entry:2",  # a 冲正's compensating entry posted, accumulators and reversal row not yet
        "add_accumulators:2",  # a 冲正's entry and accumulator decrease written, reversal row not yet
        "store_reply:3",  # a 冲正's reversal row written, reply not stored under its msgid
    ],
)
def test_kill_at_injected_point_then_replay(
    prepared: tuple[str, Path, Engine], crash_at: str, reference: dict[str, tuple[int, int, int, str]]
) -> None:
    db_url, requests_file, db = prepared
    crashed = run_worker(db_url, requests_file, crash_at=crash_at)
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr[-2000:])
    assert "DONE" not in crashed.lines and 0 < len(crashed.acks) < len(REQUESTS)
    recovered = run_worker(db_url, requests_file)
    check_recovered(db, [crashed, recovered])
    assert _money(db) == reference  # as if it had never crashed


def test_kill_under_load_at_random_moments(prepared: tuple[str, Path, Engine]) -> None:
    """Four threads; killed from outside, then the first recovery killed too; the second completes."""
    db_url, requests_file, db = prepared
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    first = run_and_kill(db_url, requests_file, rng, threads=4, after_acks=rng.randint(2, 14))
    second = run_and_kill(db_url, requests_file, rng, threads=4, after_acks=rng.randint(14, 26))
    final = run_worker(db_url, requests_file, threads=4)
    assert first.returncode == -signal.SIGKILL, f"seed {seed}: {first.stderr[-2000:]}"
    answered = check_recovered(db, [first, second, final])
    assert sum(v != "-" for v in answered.values()) >= 28, f"seed {seed}"
