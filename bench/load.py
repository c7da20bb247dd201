"""Full outpatient settlements over HTTP against a running gateway (loopback only).

    .venv/bin/python bench/load.py [--db sqlite|postgresql|both] [--seconds 10] [--concurrency 1,8,32]
        [--server-workers 2] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Starts `yibao serve` on a free 127.0.0.1 port against a fresh database populated
like bench/service.py (e-voucher credentials), signs in, and has each client
thread run 2201 (register) → 2204 (20 fee lines) → 2207 (settle) in a loop for
--seconds. Reports settlements/s and the p50/p99 of one settlement's three calls.
Every loop is bounded in time; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import service as svc_bench
from yibao.db import upgrade
from yibao.gateway import GATEWAY_PATH, sign
from yibao.service.apikeys import issue_api_key

ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class His:
    def __init__(self, base: str, key: str, secret: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)
        self.key, self.secret = key, secret
        self.sign_no = ""
        self.seq = itertools.count(1)
        self.tag = f"{os.getpid() % 10000:04d}{threading.get_ident() % 10000:04d}"

    def call(self, infno: str, data: dict[str, Any]) -> dict[str, Any]:
        fields = {"_api_access_key": self.key, "_api_name": "bench", "_api_timestamp": str(int(time.time() * 1000)),
                  "_api_version": "1.0.0"}  # fmt: skip
        headers = {**fields, "_api_signature": sign(self.secret, fields)}
        envelope = {"infno": infno, "msgid": f"B{self.tag}{next(self.seq):010d}{int(time.time())}",
                    "fixmedins_code": svc_bench.INST, "mdtrtarea_admvs": "210600", "insuplc_admdvs": "210600",
                    "opter": "001", "opter_name": "bench", "sign_no": self.sign_no, "input": data,
                    "inf_time": dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        body: dict[str, Any] = self.http.post(GATEWAY_PATH, json=envelope, headers=headers).json()
        return body


def settle_once(his: His, psn: str, payload: dict[str, Any]) -> bool:
    cred = {"mdtrt_cert_type": "01", "mdtrt_cert_no": f"E{psn}"}
    reg = his.call("2201", {"data": {**cred, "psn_no": psn, "insutype": "310", "begntime": payload["begntime"]}})
    if reg["infcode"] != 0:
        return False
    mdtrt_id = reg["output"]["data"]["mdtrt_id"]
    lines = [{**line, "mdtrt_id": mdtrt_id, "med_list_codg": line["hilist_code"]} for line in payload["feedetail"]]
    if his.call("2204", {"feedetail": lines})["infcode"] != 0:
        return False
    done = his.call("2207", {"data": {"psn_no": psn, "mdtrt_id": mdtrt_id, "acct_used_flag": "1"}})
    return bool(done["infcode"] == 0)


def drive(base: str, key: str, secret: str, clients: int, seconds: float) -> dict[str, Any]:
    payload = svc_bench.bill()
    payload["begntime"] = dt.date.today().strftime("%Y-%m-%d") + " 09:00:00"
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop = time.time() + seconds

    def client(c: int) -> None:
        his = His(base, key, secret)
        his.sign_no = his.call("9001", {"signIn": {"opter": f"b{c}"}})["output"]["signinoutb"]["sign_no"]
        i = 0
        while time.time() < stop:
            psn = f"B{(c * svc_bench.PERSONS_PER_WORKER + i % svc_bench.PERSONS_PER_WORKER):07d}"
            t0 = time.perf_counter()
            ok = settle_once(his, psn, payload)
            with lock:
                latencies.append(time.perf_counter() - t0)
                failures[0] += 0 if ok else 1
            i += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 100 else [latencies[-1]] * 99
    return {"clients": clients, "settlements": len(latencies) - failures[0], "failures": failures[0],
            "per_s": round((len(latencies) - failures[0]) / seconds, 1),
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            db, cleanup = svc_bench.database(kind, args.pg_url, Path(tmp))
            upgrade(db)
            svc_bench.populate(db, svc_bench.PERSONS_PER_WORKER * max(levels))
            key, secret = issue_api_key(db, svc_bench.INST, clock=dt.datetime.now)
            url = db.url.render_as_string(hide_password=False)
            db.dispose()
            port = _port()
            server = subprocess.Popen(
                [str(ROOT / ".venv/bin/yibao"), "serve", "--port", str(port), "--workers", str(args.server_workers),
                 "--database-url", url],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            try:
                deadline = time.time() + 60
                while time.time() < deadline:
                    try:
                        httpx.get(f"{base}/docs", timeout=1)
                        break
                    except httpx.HTTPError:
                        time.sleep(0.3)
                for clients in levels:
                    row = drive(base, key, secret, clients, args.seconds)
                    print(f"{kind:<11} server-workers={args.server_workers} clients={clients:<3} "
                          f"{row['per_s']:>7.1f}/s  "
                          f"p50 {row['p50_ms']:>7.1f} ms  p99 {row['p99_ms']:>7.1f} ms  "
                          f"({row['settlements']} settled, {row['failures']} failed)", flush=True)  # fmt: skip
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
                if cleanup is not None:
                    admin, name = cleanup
                    from sqlalchemy import text

                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    admin.dispose()


if __name__ == "__main__":
    main()
