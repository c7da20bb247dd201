"""Build step for the compiled hot path; everything else about the package is in pyproject.toml.

The settlement engine, the kernel and the settlement's storage modules are plain, strictly
typed Python. Where mypyc is installed (it ships with mypy) and the build sees the project's
dependencies (``make`` installs the dev extras, then builds again without isolation),
they are also compiled to C extensions that run the same code about 1.5x faster. The .py
files stay the source of truth: ``yibao.native`` tells whether extensions are loaded and
whether any is older than its source. ``YIBAO_PURE=1`` builds pure Python throughout.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent

#: Compiled with mypyc: the modules a settlement runs through, except the service layer
#: and fastsql. Tests inject faults into those by patching module attributes (calls
#: within the compiled group bypass such patches; module-level settings are still read
#: at run time); they handle SQLAlchemy rows, which type checkers see as tuples and
#: compiled code would insist on; and exception classes there carry error codes as
#: class attributes.
COMPILED = [
    "src/yibao/money.py",
    "src/yibao/_json.py",
    "src/yibao/catalog.py",
    "src/yibao/ledger.py",
    "src/yibao/engine/split.py",
    "src/yibao/engine/funds.py",
    "src/yibao/engine/settle.py",
    "src/yibao/engine/request.py",
    "src/yibao/engine/result.py",
    "src/yibao/engine/trace.py",
    "src/yibao/db/settlement_rows.py",
    "src/yibao/db/pg_pipeline.py",
]
MANIFEST = ROOT / "src" / "yibao" / "_native_build.json"
#: setup.py commands that build the package (pip's metadata steps need no compiling).
_BUILDING = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def _extensions() -> list[object]:
    if not _BUILDING.intersection(sys.argv[1:]):
        return []  # metadata only: nothing is compiled or removed
    # Extensions of an earlier build, possibly of modules no longer compiled, must not
    # shadow the sources: the package has no extensions but these.
    for built in (ROOT / "src" / "yibao").rglob("*.so"):
        built.unlink()
    MANIFEST.unlink(missing_ok=True)
    if os.environ.get("YIBAO_PURE") == "1":
        return _pure("YIBAO_PURE=1")
    try:
        from mypyc.build import mypycify
    except ImportError:
        return _pure("mypyc is not installed in the build environment")
    # Module names follow the paths (src/ has no __init__.py); the runtime library shared
    # by the compiled modules lands in the package too, as yibao._native__mypyc.
    modules = mypycify(COMPILED, opt_level="3", group_name="yibao._native")
    digests = {path: hashlib.sha256((ROOT / path).read_bytes()).hexdigest() for path in COMPILED}
    MANIFEST.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    return list(modules)


def _pure(why: str) -> list[object]:
    print(f"yibao: building pure Python ({why})", file=sys.stderr)
    return []


setup(ext_modules=_extensions())
