"""State changes through the API: one transaction with the audit row and the idempotency record.

:func:`perform` runs a change and, in the same unit of work, writes its audit row and
(when the caller sent an ``Idempotency-Key``) the stored response. The key is claimed
first, so a concurrent request with the same key waits for the first one and then
replays its answer instead of doing the work twice. A key sent again with another
request body is a 409 problem. Only successful answers are stored: a refused request
leaves nothing behind and may be retried with the same key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Response
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..db.schema import api_idempotency
from ..errors import YibaoError
from ..service.audit import audit, dumps, to_json
from ..service.uow import transact
from .auth import Caller
from .context import Context
from .problems import ApiError

__all__ = ["KEY_RETENTION", "Change", "fingerprint", "perform", "purge_idempotency_keys"]

#: How long a stored Idempotency-Key answer is kept at least (a retry later than this runs again).
KEY_RETENTION = dt.timedelta(hours=48)

REPLAY_HEADER = "Idempotent-Replayed"
#: Attempts when a concurrent request with the same key commits first.
_CLAIM_ATTEMPTS = 3


@dataclass(frozen=True)
class Change:
    """What a state-changing call did: its answer and what the audit log records.

    ``error`` set means: commit what was written (a failed PIN attempt, its audit row),
    then answer with this error; nothing is stored under the idempotency key.
    """

    status: int
    body: Any
    action: str
    target: str
    before: Any = None
    after: Any = None
    error: YibaoError | None = None


@dataclass(frozen=True)
class _Answer:
    status: int
    content: str
    replayed: bool
    error: YibaoError | None = None


def fingerprint(method: str, path: str, body: Any) -> str:
    """The hash identifying a request for idempotency: method, path and the parsed body."""
    return hashlib.sha256(dumps({"method": method, "path": path, "body": body}).encode()).hexdigest()


def perform(
    ctx: Context, caller: Caller, *, key: str | None, request_hash: str, op: Callable[[Connection], Change]
) -> Response:
    """Run ``op`` with its audit row (and the idempotency record) in one unit of work."""

    def work(conn: Connection) -> _Answer:
        now = ctx.clock()
        if key is not None:
            stored = conn.execute(
                select(api_idempotency).where(api_idempotency.c.caller == caller.id, api_idempotency.c.key == key)
            ).first()
            if stored is not None:
                if stored.request_hash != request_hash:
                    raise ApiError(
                        409, "IDEMPOTENCY_KEY_REUSED",
                        "this Idempotency-Key was used for a different request; use a new key",
                        field="Idempotency-Key",
                    )  # fmt: skip
                return _Answer(int(stored.status_code), stored.response_json, True)
            # Claim the key first: a concurrent request with it waits here, then replays.
            conn.execute(
                insert(api_idempotency).values(
                    caller=caller.id, key=key, request_hash=request_hash, status_code=0, response_json="",
                    created_at=now,
                )
            )  # fmt: skip
        change = op(conn)
        audit(
            conn, at=now, actor=caller.id, role=caller.role, action=change.action, target=change.target,
            before=change.before, after=change.after, idempotency_key=key,
        )  # fmt: skip
        if change.error is not None:
            if key is not None:
                conn.execute(
                    api_idempotency.delete().where(api_idempotency.c.caller == caller.id, api_idempotency.c.key == key)
                )
            return _Answer(change.status, "", False, change.error)
        content = json.dumps(to_json(change.body), ensure_ascii=False)
        if key is not None:
            conn.execute(
                update(api_idempotency)
                .where(api_idempotency.c.caller == caller.id, api_idempotency.c.key == key)
                .values(status_code=change.status, response_json=content)
            )
        return _Answer(change.status, content, False)

    attempt = 0
    while True:
        attempt += 1
        try:
            answer = transact(ctx.db, work)
        except IntegrityError as exc:
            # A concurrent request with this key committed first: run again to replay its answer.
            if key is None or "api_idempotency" not in str(exc.orig) or attempt >= _CLAIM_ATTEMPTS:
                raise
            continue
        break
    if answer.error is not None:
        raise answer.error
    headers = {REPLAY_HEADER: "true"} if answer.replayed else {}
    if answer.status == 204:
        return Response(status_code=204, headers=headers)
    return Response(content=answer.content, status_code=answer.status, media_type="application/json", headers=headers)


def purge_idempotency_keys(db: Engine, now: dt.datetime, *, keep: dt.timedelta = KEY_RETENTION) -> int:
    """Forget Idempotency-Key answers older than ``keep``; how many were removed.

    Only the API's replay records go: the audit log and the gateway's ``msgid`` records
    (which 冲正 and reconciliation rely on) are kept.
    """
    if keep < KEY_RETENTION:
        raise ValueError(f"keys are kept at least {KEY_RETENTION}")
    cutoff = now - keep

    def work(conn: Connection) -> int:
        result = conn.execute(api_idempotency.delete().where(api_idempotency.c.created_at < cutoff))
        return int(result.rowcount)

    return transact(db, work)
