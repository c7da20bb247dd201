"""docs/gateway-envelopes.md is what scripts/gateway_envelopes.py generates from a real run, byte for byte.

The script seeds the demo region into a fresh SQLite database, drives every gateway transaction and writes
the worked envelopes; here it writes them into a temporary file, which must equal the committed document. A
change to a handler, an answer field, the seed or the settlement that alters any envelope fails this test
until the document is regenerated:

    .venv/bin/python scripts/gateway_envelopes.py
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gateway_envelopes.py"
DOCUMENT = ROOT / "docs" / "gateway-envelopes.md"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gateway_envelopes", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_document_matches_a_fresh_run(tmp_path: Path) -> None:
    generated = tmp_path / "gateway-envelopes.md"
    assert _script().main(["--output", str(generated)]) == 0
    expected, actual = DOCUMENT.read_text(encoding="utf-8"), generated.read_text(encoding="utf-8")
    if actual != expected:
        diff = difflib.unified_diff(expected.splitlines(), actual.splitlines(), "docs/gateway-envelopes.md",
                                    "a fresh run", lineterm="", n=2)  # fmt: skip
        shown = "\n".join(line[:200] for line in list(diff)[:80])
        raise AssertionError(f"the document has drifted from the code; regenerate it with "
                             f"`.venv/bin/python scripts/gateway_envelopes.py`:\n{shown}")  # fmt: skip
