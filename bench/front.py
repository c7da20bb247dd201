"""CPU time of the gateway's HTTP front per request, in process: the ASGI app driven directly.

    .venv/bin/python bench/front.py [--settlements 300] [--stub] [--profile]
    .venv/bin/python bench/front.py --http [--clients 8] [--seconds 5] [--stub] [--uvicorn-http auto|h11|httptools]
        [--uvicorn-loop auto|asyncio|uvloop]

Builds the app as `yibao serve` does (gateway + /v1, one JSON log line per request to
/dev/null) on a fresh SQLite database populated like bench/service.py, signs in, then
runs the HIS outpatient sequence 2201 → 2204 (20 lines) → 2207 through the ASGI app,
one call at a time, and reports the process CPU time (all threads) per request.

--stub replaces the three business handlers by ones returning answers recorded from
real calls, so that what is measured is the front alone: body, JSON, headers and
signature, key and sign-in checks, dispatch to the thread pool, the answer envelope and
its encoding, the log line. Uvicorn's own HTTP parsing is not included (no sockets).
--profile prints the top of a cProfile of the event-loop thread (use with --stub).

--http serves the same app with uvicorn in this process (one worker, as `yibao serve`
configures it) and runs bench/load.py's clients in a child process for --seconds:
the CPU time of this process per request is then the whole server's, HTTP included.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import itertools
import json
import logging
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import service as svc_bench
from yibao.db import make_engine, upgrade
from yibao.gateway import GATEWAY_PATH, sign
from yibao.gateway import app as gateway_app
from yibao.service.apikeys import issue_api_key

App = Callable[..., Any]

#: Each client settles for its own persons in rotation.
PERSONS_PER_CLIENT = 50


async def _asgi_call(app: App, body: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": GATEWAY_PATH, "raw_path": GATEWAY_PATH.encode(),
        "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return b"".join(chunks)


class His:
    def __init__(self, key: str, secret: str) -> None:
        self.key, self.secret, self.sign_no = key, secret, ""
        self.seq = itertools.count(1)

    def request(self, infno: str, data: dict[str, Any]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        fields = {"_api_access_key": self.key, "_api_name": "bench", "_api_timestamp": str(int(time.time() * 1000)),
                  "_api_version": "1.0.0"}  # fmt: skip
        headers = [(k.encode(), v.encode()) for k, v in {**fields, "_api_signature": sign(self.secret, fields)}.items()]
        envelope = {"infno": infno, "msgid": f"F{next(self.seq):010d}{int(time.time())}",
                    "fixmedins_code": svc_bench.INST, "mdtrtarea_admvs": "210600", "insuplc_admdvs": "210600",
                    "opter": "001", "opter_name": "bench", "sign_no": self.sign_no, "input": data,
                    "inf_time": dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        body = json.dumps(envelope, ensure_ascii=False).encode()
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"host", b"127.0.0.1:8000")]  # fmt: skip
        return body, headers


async def _run(app: App, his: His, settlements: int, stub: bool, profile: cProfile.Profile | None) -> None:
    payload = svc_bench.bill()
    payload["begntime"] = dt.date.today().strftime("%Y-%m-%d") + " 09:00:00"
    cpu = [0.0]
    calls = [0]

    async def call(infno: str, data: dict[str, Any]) -> dict[str, Any]:
        body, headers = his.request(infno, data)
        if profile is not None:
            profile.enable()
        t0 = time.process_time()
        raw = await _asgi_call(app, body, headers)
        cpu[0] += time.process_time() - t0
        if profile is not None:
            profile.disable()
        calls[0] += 1
        answer: dict[str, Any] = json.loads(raw)
        return answer

    signed = await call("9001", {"signIn": {"opter": "f1"}})
    his.sign_no = signed["output"]["signinoutb"]["sign_no"]

    async def settle(i: int) -> None:
        psn = f"B{i % PERSONS_PER_CLIENT:07d}"
        cred = {"mdtrt_cert_type": "01", "mdtrt_cert_no": f"E{psn}"}
        reg = await call("2201", {"data": {**cred, "psn_no": psn, "insutype": "310", "begntime": payload["begntime"]}})
        assert reg["infcode"] == 0, reg
        mdtrt_id = reg["output"]["data"]["mdtrt_id"]
        lines = [{**line, "mdtrt_id": mdtrt_id, "med_list_codg": line["hilist_code"]} for line in payload["feedetail"]]
        up = await call("2204", {"feedetail": lines})
        assert up["infcode"] == 0, up
        done = await call("2207", {"data": {"psn_no": psn, "mdtrt_id": mdtrt_id, "acct_used_flag": "1"}})
        assert done["infcode"] == 0, done

    if stub:  # record real answers, then answer every business call with them
        recorded: dict[str, Any] = {}
        real = dict(gateway_app.HANDLERS)
        for infno in ("2201", "2204", "2207"):
            gateway_app.HANDLERS[infno] = (lambda n: lambda call: recorded.setdefault(n, real[n](call)))(infno)
        await settle(0)
        for infno in ("2201", "2204", "2207"):
            gateway_app.HANDLERS[infno] = (lambda n: lambda call: recorded[n])(infno)
    for i in range(3):  # warm-up
        await settle(i + 1)
    if settlements == 0:
        return
    cpu[0], calls[0] = 0.0, 0
    wall = time.perf_counter()
    for i in range(settlements):
        await settle(i + 4)
    wall = time.perf_counter() - wall
    print(f"{'stubbed handlers (front only)' if stub else 'real handlers'}: {calls[0]} requests, "
          f"{cpu[0] / calls[0] * 1e6:.0f} µs CPU per request, {cpu[0] / settlements * 1e3:.2f} ms CPU per settlement "
          f"({wall / settlements * 1e3:.2f} ms wall per settlement)")  # fmt: skip


def _http_clients(port: int, key: str, secret: str, sign_no: str, clients: int, start_at: float, seconds: float,
                  out: Any) -> None:  # fmt: skip
    """Child process: bench/load.py's clients against the server; sends (settled, failed) back."""
    import load

    payload = svc_bench.bill()
    payload["begntime"] = dt.date.today().strftime("%Y-%m-%d") + " 09:00:00"
    outcome = {True: 0, False: 0}

    def record(latency: float, ok: bool) -> None:
        outcome[ok] += 1

    his = [load.His("127.0.0.1", port, key, secret) for _ in range(clients)]
    time.sleep(max(0.0, start_at - time.time()))
    cpu = time.process_time()
    stop = time.time() + seconds
    for h in his:
        h.sign_no = sign_no
    unanswered = load.run_clients([(h, load.settlements(h, c, payload, stop, record)) for c, h in enumerate(his)],
                                  stop + load.TIMEOUT_S)  # fmt: skip
    out.put((outcome[True], outcome[False] + unanswered, time.process_time() - cpu))


