"""A settlement worker for the crash-safety proofs (test_crash.py); it is meant to be killed.

    python crash_worker.py DB_URL REQUESTS_JSON [--threads N]

Reads a JSON list of requests, each with its ``msgid``::

    {"op": "settle", "msgid": "...", "fixmedins_code": "...", "cred": ["01", "EVP1", null, null], "payload": {...}}
    {"op": "undo", "msgid": "...", "fixmedins_code": "...", "target": "<msgid of the message to undo>"}

and sends them one by one (or from N threads) through ``SettlementService``. After each reply it
writes ``ACK <msgid> <setl_id>`` (``-`` when the reply made no settlement) to stdout and flushes;
a business refusal is written as ``NAK <msgid> <code>``. ``DONE`` ends a complete run.

``YIBAO_CRASH_AT=<point>:<k>`` makes the process SIGKILL itself at the k-th time it passes
``point`` (counted over the whole process):

* ``before_ack`` — a reply came back (its transaction committed) but its ACK is not written yet;
* ``after_commit`` — right after a unit of work committed, before the service returns the reply;
* ``before_commit`` — the unit of work has done everything but commit (a 冲正's writes are then
  uncommitted; a settlement's commit went with its writes);
* ``read_money`` — a settlement holds its row locks and has read balances and accumulators;
* ``write_settlement`` — a settlement's rows (entry, postings, balances, accumulators, settlement,
  msgid record) are written; a settlement with nothing left to do sends its commit with them, so
  here it is committed and its reply not yet returned;
* ``post_entry`` / ``add_accumulators`` — a 冲正's compensating entry / accumulator decrease is
  written, mid-transaction;
* ``store_reply`` — a 冲正's reversal row is written, its reply not yet stored under its msgid.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for ``storage.invariants``

from storage.invariants import settlement_engine
from yibao.db import make_engine, repository
from yibao.db import settlement_rows as rows
from yibao.errors import YibaoError
from yibao.service import uow
from yibao.service.credentials import Credential
from yibao.service.settlement import SettleCommand, SettlementService, StoredReply

POINTS = (
    "before_ack",
    "after_commit",
    "before_commit",
    "read_money",
    "write_settlement",
    "post_entry",
    "add_accumulators",
    "store_reply",
)


class CrashPoint:
    """Counts passes of one named point and kills the process on the k-th."""

    def __init__(self, spec: str | None) -> None:
        self.point, self.k, self.seen = None, 0, 0
        self._lock = threading.Lock()
        if spec:
            point, _, k = spec.partition(":")
            if point not in POINTS or not k.isdigit() or int(k) < 1:
                raise SystemExit(f"bad YIBAO_CRASH_AT={spec!r}; points: {', '.join(POINTS)}")
            self.point, self.k = point, int(k)

    def passing(self, point: str) -> None:
        if point != self.point:
            return
        with self._lock:
            self.seen += 1
            if self.seen == self.k:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)


def install(crash: CrashPoint) -> None:
    """Wrap the steps a settlement goes through so that ``crash`` can stop the process in any of them."""

    def after(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            crash.passing(name)
            return result

        return wrapped

    rows.read_for_settlement = after("read_money", rows.read_for_settlement)  # type: ignore[assignment]
    rows.write_settlement = after("write_settlement", rows.write_settlement)  # type: ignore[assignment]
    repository.post_entry = after("post_entry", repository.post_entry)  # type: ignore[assignment]
    repository.add_accumulators = after("add_accumulators", repository.add_accumulators)  # type: ignore[assignment]

    store_reply = SettlementService._store_reply

    def before_store(self: SettlementService, *args: Any, **kwargs: Any) -> StoredReply:
        crash.passing("store_reply")
        return store_reply(self, *args, **kwargs)

    SettlementService._store_reply = before_store  # type: ignore[method-assign]

    commit = uow.UnitOfWork.commit

    def commit_between(self: uow.UnitOfWork) -> None:
        crash.passing("before_commit")
        commit(self)
        crash.passing("after_commit")

    uow.UnitOfWork.commit = commit_between  # type: ignore[method-assign]


def handle(svc: SettlementService, request: dict[str, Any]) -> StoredReply:
    if request["op"] == "settle":
        cert_type, number, card_sn, pin = request["cred"]
        cmd = SettleCommand(
            request["msgid"], request["fixmedins_code"], Credential(cert_type, number, card_sn, pin), request["payload"]
        )
        return svc.settle(cmd)
    if request["op"] == "undo":
        return svc.undo(request["target"], request["msgid"], request["fixmedins_code"])
    raise SystemExit(f"unknown op {request['op']!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("db_url")
    parser.add_argument("requests", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    crash = CrashPoint(os.environ.get("YIBAO_CRASH_AT"))
    install(crash)
    requests: list[dict[str, Any]] = json.loads(args.requests.read_text(encoding="utf-8"))
    db = make_engine(args.db_url, pool_size=args.threads + 1)
    svc = SettlementService(db, settlement_engine())
    pending = list(reversed(requests))
    guard = threading.Lock()
    out = threading.Lock()

    def run() -> None:
        while True:
            with guard:
                if not pending:
                    return
                request = pending.pop()
            try:
                reply = handle(svc, request)
            except YibaoError as refused:
                with out:
                    print(f"NAK {request['msgid']} {refused.code}", flush=True)
                continue
            crash.passing("before_ack")
            with out:
                print(f"ACK {reply.msgid} {reply.setl_id or '-'}", flush=True)

    threads = [threading.Thread(target=run) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db.dispose()
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
