"""yibao.native: which modules run compiled, and which extensions no longer match their source."""

from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from yibao import native

SUFFIX = EXTENSION_SUFFIXES[0]  # e.g. .cpython-311-x86_64-linux-gnu.so


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package tree like src/yibao after a build: one compiled module, its runtime, its manifest."""
    pkg = tmp_path / "src" / "yibao"
    (pkg / "engine").mkdir(parents=True)
    source = pkg / "engine" / "split.py"
    source.write_text("X = 1\n")
    (pkg / "engine" / f"split{SUFFIX}").write_bytes(b"")
    (pkg / f"_native__mypyc{SUFFIX}").write_bytes(b"")
    (pkg / "money.py").write_text("Y = 2\n")  # not compiled: never stale
    manifest = pkg / "_native_build.json"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    manifest.write_text(json.dumps({"src/yibao/engine/split.py": digest}))
    monkeypatch.setattr(native, "_PACKAGE", pkg)
    monkeypatch.setattr(native, "_MANIFEST", manifest)
    return pkg


def test_a_fresh_build_is_not_stale(package: Path) -> None:
    assert native.compiled_modules() == ["yibao.engine.split"]
    assert native.stale_modules() == []


def test_an_edited_source_makes_its_extension_stale(package: Path) -> None:
    (package / "engine" / "split.py").write_text("X = 2\n")
    assert native.stale_modules() == ["yibao.engine.split"]


def test_an_extension_without_a_record_or_a_source_is_stale(package: Path) -> None:
    (package / "_native_build.json").unlink()
    assert native.stale_modules() == ["yibao.engine.split"]
    (package / f"money{SUFFIX}").write_bytes(b"")  # left by an older build
    (package / "money.py").unlink()
    assert native.stale_modules() == ["yibao.engine.split", "yibao.money"]
