"""Loading a directory of policy files and resolving a region's policy on a date.

Files are validated on load: every region is resolved and checked at every date
on which any value along its chain changes, so an invalid combination is found
at start-up, not at the first settlement that hits it.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import PolicyError, RequestError
from . import _tree
from ._checks import run_checks
from ._tree import Leaf, Reference, RegionFile, Source
from ._yamlio import YamlError, load_yaml
from .model import PolicyParams, Scheme

__all__ = ["Policy", "PolicyStore"]

#: Resolved policies kept in memory; a region changes policy a few times a year.
MAX_CACHED_VERSIONS = 4096
#: Files in one policy directory: ~400 pooling regions plus provinces and templates.
MAX_POLICY_FILES = 2000


@dataclass(frozen=True, slots=True)
class Policy:
    """One region's policy as in force during ``[effective_from, effective_to]``."""

    region: str
    name: str
    chain: tuple[str, ...]
    version: str
    effective_from: dt.date
    effective_to: dt.date | None
    params: PolicyParams
    sources: Mapping[str, Source] = field(repr=False)
    values: Mapping[str, Any] = field(repr=False, default_factory=dict)
    _memo: dict[str, Source | None] = field(repr=False, default_factory=dict, compare=False)
    #: Values readers derive from this immutable policy (e.g. the engine's plan per benefit);
    #: bounded by the number of (scheme, med_type) pairs.
    derived: dict[Any, Any] = field(repr=False, default_factory=dict, compare=False)

    def scheme(self, insutype: str) -> Scheme | None:
        return self.params.schemes.get(insutype)

    def source_for(self, key: str) -> Source | None:
        """The source of ``key`` or, failing that, of its nearest cited parent/child."""
        try:
            return self._memo[key]
        except KeyError:
            found = self._memo[key] = self._find_source(key)
            return found

    def _find_source(self, key: str) -> Source | None:
        probe = key
        while probe:
            found = self.sources.get(probe)
            if found is not None:
                return found
            cut = max(probe.rfind("."), probe.rfind("["))
            if cut <= 0:
                break
            probe = probe[:cut]
        # A whole table or block: take the first leaf under it.
        prefix = key + "."
        for path, source in self.sources.items():
            if path.startswith(prefix) or path.startswith(key + "["):
                return source
        return None


def _file_of(sources: Mapping[str, Source], key: str, default: str) -> str:
    probe = key
    while probe:
        if probe in sources:
            return sources[probe].file
        for path, source in sources.items():
            if path.startswith(probe + ".") or path.startswith(probe + "["):
                return source.file
        cut = max(probe.rfind("."), probe.rfind("["))
        if cut <= 0:
            break
        probe = probe[:cut]
    return default


def _loc_to_key(loc: Iterable[int | str], tree: Any) -> str:
    """The YAML key path of a validation error location, as written in the file.

    Validation adds structure the author did not write (a table's ``rows`` wrapper,
    the ``value`` of a bare table value, union branch tags); the path follows the
    resolved tree and stops where the written structure ends.
    """
    out = ""
    node = tree
    for part in loc:
        if isinstance(part, str) and (part == "rows" or "[" in part or "(" in part):
            continue
        if isinstance(part, int):
            if not isinstance(node, list):
                continue  # a bare value stands for a one-row table
            out += f"[{part}]"
            node = node[part] if part < len(node) else None
        else:
            if not isinstance(node, dict):
                break  # e.g. ``value`` of a bare row
            out += f".{part}" if out else part
            node = node.get(part)
    return out


