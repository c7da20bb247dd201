"""Settlements per second through the service layer (no HTTP), SQLite and PostgreSQL.

    .venv/bin/python bench/service.py [--seconds 5] [--workers 1,8,32] [--db sqlite|postgresql|both]
        [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--processes 1]
        [--in-flight N] [--profile]

Each worker thread settles a 20-line outpatient bill (Dandong employee outpatient
pooling, account used) for its own share of 1,600 persons, each settlement a full
unit of work: credential, gates, locks, engine, journal entry, accumulators,
idempotency record. Every person is settled once before measuring. Reports
settlements/s, p50/p99 latency and CPU per settlement (Python; PostgreSQL server
processes) per worker count. ``--processes`` spreads the workers over processes;
``--in-flight`` admits at most N units of work at once per process (service.admission).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import multiprocessing
import os
import pstats
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, insert, make_url, text

from yibao import Engine as SettlementEngine
from yibao import PolicyStore, ledger, load_demo_catalog
from yibao.db import make_engine, upgrade
from yibao.db import repository as repo
from yibao.db import schema as S
from yibao.idcard import check_digit
from yibao.service.admission import limit_units_of_work
from yibao.service.credentials import Credential, hash_pin
from yibao.service.settlement import SettleCommand, SettlementService
from yibao.service.uow import transact

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2025, 3, 1, 9, 0)
INST = "H21060000001"
#: Insured persons in the bench region. Every worker count settles over all of them (worker w
#: takes persons w, w + W, w + 2W, …), each person settled once before measuring: so runs
#: differ in concurrency only, not in how hot the rows are or how many first-of-year
#: settlements (deductible, new accumulator rows) they make.
PERSONS = 1600


def bill() -> dict[str, Any]:
    """A 20-line outpatient bill from the demo catalogue (unrestricted items, 甲/乙类)."""
    import csv

    rows = [
        r
        for r in csv.DictReader((ROOT / "src/yibao/data/catalog/demo.csv").open(encoding="utf-8"))
        if not r["admdvs"] and not r["enddate"] and r["demo_pric"] and r["chrgitm_lv"] != "03"
        and not any(r[k] for k in ("lmt_med_types", "lmt_gend", "lmt_age_min", "lmt_age_max", "lmt_hosp_lv_min"))
    ][:20]  # fmt: skip
    lines = []
    for i, r in enumerate(rows):
        fen = int(r["demo_pric"].replace(".", "")) * 2
        lines.append({"feedetl_sn": str(i + 1), "hilist_code": r["hilist_code"], "cnt": "2", "pric": r["demo_pric"],
                      "det_item_fee_sumamt": f"{fen // 100}.{fen % 100:02d}"})  # fmt: skip
    return {"insutype": "310", "med_type": "11", "begntime": "2025-03-01 09:00:00", "acct_used_flag": "1",
            "feedetail": lines}  # fmt: skip


def machine_speed(engine: SettlementEngine, payload: dict[str, Any], seconds: float = 0.5) -> float:
    """µs of CPU for one parse + settle of the bench bill in the engine: the machine's speed right now.

    This VM's speed varies over time (the host is shared): figures taken minutes apart can
    differ by half. Printed beside each run so that runs can be compared.
    """
    from yibao.engine import parse_request

    request = {**payload, "psn_no": "B0000000", "gend": "1", "age": 67, "psn_type": "1201", "hosp_lv": "08",
               "insuplc_admdvs": "210600", "mdtrtarea_admvs": "210600",
               "accounts": {"current_year": "100.00", "historical": "0.00", "family": []}}  # fmt: skip
    count, started = 0, time.process_time()
    while time.process_time() - started < seconds:
        engine.settle(parse_request(request))
        count += 1
    return (time.process_time() - started) / count * 1e6


def populate(db: Engine, persons: int) -> None:
    pin = hash_pin("654321")

    def work(conn: Connection) -> None:
        conn.execute(insert(S.regions).values(code="210600", name="丹东市", parent_code=None))
        conn.execute(insert(S.institutions).values(
            fixmedins_code=INST, name="丹东市第一医院", kind="hospital", hosp_lv="08", admdvs="210600",
            designated=True, valid_from=dt.date(2020, 1, 1), valid_to=None, networked=True))  # fmt: skip
        for n in range(persons):
            psn = f"B{n:07d}"
            first17 = f"210602195801{(n % 28) + 1:02d}{(2 * n + 1) % 1000:03d}"
            certno = first17 + check_digit(first17)
            conn.execute(insert(S.persons).values(psn_no=psn, name=f"参保人{n}", certno=certno, gend="1",
                                                  brdy=dt.date(1958, 1, (n % 28) + 1), admdvs="210600"))  # fmt: skip
            conn.execute(insert(S.enrolments).values(psn_no=psn, insutype="310", psn_type="1201", admdvs="210600",
                                                     begn_date=dt.date(2015, 1, 1)))  # fmt: skip
            # E-voucher (医保电子凭证): the app has authenticated the person, so no PIN is verified here;
            # an Argon2id PIN check costs ~20 ms of CPU and is measured separately.
            conn.execute(insert(S.credentials).values(psn_no=psn, kind="evoucher", number=f"E{psn}", card_sn=None,
                                                      status="active", created_at=NOW,
                                                      expires_at=NOW + dt.timedelta(days=3650)))  # fmt: skip
            conn.execute(insert(S.pins).values(psn_no=psn, pin_hash=pin, must_change=False, failed_attempts=0,
                                               locked=False, updated_at=NOW))  # fmt: skip
            repo.post_entry(conn, ledger.contribution_entry(
                kind="employee_monthly", ref=f"seed-{psn}", psn_no=psn, admdvs="210600", fund_pay_type="310100",
                amount_fen=10**8, account_fen=10**7), NOW)  # fmt: skip

    transact(db, work)


def _threads(svc: SettlementService, ids: list[int], workers: int, start_at: float, seconds: float,
             payload: dict[str, Any], tag: str) -> tuple[list[float], int]:  # fmt: skip
    """Run one thread per worker id (of ``workers``) between wall-clock start_at and start_at + seconds."""
    latencies: list[list[float]] = [[] for _ in ids]
    errors = [0] * len(ids)
    stop = start_at + seconds
    per_worker = PERSONS // workers

    def worker(slot: int, w: int) -> None:
        # Its persons in a fixed random order: consecutive settlements touch unrelated rows,
        # as in a region (a worker walking its persons in key order would find them cached).
        mine = [f"B{w + k * workers:07d}" for k in range(per_worker)]
        random.Random(w).shuffle(mine)
        time.sleep(max(0.0, start_at - time.time()))
        i = 0
        while time.time() < stop:
            psn = mine[i % per_worker]
            cmd = SettleCommand(f"{tag}{w:03d}{i:09d}", INST, Credential("01", f"E{psn}"), payload)
            t0 = time.perf_counter()
            try:
                svc.settle(cmd)
            except Exception:  # counted, reported: a benchmark must not die on one refusal
                errors[slot] += 1
            latencies[slot].append(time.perf_counter() - t0)
            i += 1

    threads = [threading.Thread(target=worker, args=(slot, w)) for slot, w in enumerate(ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for per in latencies for x in per], sum(errors)


def _child(url: str, ids: list[int], workers: int, start_at: float, seconds: float, payload: dict[str, Any],
           tag: str, in_flight: int | None, cpu: int | None) -> tuple[list[float], int, float]:  # fmt: skip
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    engine = SettlementEngine(PolicyStore.load_dir(ROOT / "src/yibao/data/policies"), load_demo_catalog())
    db = make_engine(url, pool_size=len(ids) + 2)
    limit_units_of_work(db, in_flight)
    try:
        svc = SettlementService(db, engine, clock=lambda: NOW)
        cpu = _cpu_between(start_at)
        flat, errors = _threads(svc, ids, workers, start_at, seconds, payload, tag)
        cpu = time.process_time() - cpu
        time.sleep(0.5)  # keep the server's backends (and their CPU counters) alive until the parent reads them
        return flat, errors, cpu
    finally:
        db.dispose()


def _cpu_between(start_at: float) -> float:
    """This process's CPU clock at wall-clock ``start_at`` (sleeping until then)."""
    time.sleep(max(0.0, start_at - time.time()))
    return time.process_time()


