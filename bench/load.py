"""Full outpatient settlements over HTTP against a running gateway (loopback only).

    .venv/bin/python bench/load.py [--db sqlite|postgresql|both] [--seconds 10] [--concurrency 1,8,32]
        [--server-workers 2] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--cpu]
        [--client-processes 1]

Starts `yibao serve` on a free 127.0.0.1 port against a fresh database populated
like bench/service.py (e-voucher credentials), signs every client in, and has each
client run 2201 (register) → 2204 (20 fee lines) → 2207 (settle) in a loop for
--seconds. Reports settlements/s and the p50/p99 of one settlement's three calls;
--cpu adds the CPU time the server processes and this load generator spent per settlement.

The clients are cheap so that the load generator leaves the machine's cores to the
server: each is one keep-alive HTTP/1.1 connection over a plain socket (Content-Length
framing: the server is our own uvicorn), every request signed with fresh _api_* headers
as a HIS does, and all of them are driven by one thread waiting on a selector — no HTTP
library, no thread per client (0.2–0.7 ms of CPU per settlement). --client-processes
spreads the clients over several such processes, for machines with cores to spare.
Every loop is bounded in time; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
import json
import multiprocessing
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Generator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import service as svc_bench
from yibao.db import upgrade
from yibao.gateway import GATEWAY_PATH, sign
from yibao.service.apikeys import issue_api_key

ROOT = Path(__file__).resolve().parent.parent
#: A call unanswered for this long fails the client's settlement (and the run ends at the latest then).
TIMEOUT_S = 30.0
#: Each client settles for its own persons in rotation.
PERSONS_PER_CLIENT = 50
_MSGIDS = itertools.count(1)  # msgids unique across clients and concurrency levels of one run


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpError(Exception):
    """An answer that is not the gateway's HTTP 200."""


class His:
    """One HIS client: a keep-alive HTTP/1.1 connection to the gateway, signing every request."""

    def __init__(self, host: str, port: int, key: str, secret: str, *, fixmedins_code: str = svc_bench.INST) -> None:
        self.address = (host, port)
        self.key, self.secret = key, secret
        self.sign_no = ""
        self.tag = f"B{os.getpid() % 10000:04d}"
        self.head = (f"POST {GATEWAY_PATH} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
                     f"_api_access_key: {key}\r\n_api_name: bench\r\n_api_version: 1.0.0\r\n").encode()  # fmt: skip
        # The envelope's constant fields, encoded once.
        self.static = json.dumps({"fixmedins_code": fixmedins_code, "mdtrtarea_admvs": "210600",
                                  "insuplc_admdvs": "210600", "opter": "001", "opter_name": "bench"},
                                 ensure_ascii=False)[1:-1].encode()  # fmt: skip
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self._head_end = self._need = -1
        self._close_after = False

    def connect(self) -> socket.socket:
        self.close()
        sock = socket.create_connection(self.address, timeout=TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf.clear()
        self._head_end = self._need = -1

    def request(self, infno: str, data: dict[str, Any] | bytes) -> bytes:
        """The bytes of one signed request: fresh timestamp and signature, a new msgid."""
        now = time.time()
        fields = {"_api_access_key": self.key, "_api_name": "bench", "_api_timestamp": str(int(now * 1000)),
                  "_api_version": "1.0.0"}  # fmt: skip
        payload = data if isinstance(data, bytes) else orjson.dumps(data)
        body = b'{"infno":"%s","msgid":"%s%010d%d","sign_no":"%s","inf_time":"%s",%s,"input":%s}' % (
            infno.encode(), self.tag.encode(), next(_MSGIDS), int(now), self.sign_no.encode(),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)).encode(), self.static, payload,
        )  # fmt: skip
        return b"%s_api_timestamp: %s\r\n_api_signature: %s\r\ncontent-length: %d\r\n\r\n%s" % (
            self.head,
            fields["_api_timestamp"].encode(),
            sign(self.secret, fields).encode(),
            len(body),
            body,
        )

    def send(self, request: bytes) -> None:
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        self.sock.sendall(request)

    def receive(self) -> dict[str, Any] | None:
        """Read what the socket has; the answer once it is complete, else None."""
        assert self.sock is not None
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk
        if self._need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return None
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if not head.startswith(b"http/1.1 200 ") or at < 0:
                raise HttpError(head.split(b"\r\n", 1)[0].decode("latin-1"))
            line_end = head.find(b"\r\n", at + 17)
            length = int(head[at + 17 : line_end if line_end > 0 else len(head)])
            self._close_after = b"\r\nconnection: close" in head
            self._head_end, self._need = end + 4, end + 4 + length
        if len(self.buf) < self._need:
            return None
        answer: dict[str, Any] = orjson.loads(self.buf[self._head_end : self._need])
        del self.buf[: self._need]
        self._head_end = self._need = -1
        if self._close_after:
            self.close()
        return answer

    def call(self, infno: str, data: dict[str, Any]) -> dict[str, Any]:
        """One blocking call (sign-in, set-up)."""
        self.send(self.request(infno, data))
        while True:
            answer = self.receive()
            if answer is not None:
                return answer


