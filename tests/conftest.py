"""Suite-wide checks: the code under test is the code in the tree."""

from __future__ import annotations

import pytest

from yibao import native


def pytest_configure(config: pytest.Config) -> None:
    stale = native.stale_modules()
    if stale:
        raise pytest.UsageError(
            "compiled extensions older than their source: " + ", ".join(stale) + " — run `make test` "
            "(it rebuilds them) or `YIBAO_PURE=1 .venv/bin/pip install --no-build-isolation --no-deps -e .`"
        )


def pytest_report_header(config: pytest.Config) -> str:
    compiled = native.compiled_modules()
    return f"yibao: {len(compiled)} modules compiled with mypyc" if compiled else "yibao: pure Python"
