"""Whether the compiled hot path is in use, and whether it matches its source.

``setup.py`` compiles the settlement's hot modules with mypyc when it can and records
the SHA-256 of each source it compiled (``_native_build.json``). Python imports a
module's extension in preference to its ``.py`` file, so an extension built from an
older source would silently run old code: :func:`stale_modules` finds such modules,
and the test suite refuses to run while there are any (``make`` rebuilds them).
"""

from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

__all__ = ["compiled_modules", "stale_modules"]

_PACKAGE = Path(__file__).resolve().parent
_MANIFEST = _PACKAGE / "_native_build.json"
_RUNTIME = "_native__mypyc"  # the runtime library the compiled modules share


def _extensions() -> dict[str, Path]:
    """Module name → the module's ``.py`` source, for every extension module in the package."""
    found = {}
    for suffix in EXTENSION_SUFFIXES:
        for path in _PACKAGE.rglob(f"*{suffix}"):
            stem = path.name[: -len(suffix)]
            # A dot left in the stem: a longer suffix (".cpython-….so") seen through ".so".
            if stem != _RUNTIME and "." not in stem:
                relative = path.parent.relative_to(_PACKAGE.parent).parts
                found[".".join((*relative, stem))] = path.with_name(stem + ".py")
    return found


def _recorded() -> dict[str, str]:
    """Module name → SHA-256 of the source it was compiled from."""
    if not _MANIFEST.exists():
        return {}
    data = json.loads(_MANIFEST.read_text())
    assert isinstance(data, dict), f"{_MANIFEST}: not an object"
    return {".".join(Path(str(k)).with_suffix("").parts[1:]): str(v) for k, v in data.items()}


def compiled_modules() -> list[str]:
    """Modules that import from a compiled extension (their ``.py`` file is not run)."""
    return sorted(_extensions())


def stale_modules() -> list[str]:
    """Modules whose extension was built from another version of the source, from a source
    since deleted, or by a build that recorded nothing: rebuild before running anything."""
    recorded = _recorded()
    return sorted(
        name
        for name, source in _extensions().items()
        if not source.exists() or hashlib.sha256(source.read_bytes()).hexdigest() != recorded.get(name)
    )