def _over_http(app: App, his: His, args: argparse.Namespace) -> None:
    import multiprocessing
    import threading

    import uvicorn

    import load

    async def prepare() -> None:  # sign in (and record the stubs' answers) in process, as _run does
        await _run(app, his, 0, args.stub, None)

    asyncio.run(prepare())
    port = load._port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                            http=args.uvicorn_http, loop=args.uvicorn_loop)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # the child's imports are done by then
    child = ctx.Process(target=_http_clients, args=(port, his.key, his.secret, his.sign_no, args.clients, start_at,
                                                    args.seconds, out))  # fmt: skip
    child.start()
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.process_time()
    settled, failed, client_cpu = out.get(timeout=args.seconds + 120)
    cpu = time.process_time() - t0
    child.join(timeout=30)
    server.should_exit = True
    thread.join(timeout=10)
    requests = 3 * settled
    print(f"HTTP, uvicorn http={args.uvicorn_http} loop={args.uvicorn_loop}, {args.clients} clients, "
          f"{'stubbed handlers' if args.stub else 'real handlers'}: {settled} settlements ({failed} failed), "
          f"{cpu / max(1, requests) * 1e6:.0f} µs server CPU per request; "
          f"the clients' {client_cpu / max(1, settled) * 1e3:.2f} ms CPU per settlement")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settlements", type=int, default=300)
    parser.add_argument("--stub", action="store_true", help="stub the business handlers: measure the front alone")
    parser.add_argument("--profile", action="store_true", help="cProfile the event-loop thread")
    parser.add_argument("--http", action="store_true", help="over HTTP: uvicorn here, the clients in a child")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--uvicorn-http", default="auto")
    parser.add_argument("--uvicorn-loop", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=open(os.devnull, "w"))  # noqa: SIM115
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'front.db'}"
        db = make_engine(url, pool_size=4)
        upgrade(db)
        svc_bench.populate(db, PERSONS_PER_CLIENT * max(1, args.clients))
        key, secret = issue_api_key(db, svc_bench.INST, clock=dt.datetime.now)
        db.dispose()
        os.environ["YIBAO_DATABASE_URL"] = url
        from yibao.gateway.server import build

        app = build()
        if args.http:
            _over_http(app, His(key, secret), args)
            return
        profile = cProfile.Profile() if args.profile else None
        asyncio.run(_run(app, His(key, secret), args.settlements, args.stub, profile))
        if profile is not None:
            pstats.Stats(profile).sort_stats("tottime").print_stats(35)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