def cpu_ticks(*, comm: bytes | None = None, pgid: int | None = None) -> int:
    """utime + stime, in clock ticks, of every live process with this command name (``comm``)
    or in this process group (``pgid``)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if comm is not None:
                with open(f"/proc/{entry}/comm", "rb") as f:
                    if f.read().strip() != comm:
                        continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # fields[0] is the state, [2] the group
        except OSError:
            continue
        if pgid is None or int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total


def _server_ticks() -> int:
    """CPU of every PostgreSQL process on this machine."""
    return cpu_ticks(comm=b"postgres")


def warm_up(svc: SettlementService, payload: dict[str, Any]) -> None:
    """Settle every person once (their first settlement of the year), four at a time."""
    tag = uuid.uuid4().hex[:6]

    def first(n: int) -> None:
        svc.settle(SettleCommand(f"{tag}W{n:09d}", INST, Credential("01", f"EB{n:07d}"), payload))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(first, range(PERSONS)))


def profile_sequential(svc: SettlementService, seconds: float, payload: dict[str, Any]) -> None:
    """cProfile of settlements one after another in this thread (threads would hide the work)."""
    tag = uuid.uuid4().hex[:6]
    profiler = cProfile.Profile()
    stop = time.time() + seconds
    i = 0
    profiler.enable()
    while time.time() < stop:
        psn = f"B{i % PERSONS:07d}"
        svc.settle(SettleCommand(f"{tag}P{i:09d}", INST, Credential("01", f"E{psn}"), payload))
        i += 1
    profiler.disable()
    print(f"profiled {i} settlements (one at a time, under cProfile)", file=sys.stderr)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(20)


def run(db: Engine, svc: SettlementService, workers: int, seconds: float, payload: dict[str, Any],
        processes: int = 1, in_flight: int | None = None, pin: bool = False) -> dict[str, Any]:  # fmt: skip
    """Settle for ``seconds`` with ``workers`` concurrent callers spread over ``processes`` processes,
    each process admitting at most ``in_flight`` units of work at once (None: all); with ``pin``
    process k runs on CPU k only."""
    tag = uuid.uuid4().hex[:6]
    procs = max(1, min(processes, workers))
    if procs == 1:
        limit_units_of_work(db, in_flight)
        ticks, cpu = _server_ticks(), time.process_time()
        flat, errors = _threads(svc, list(range(workers)), workers, time.time(), seconds, payload, tag)
        client_cpu, server_ticks = time.process_time() - cpu, _server_ticks()
    else:
        url = db.url.render_as_string(hide_password=False)
        groups = [list(range(workers))[k::procs] for k in range(procs)]
        start_at = time.time() + 4.0  # let every process load policies and connect first
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=procs, mp_context=ctx) as pool:
            cpus = sorted(os.sched_getaffinity(0))
            futures = [pool.submit(_child, url, ids, workers, start_at, seconds, payload, tag, in_flight,
                                   cpus[k % len(cpus)] if pin else None)
                       for k, ids in enumerate(groups)]  # fmt: skip
            time.sleep(max(0.0, start_at - time.time()))
            ticks = _server_ticks()
            time.sleep(max(0.0, start_at + seconds + 0.2 - time.time()))
            server_ticks = _server_ticks()
            outcomes = [f.result() for f in futures]
        flat = [x for lat, _, _ in outcomes for x in lat]
        errors = sum(e for _, e, _ in outcomes)
        client_cpu = sum(c for _, _, c in outcomes)
    server_cpu = (server_ticks - ticks) / os.sysconf("SC_CLK_TCK")
    flat.sort()
    q = statistics.quantiles(flat, n=100) if len(flat) >= 100 else [flat[-1]] * 99
    return {
        "workers": workers,
        "processes": procs,
        "settlements": len(flat),
        "errors": errors,
        "per_s": round(len(flat) / seconds, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "python_cpu_ms": round(client_cpu * 1000 / max(1, len(flat)), 3),
        "server_cpu_ms": round(server_cpu * 1000 / max(1, len(flat)), 3),
    }


def database(kind: str, pg_url: str, tmp: Path) -> tuple[Engine, Any]:
    if kind == "sqlite":
        return make_engine(f"sqlite:///{tmp / 'bench.db'}", pool_size=40), None
    name = f"yibao_bench_{os.getpid()}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    return make_engine(url, pool_size=40), (admin, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", default="1,8,32")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--profile", action="store_true", help="cProfile settlements one at a time")
    parser.add_argument("--processes", type=int, default=1, help="spread the workers over this many processes")
    parser.add_argument("--in-flight", type=int, default=None,
                        help="admit at most this many units of work at once per process (default: no limit)")
    parser.add_argument("--pin", action="store_true",
                        help="run worker process k on CPU k only (with --processes)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    engine = SettlementEngine(PolicyStore.load_dir(ROOT / "src/yibao/data/policies"), load_demo_catalog())
    payload = bill()
    print(f"machine speed: engine parse + settle of the bill {machine_speed(engine, payload):.0f} µs", flush=True)
    results = []
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            db, cleanup = database(kind, args.pg_url, Path(tmp))
            upgrade(db)
            populate(db, PERSONS)
            svc = SettlementService(db, engine, clock=lambda: NOW)
            warm_up(svc, payload)
            for workers in counts:
                if args.profile and workers == counts[0]:
                    profile_sequential(svc, args.seconds, payload)
                    continue
                row = run(db, svc, workers, args.seconds, payload, args.processes, args.in_flight, args.pin)
                row["db"] = kind
                results.append(row)
                print(f"{kind:<11} workers={workers:<3} processes={row['processes']:<2} "
                      f"{row['per_s']:>8.1f}/s  p50 {row['p50_ms']:>7.2f} ms  "
                      f"p99 {row['p99_ms']:>7.2f} ms  ({row['settlements']} settlements, {row['errors']} errors)",
                      flush=True)  # fmt: skip
                server = f", PostgreSQL {row['server_cpu_ms']:.2f} ms" if kind == "postgresql" else ""
                print(f"{'':<11} CPU per settlement: Python {row['python_cpu_ms']:.2f} ms{server}", flush=True)
            db.dispose()
            if cleanup is not None:
                admin, name = cleanup
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
