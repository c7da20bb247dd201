"""The audit log: who changed what, when, with a before/after summary (append-only table).

Every entrypoint that changes state writes its row here, in the same unit of work as the change."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, insert

from ..db.schema import audit_log

__all__ = ["audit", "dumps", "to_json"]


def to_json(value: Any) -> Any:
    """Plain JSON data of models, dataclasses, dates and containers."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "__dataclass_fields__"):
        return {name: to_json(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def dumps(value: Any) -> str:
    """Canonical JSON text (sorted keys, no spaces, UTF-8 kept)."""
    return json.dumps(to_json(value), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def audit(
    conn: Connection,
    *,
    at: dt.datetime,
    actor: str,
    role: str,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    idempotency_key: str | None = None,
) -> None:
    """Append one audit row in the caller's transaction (the table refuses UPDATE and DELETE)."""
    conn.execute(
        insert(audit_log).values(
            at=at,
            actor=actor[:48],
            role=role[:10],
            action=action[:40],
            target=target[:80],
            idempotency_key=idempotency_key,
            before_json=None if before is None else dumps(before),
            after_json=None if after is None else dumps(after),
        )
    )