#: A client's script: yields the request to send, is sent the answer.
Script = Generator[bytes, dict[str, Any], None]


def settlements(his: His, c: int, payload: dict[str, Any], stop: float,
                record: Callable[[float, bool], None]) -> Script:  # fmt: skip
    """2201 → 2204 → 2207 for the client's own persons until ``stop``; records each settlement's latency."""
    # The 20 fee lines encoded once; each visit only puts its mdtrt_id in.
    mark = "@@MDTRT@@"
    lines = [{**line, "mdtrt_id": mark, "med_list_codg": line["hilist_code"]} for line in payload["feedetail"]]
    fees = json.dumps({"feedetail": lines}, ensure_ascii=False).encode()
    i = 0
    while time.time() < stop:
        psn = f"B{(c * PERSONS_PER_CLIENT + i % PERSONS_PER_CLIENT):07d}"
        i += 1
        t0 = time.perf_counter()
        ok = False
        try:
            reg = yield his.request("2201", {"data": {"mdtrt_cert_type": "01", "mdtrt_cert_no": f"E{psn}",
                                                      "psn_no": psn, "insutype": "310",
                                                      "begntime": payload["begntime"]}})  # fmt: skip
            if reg["infcode"] == 0:
                mdtrt_id = reg["output"]["data"]["mdtrt_id"]
                up = yield his.request("2204", fees.replace(mark.encode(), mdtrt_id.encode()))
                if up["infcode"] == 0:
                    done = yield his.request("2207", {"data": {"psn_no": psn, "mdtrt_id": mdtrt_id,
                                                               "acct_used_flag": "1"}})  # fmt: skip
                    ok = done["infcode"] == 0
        except (OSError, HttpError, ValueError, LookupError, TypeError):  # a lost connection, an odd answer
            his.close()  # counted as a failed settlement; the next one reconnects
        record(time.perf_counter() - t0, ok)


def run_clients(clients: list[tuple[His, Script]], deadline: float) -> int:
    """Drive every client's script over its connection from one thread; returns the calls left unanswered."""
    sel = selectors.DefaultSelector()
    watched: dict[His, socket.socket] = {}

    def watch(his: His, script: Script) -> None:
        old = watched.pop(his, None)
        if old is not None and old is his.sock:
            watched[his] = old  # the same keep-alive connection: still registered
            return
        if old is not None:
            sel.unregister(old)
        if his.sock is not None:
            sel.register(his.sock, selectors.EVENT_READ, (his, script))
            watched[his] = his.sock

    def advance(his: His, script: Script, step: Callable[[], bytes]) -> None:
        """Send the script's next request; a failed send is thrown into the script (a failed settlement)."""
        while True:
            try:
                request = step()
            except StopIteration:
                his.close()
                break
            try:
                his.send(request)
                break
            except OSError as exc:
                his.close()
                step = functools.partial(script.throw, exc)
        watch(his, script)

    for his, script in clients:
        advance(his, script, script.__next__)
    while watched and time.time() < deadline:
        for key, _ in sel.select(timeout=1.0):
            his, script = key.data
            try:
                answer = his.receive()
            except (OSError, HttpError, ValueError) as exc:
                his.close()
                advance(his, script, functools.partial(script.throw, exc))
                continue
            if answer is not None:
                advance(his, script, functools.partial(script.send, answer))
    unanswered = len(watched)
    for his in watched:
        his.close()
    sel.close()
    return unanswered


