"""Throughput of the settlement engine on one core.

    .venv/bin/python bench/engine.py [--seconds N] [--rounds R] [--json] [--profile]

Loads the bundled policies and the demo catalogue once, builds two fixed bills
(no randomness, the same bytes on every run) and measures, in this process,
settlements per second for three cases:

* ``settle``      — ``Engine.settle(request)`` on an already-parsed request;
* ``parse+settle`` — ``parse_request(dict)`` then ``settle`` (the dict is already decoded JSON);
* ``full``        — parse + settle + ``to_json(trace=False)`` + ``json.dumps``.

Each case is warmed up, then run for ``--seconds`` split into ``--rounds`` rounds;
the figure reported is the median of the rounds' rates, plus the mean time per
settlement over all rounds. ``--profile`` runs case ``settle`` of the outpatient
bill under cProfile instead and prints the hot spots.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from yibao.catalog import Catalog, CatalogItem, load_demo_catalog
from yibao.engine import Engine, SettlementResult, parse_request
from yibao.policy import PolicyStore

#: The issue's target for case ``settle`` of the outpatient bill.
TARGET_OUTPATIENT_SETTLE_PER_S = 20_000


# -- the bills -------------------------------------------------------------------------------------------------------
def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _line(sn: int, code: str, cnt: int, price_fen: int, **extra: Any) -> dict[str, Any]:
    """One fee line; the amount is exactly price × integer count, as parse_request checks."""
    return {
        "feedetl_sn": str(sn),
        "hilist_code": code,
        "cnt": str(cnt),
        "pric": _yuan(price_fen),
        "det_item_fee_sumamt": _yuan(price_fen * cnt),
        **extra,
    }


#: Outpatient visit (门诊统筹), 福州 employee in service at a level-2 hospital.
#: (code, count, price in fen or None for the catalogue's demo price, extra fields, role)
_OUTPATIENT_LINES: tuple[tuple[str, int, int | None, dict[str, Any], str], ...] = (
    ("002503020010000", 1, None, {}, "甲类 葡萄糖测定"),
    ("002503020030000", 1, 5500, {}, "乙类 20% 糖化血红蛋白测定, priced 55.00 over its 50.00 cap"),
    ("002503040010100", 1, None, {}, "乙类 10% 钾测定"),
    ("002503040020000", 1, None, {}, "甲类 钠测定"),
    ("002503040040000", 1, None, {}, "乙类 8% 钙测定"),
    ("002503040050000", 1, None, {}, "乙类 20% 无机磷测定"),
    ("002503100230000", 1, None, {}, "乙类 20% 醛固酮测定, priced under its cap"),
    ("002503100390200", 1, None, {}, "甲类 血清胰岛素测定"),
    ("002503100410100", 1, None, {}, "甲类 血清C肽测定"),
    ("002503020020000", 1, None, {}, "甲类 血清果糖胺测定"),
    ("002501030010000", 1, None, {}, "甲类 粪便常规"),
    ("002502020070000", 1, None, {}, "甲类 红细胞渗透脆性试验"),
    ("003107010220000", 1, None, {}, "甲类 心电监测"),
    ("003102050010100", 1, None, {}, "甲类 葡萄糖耐量试验"),
    ("003102050040100", 1, None, {}, "乙类 5% 胰岛素释放试验"),
    ("002101030300000", 1, None, {}, "restricted: 子宫造影 is 限女性, the patient is male -> 全自费"),
    ("XN07XXD130E002010102774", 2, None, {"hosp_appr_flag": "1", "course_day": 3}, "乙类 20% 丁苯酞, 限定支付 met"),
    ("ZA12HAS0775010100142", 3, None, {"hosp_appr_flag": "1"}, "乙类 5% 舒血宁注射液, level-2+ only"),
    ("ZA12HAG0369010102729", 2, None, {"hosp_appr_flag": "1"}, "乙类 20% 冠心宁注射液, level-2+ only"),
    ("001309000010000", 1, None, {}, "丙类 健康咨询 -> 全自费"),
)


def _demo_price(catalog: Catalog, code: str, region: str, date: dt.date) -> int:
    item = catalog.lookup(code, region, date)
    if item is None or item.demo_pric_fen is None:
        raise SystemExit(f"bench: catalogue has no demo price for {code} in {region} on {date}")
    price: int = item.demo_pric_fen
    return price


def outpatient_bill(catalog: Catalog) -> dict[str, Any]:
    """20 lines, 福州 (350100) employee outpatient pooling, med_type 11."""
    region, date = "350100", dt.date(2025, 4, 15)
    lines = [
        _line(i + 1, code, cnt, price if price is not None else _demo_price(catalog, code, region, date), **extra)
        for i, (code, cnt, price, extra, _role) in enumerate(_OUTPATIENT_LINES)
    ]
    return {
        "psn_no": "35010000000000000058",
        "gend": "1",
        "age": 58,
        "insutype": "310",
        "psn_type": "1101",
        "med_type": "11",
        "hosp_lv": "05",
        "insuplc_admdvs": region,
        "mdtrtarea_admvs": region,
        "begntime": f"{date.isoformat()} 09:30:00",
        "acct_used_flag": "1",
        "feedetail": lines,
        "accumulators": {
            "year": date.year,
            "values": {
                "outpatient_pooling.visit_cnt": 3,
                "outpatient_pooling.dedc_amt": "600.00",
                "outpatient_pool.fund_amt": "1260.00",
            },
        },
        "accounts": {
            "current_year": "120.00",
            "historical": "260.00",
            "family": [{"psn_no": "35010000000000000061", "relation": "spouse", "current_year": "500.00"}],
        },
    }


def _payable_for(item: CatalogItem, gend: str, age: int) -> bool:
    """Would a line of ``item`` pass every restriction for this person in an employee inpatient stay?"""
    return (
        item.chrgitm_lv != "03"
        and item.lmt_gend in (None, gend)
        and (item.lmt_age_min is None or age >= item.lmt_age_min)
        and (item.lmt_age_max is None or age <= item.lmt_age_max)
        and (item.lmt_insutypes is None or "310" in item.lmt_insutypes)
        and (item.lmt_med_types is None or "21" in item.lmt_med_types)
    )


def inpatient_bill(catalog: Catalog) -> dict[str, Any]:
    """200 lines, 天津 (120000) employee inpatient, med_type 21, hosp_lv 02 (level 3).

    186 payable lines are every payable catalogue code in code order (the list is
    cycled if ever short); 14 more are 全自费 for a reason (丙类, the other sex, a child-only
    item, another insutype's item). Items under 100 yuan are billed 1..4 times, the rest
    once. The large-expense layer (大额医疗费用补助) applies: what the basic fund leaves
    is well over the rest of its 22000-yuan deductible.
    """
    region, date, gend, age = "120000", dt.date(2025, 5, 20), "2", 66
    payable: list[CatalogItem] = []
    refused: list[CatalogItem] = []
    for code in sorted(catalog.codes()):
        item = catalog.lookup(code, region, date)
        if item is None or item.demo_pric_fen is None:
            continue
        (payable if _payable_for(item, gend, age) else refused).append(item)
    chosen = [payable[i % len(payable)] for i in range(186)]
    # A fixed stride over the refused rows: a spread of 丙类 / 限男性 / children-only / other-insutype items.
    chosen += refused[:: max(1, len(refused) // 14)][:14]
    lines = []
    for i, item in enumerate(chosen):
        extra: dict[str, Any] = {}
        if item.lmt_indication:
            extra["hosp_appr_flag"] = "1"
        if item.lmt_course_days is not None:
            extra["course_day"] = 3
        count = 1 + i % 4 if item.demo_pric_fen < 100_00 else 1  # cheap items several times, the rest once
        lines.append(_line(i + 1, item.hilist_code, count, item.demo_pric_fen, **extra))
    return {
        "psn_no": "12000000000000000066",
        "gend": gend,
        "age": age,
        "insutype": "310",
        "psn_type": "1201",
        "med_type": "21",
        "hosp_lv": "02",
        "insuplc_admdvs": region,
        "mdtrtarea_admvs": region,
        "begntime": f"{date.isoformat()} 08:00:00",
        "acct_used_flag": "1",
        "feedetail": lines,
        "accumulators": {
            "year": date.year,
            "values": {
                "inpatient.visit_cnt": 1,
                "employee_pool.fund_amt": "18400.00",
                "large_expense.dedc_amt": "4000.00",
            },
        },
        "accounts": {"current_year": "600.00", "historical": "3400.00"},
    }


def _check_outpatient(r: SettlementResult) -> None:
    """The outpatient bill exercises what it claims to; fails loudly if the catalogue changes."""
    assert len(r.lines) == 20
    assert sum(1 for s in r.lines if s.overlmt_fen) == 1, "exactly one line over its price cap"
    assert sum(1 for s in r.lines if s.preselfpay_fen and s.chrgitm_lv == "02") >= 5, "乙类 self-pay-first lines"
    assert any(s.reasons and s.chrgitm_lv != "03" for s in r.lines), "a line refused by a restriction"
    assert any(s.indication and not s.reasons for s in r.lines), "a restricted-use line that is paid"
    assert r.funds["hifp_pay"] > 0 and r.act_pay_dedc > 0, "the outpatient pool applies with a deductible"


def _check_inpatient(r: SettlementResult) -> None:
    assert len(r.lines) == 200
    assert r.funds["hifp_pay"] > 0
    assert r.funds["hifob_pay"] > 0, "the large-expense layer (hifob_pay) pays"
    assert any(s.overlmt_fen for s in r.lines) and any(s.preselfpay_fen for s in r.lines)
    assert sum(1 for s in r.lines if s.reasons) >= 10


# -- measuring --------------------------------------------------------------------------------------------------------
def _policies_dir() -> Path:
    return Path(str(resources.files("yibao").joinpath("data/policies")))


def _calibrate(fn: Callable[[], object], target_s: float = 0.02) -> int:
    """Calls per timed batch, so the clock is read about every ``target_s`` seconds."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 >= target_s:
            return n
        n *= 2


def measure(fn: Callable[[], object], seconds: float, rounds: int, warmup_s: float) -> dict[str, Any]:
    batch = _calibrate(fn)
    deadline = time.perf_counter() + warmup_s
    while time.perf_counter() < deadline:
        for _ in range(batch):
            fn()
    per_round = seconds / rounds
    rates, total_calls, total_time = [], 0, 0.0
    for _ in range(rounds):
        calls, elapsed = 0, 0.0
        while elapsed < per_round:
            t0 = time.perf_counter()
            for _ in range(batch):
                fn()
            elapsed += time.perf_counter() - t0
            calls += batch
        rates.append(calls / elapsed)
        total_calls += calls
        total_time += elapsed
    return {
        "per_s_median": statistics.median(rates),
        "per_s_min": min(rates),
        "per_s_max": max(rates),
        "us_mean": total_time / total_calls * 1e6,
        "calls": total_calls,
        "rounds": [round(r, 1) for r in rates],
    }


def _pin_one_core() -> int | None:
    """Pin the process to one CPU where the OS allows it (Linux); returns the CPU."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine skews the figures."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def _source() -> dict[str, Any]:
    """Which yibao is measured: its directory and, if it sits in a git work tree, commit and local changes."""
    import yibao

    where = Path(yibao.__file__).resolve().parent
    info: dict[str, Any] = {"path": str(where), "commit": None, "modified_files": None}
    try:
        git = ["git", "--no-optional-locks", "-C", str(where)]
        info["commit"] = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        check=True, timeout=5).stdout.strip()  # fmt: skip
        status = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True,
                                check=True, timeout=5).stdout  # fmt: skip
        info["modified_files"] = len(status.splitlines())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _cases(engine: Engine, data: dict[str, Any]) -> dict[str, Callable[[], object]]:
    settle, parse, dumps = engine.settle, parse_request, json.dumps
    request = parse(data)

    def settle_only() -> object:
        return settle(request)

    def parse_settle() -> object:
        return settle(parse(data))

    def full() -> object:
        return dumps(settle(parse(data)).to_json(trace=False), ensure_ascii=False)

    return {"settle": settle_only, "parse+settle": parse_settle, "full": full}


def _profile(engine: Engine, data: dict[str, Any], seconds: float, top: int) -> None:
    fn = _cases(engine, data)["settle"]
    for _ in range(2000):  # warm up outside the profile
        fn()
    calls = 0
    profiler = cProfile.Profile()
    deadline = time.perf_counter() + seconds
    profiler.enable()
    while time.perf_counter() < deadline:
        for _ in range(200):
            fn()
        calls += 200
    profiler.disable()
    print(f"cProfile: case 'settle', outpatient bill (20 lines), {calls} settlements; yibao from {_source()['path']}")
    print("note: pstats keys functions by file:line:name, so the generated constructors of all dataclasses")
    print("('<string>:2(__init__)') and of all NamedTuples ('<string>:1(<lambda>)') share one row each, in which")
    print("only one class's figures survive; the other classes' construction time is in no row (cumtime is right).\n")
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(top)
        print(f"--- sorted by {key} (top {top}) ---")
        print(out.getvalue().split("\n", 4)[-1].rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=3.0, help="measured time per case (default 3)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per case; the median is reported (default 5)")
    ap.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per case (default 0.5)")
    ap.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ap.add_argument("--profile", action="store_true", help="profile case 'settle' of the outpatient bill")
    ap.add_argument("--top", type=int, default=30, help="rows of each profile listing (default 30)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1:
        ap.error("--seconds must be > 0 and --rounds >= 1")

    cpu = None if args.no_pin else _pin_one_core()
    t0 = time.perf_counter()
    engine = Engine(PolicyStore.load_dir(_policies_dir()), load_demo_catalog())
    load_s = time.perf_counter() - t0
    bills = {"outpatient": outpatient_bill(engine.catalog), "inpatient": inpatient_bill(engine.catalog)}
    results = {name: engine.settle(parse_request(data)) for name, data in bills.items()}
    _check_outpatient(results["outpatient"])
    _check_inpatient(results["inpatient"])

    if args.profile:
        _profile(engine, bills["outpatient"], args.seconds, args.top)
        return 0

    load_before = _loadavg()
    rows: list[dict[str, Any]] = []
    for name, data in bills.items():
        for case, fn in _cases(engine, data).items():
            if not args.json:
                print(f"  measuring {name} / {case} …", file=sys.stderr, flush=True)
            rows.append({"bill": name, "lines": len(data["feedetail"]), "case": case,
                         **measure(fn, args.seconds, args.rounds, args.warmup)})  # fmt: skip

    load_after = _loadavg()
    outpatient_settle = next(r for r in rows if r["bill"] == "outpatient" and r["case"] == "settle")
    setlinfo = {name: result.to_json(trace=False)["setlinfo"] for name, result in results.items()}
    report: dict[str, Any] = {
        "benchmark": "bench/engine.py",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {**_machine(), "pinned_cpu": cpu, "loadavg_before": load_before, "loadavg_after": load_after},
        "yibao": _source(),
        "settings": {"seconds_per_case": args.seconds, "rounds": args.rounds, "warmup_s": args.warmup},
        "load_s": round(load_s, 3),
        "bills": {
            name: {
                "lines": len(data["feedetail"]),
                "region": data["insuplc_admdvs"],
                "med_type": data["med_type"],
                "medfee_sumamt": setlinfo[name]["medfee_sumamt"],
                "fund_pay_sumamt": setlinfo[name]["fund_pay_sumamt"],
                "payments": {k: v for k, v in setlinfo[name].items() if k.endswith("_pay") and v != "0.00"},
            }
            for name, data in bills.items()
        },
        "results": rows,
        "target": {
            "case": "outpatient/settle",
            "per_s": TARGET_OUTPATIENT_SETTLE_PER_S,
            "measured_per_s": round(outpatient_settle["per_s_median"], 1),
            "met": outpatient_settle["per_s_median"] >= TARGET_OUTPATIENT_SETTLE_PER_S,
        },
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0

    m, src = report["machine"], report["yibao"]
    print(f"\nyibao engine benchmark — {m['cpu']}, Python {m['python']}, pinned to CPU {cpu}")
    dirty = "" if not src["modified_files"] else f", {src['modified_files']} files modified"
    print(f"yibao from {src['path']} (git {src['commit'] or 'n/a'}{dirty})")
    print(f"load average before {m['loadavg_before']}, after {m['loadavg_after']} (1/5/15 min)")
    print(f"policies + catalogue loaded in {load_s * 1000:.0f} ms; {args.rounds} rounds × "
          f"{args.seconds / args.rounds:.2f} s per case, median rate reported\n")  # fmt: skip
    header = f"{'bill':<11} {'lines':>5}  {'case':<13} {'settlements/s':>13}  {'min–max /s':>17}  {'mean µs':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        spread = f"{r['per_s_min']:,.0f}–{r['per_s_max']:,.0f}"
        print(f"{r['bill']:<11} {r['lines']:>5}  {r['case']:<13} {r['per_s_median']:>13,.0f}  {spread:>17}  "
              f"{r['us_mean']:>9,.1f}")  # fmt: skip
    t = report["target"]
    verdict = "met" if t["met"] else "NOT met"
    print(f"\ntarget ≥ {t['per_s']:,} outpatient settlements/s (case settle): {verdict}, {t['measured_per_s']:,.0f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