class PolicyStore:
    """All policy files of one directory, indexed by region code."""

    def __init__(self, regions: Mapping[str, RegionFile], digests: Mapping[str, str]) -> None:
        self._regions = dict(regions)
        self._digests = dict(digests)
        self._chains = {code: self._chain(code) for code in self._regions}
        self._bounds: dict[str, list[dt.date]] = {}
        for code, chain in self._chains.items():
            dates = {self._regions[code].valid_from}
            for link in chain:
                dates |= _tree.boundaries(self._regions[link])
            self._bounds[code] = sorted(d for d in dates if d >= self._regions[code].valid_from)
        self._cache: dict[tuple[str, dt.date], Policy] = {}

    # -- loading -----------------------------------------------------------------
    @classmethod
    def load_dir(cls, directory: str | Path) -> PolicyStore:
        root = Path(directory)
        if not root.is_dir():
            raise PolicyError(str(root), "", "not a directory")
        files = sorted(p for p in root.rglob("*.yaml") if p.is_file())
        if not files:
            raise PolicyError(str(root), "", "no *.yaml policy files found")
        if len(files) > MAX_POLICY_FILES:
            raise PolicyError(str(root), "", f"more than {MAX_POLICY_FILES} policy files")
        texts = {str(p.relative_to(root.parent) if root.parent != p else p): p.read_text("utf-8") for p in files}
        return cls.from_texts(texts)

    @classmethod
    def from_texts(cls, texts: Mapping[str, str]) -> PolicyStore:
        """Build from ``{file name: YAML text}``; validates everything."""
        docs: dict[str, Any] = {}
        for name, text in texts.items():
            try:
                docs[name] = load_yaml(text)
            except YamlError as exc:
                raise PolicyError(name, exc.key, str(exc)) from None
        # Parse parents before children so references are inherited.
        by_region: dict[str, str] = {}
        for name, doc in docs.items():
            region = str(doc.get("region")) if isinstance(doc, dict) else None
            if region is not None and region in by_region:
                raise PolicyError(name, "region", f"region {region} is also defined in {by_region[region]}")
            if region is not None:
                by_region[region] = name
        parsed: dict[str, RegionFile] = {}

        def parse(name: str, trail: tuple[str, ...]) -> RegionFile:
            doc = docs[name]
            region = str(doc.get("region")) if isinstance(doc, dict) else ""
            if region in parsed:
                return parsed[region]
            if name in trail:
                raise PolicyError(name, "parent", "the parent chain loops back to this file")
            refs: dict[str, Reference] = {}
            parent = doc.get("parent") if isinstance(doc, dict) else None
            if parent is not None:
                parent_name = by_region.get(str(parent))
                if parent_name is None:
                    raise PolicyError(name, "parent", f"no policy file defines region {parent}")
                refs = parse(parent_name, (*trail, name)).references
            rf = _tree.parse_region_file(name, doc, refs)
            parsed[rf.region] = rf
            return rf

        for name in sorted(docs):
            parse(name, ())
        digests = {rf.region: hashlib.sha256(texts[rf.file].encode()).hexdigest() for rf in parsed.values()}
        store = cls(parsed, digests)
        store.check_all()
        return store

    def _chain(self, code: str) -> tuple[str, ...]:
        chain: list[str] = []
        current: str | None = code
        while current is not None:
            if current in chain:
                raise PolicyError(self._regions[code].file, "parent", "the parent chain loops")
            chain.append(current)
            current = self._regions[current].parent
        return tuple(reversed(chain))

    # -- queries -------------------------------------------------------------------
    @property
    def regions(self) -> Mapping[str, RegionFile]:
        return self._regions

    def find_region(self, code: str) -> str | None:
        """The region whose policy governs ``code``: itself, its city, or its province."""
        for candidate in (code, code[:4] + "00", code[:2] + "0000"):
            if candidate in self._regions:
                return candidate
        return None

    def versions(self, region: str) -> list[dt.date]:
        return list(self._bounds[region])

    def resolve(self, code: str, date: dt.date) -> Policy:
        """The policy governing region ``code`` on ``date`` (cached per version)."""
        region = self.find_region(code)
        if region is None:
            raise RequestError("insuplc_admdvs", f"no policy for region {code}", code="UNKNOWN_REGION")
        bounds = self._bounds[region]
        index = bisect.bisect_right(bounds, date) - 1
        if index < 0:
            raise RequestError(
                "begntime",
                f"region {region} has no policy in force on {date} (valid from {bounds[0]})",
                code="NO_POLICY_IN_FORCE",
            )
        start = bounds[index]
        cached = self._cache.get((region, start))
        if cached is None:
            end = bounds[index + 1] - dt.timedelta(days=1) if index + 1 < len(bounds) else None
            cached = self._build(region, start, end)
            if len(self._cache) >= MAX_CACHED_VERSIONS:
                self._cache.clear()
            self._cache[(region, start)] = cached
        return cached

    def check_all(self) -> int:
        """Resolve and validate every region at every version date; returns the count."""
        count = 0
        for region, bounds in self._bounds.items():
            for index, start in enumerate(bounds):
                end = bounds[index + 1] - dt.timedelta(days=1) if index + 1 < len(bounds) else None
                self._cache[(region, start)] = self._build(region, start, end)
                count += 1
        return count

    def _build(self, region: str, start: dt.date, end: dt.date | None) -> Policy:
        rf = self._regions[region]
        merged: Any = {}
        for link in self._chains[region]:
            merged = _tree.merge(merged, _tree.resolve_at(self._regions[link], start))
        leaves: dict[str, Leaf] = {}
        plain = _tree.unwrap(merged, leaves)
        sources = {key: leaf.source for key, leaf in leaves.items()}
        tag = f"{region}@{start.isoformat()}"
        try:
            params = PolicyParams.model_validate(plain)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = _loc_to_key(first["loc"], plain)
            file = _file_of(sources, key, rf.file)
            raise PolicyError(
                file, f"policy.{key}" if key else "policy", f"{first['msg']} (as in force {tag})"
            ) from None
        for key, reason in run_checks(params):
            raise PolicyError(_file_of(sources, key, rf.file), f"policy.{key}", f"{reason} (as in force {tag})")
        digest = hashlib.sha256("".join(self._digests[c] for c in self._chains[region]).encode()).hexdigest()
        return Policy(
            region=region,
            name=rf.name,
            chain=self._chains[region],
            version=f"{tag}#{digest[:10]}",
            effective_from=start,
            effective_to=end,
            params=params,
            sources=sources,
            values={key: leaf.value for key, leaf in leaves.items()},
        )