def _client_group(host: str, port: int, key: str, secret: str, ids: list[int], start_at: float | None,
                  seconds: float) -> tuple[list[float], int, int, float]:  # fmt: skip
    """Sign in clients ``ids``, run them from ``start_at`` (or at once) for ``seconds``.

    Returns the settlements' latencies, how many settled, how many failed, and this process's CPU time.
    """
    payload = svc_bench.bill()
    payload["begntime"] = dt.date.today().strftime("%Y-%m-%d") + " 09:00:00"
    latencies: list[float] = []
    outcome = {True: 0, False: 0}

    def record(latency: float, ok: bool) -> None:
        latencies.append(latency)
        outcome[ok] += 1

    his = {c: His(host, port, key, secret) for c in ids}
    for c, h in his.items():
        h.sign_no = h.call("9001", {"signIn": {"opter": f"b{c}"}})["output"]["signinoutb"]["sign_no"]
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    cpu0 = time.process_time()
    stop = (start_at or time.time()) + seconds
    unanswered = run_clients([(h, settlements(h, c, payload, stop, record)) for c, h in his.items()], stop + TIMEOUT_S)
    # A call left unanswered fails its settlement.
    return latencies, outcome[True], outcome[False] + unanswered, time.process_time() - cpu0


def drive(host: str, port: int, key: str, secret: str, clients: int, seconds: float,
          server_pgid: int | None = None, processes: int = 1) -> dict[str, Any]:  # fmt: skip
    """``clients`` HIS clients for ``seconds``, spread over ``processes`` load-generating processes."""
    procs = max(1, min(processes, clients))
    ticks = svc_bench.cpu_ticks(pgid=server_pgid) if server_pgid else 0
    if procs == 1:
        latencies, settled, failed, client_cpu = _client_group(host, port, key, secret, list(range(clients)), None,
                                                               seconds)  # fmt: skip
    else:
        start_at = time.time() + 3.0  # every process has imported and signed its clients in by then
        groups = [list(range(clients))[k::procs] for k in range(procs)]
        with ProcessPoolExecutor(max_workers=procs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_client_group, host, port, key, secret, ids, start_at, seconds) for ids in groups]
            outcomes = [f.result() for f in futures]
        latencies = [x for lat, _, _, _ in outcomes for x in lat]
        settled, failed = sum(o[1] for o in outcomes), sum(o[2] for o in outcomes)
        client_cpu = sum(o[3] for o in outcomes)
    # (with --client-processes the server's CPU includes the children's sign-ins: a few calls per client)
    server_cpu = (svc_bench.cpu_ticks(pgid=server_pgid) - ticks) / os.sysconf("SC_CLK_TCK") if server_pgid else 0.0
    latencies.sort()
    if not latencies:
        latencies = [float("nan")]
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 100 else [latencies[-1]] * 99
    done = max(1, settled + failed)
    return {"clients": clients, "settlements": settled, "failures": failed, "per_s": round(settled / seconds, 1),
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "client_cpu_ms": round(client_cpu * 1000 / done, 3),
            "server_cpu_ms": round(server_cpu * 1000 / done, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--cpu", action="store_true", help="also report server and client CPU per settlement")
    parser.add_argument("--client-processes", type=int, default=1,
                        help="spread the clients over this many load-generating processes")  # fmt: skip
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    engine = svc_bench.SettlementEngine(
        svc_bench.PolicyStore.load_dir(ROOT / "src/yibao/data/policies"), svc_bench.load_demo_catalog()
    )
    speed = svc_bench.machine_speed(engine, svc_bench.bill())
    print(f"machine speed: engine parse + settle of the bill {speed:.0f} µs", flush=True)
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            db, cleanup = svc_bench.database(kind, args.pg_url, Path(tmp))
            upgrade(db)
            svc_bench.populate(db, PERSONS_PER_CLIENT * max(levels))
            key, secret = issue_api_key(db, svc_bench.INST, clock=dt.datetime.now)
            url = db.url.render_as_string(hide_password=False)
            db.dispose()
            port = _port()
            server = subprocess.Popen(
                [str(ROOT / ".venv/bin/yibao"), "serve", "--port", str(port), "--workers", str(args.server_workers),
                 "--database-url", url],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            try:
                deadline = time.time() + 60
                while time.time() < deadline:
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.3)
                for clients in levels:
                    row = drive("127.0.0.1", port, key, secret, clients, args.seconds, server.pid,
                                args.client_processes)  # fmt: skip
                    print(f"{kind:<11} server-workers={args.server_workers} clients={clients:<3} "
                          f"{row['per_s']:>7.1f}/s  "
                          f"p50 {row['p50_ms']:>7.1f} ms  p99 {row['p99_ms']:>7.1f} ms  "
                          f"({row['settlements']} settled, {row['failures']} failed)", flush=True)  # fmt: skip
                    if args.cpu:
                        print(f"{'':<11} CPU per settlement: server {row['server_cpu_ms']:.2f} ms, "
                              f"load generator {row['client_cpu_ms']:.2f} ms", flush=True)  # fmt: skip
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
