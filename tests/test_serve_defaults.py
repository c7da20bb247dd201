"""yibao serve's admission default: one unit of work at a time on SQLite, as configured otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from yibao.gateway import server


@pytest.mark.parametrize(("configured", "expected"), [(None, 1), ("3", 3)])
def test_sqlite_admits_one_unit_of_work_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: str | None, expected: int
) -> None:
    calls: list[tuple[Any, int | None]] = []
    monkeypatch.setattr(server, "limit_units_of_work", lambda db, limit: calls.append((db, limit)))
    monkeypatch.setenv("YIBAO_DATABASE_URL", f"sqlite:///{tmp_path / 'y.db'}")
    if configured is None:
        monkeypatch.delenv("YIBAO_DB_IN_FLIGHT", raising=False)
    else:
        monkeypatch.setenv("YIBAO_DB_IN_FLIGHT", configured)
    server.build()
    assert len(calls) == 1
    db, limit = calls[0]
    assert db.dialect.name == "sqlite" and limit == expected
    db.dispose()
