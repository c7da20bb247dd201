"""Policy files as trees of dated, cited values, and their resolution at a date.

A policy file holds one region's parameters. Any node of its ``policy`` tree can be

* a plain value (scalar, mapping or list);
* a cited value ``{value: V, reference: KEY}`` — ``V`` with a source;
* a dated value ``{versions: [{from: D, to: D?, value: V, reference: KEY?}, ...]}`` —
  the version in force on the service date applies; outside every version the
  node is absent, and the parent region's value shows through.

Resolving a file at a date yields a tree of :class:`Leaf` values, each carrying
its :class:`Source`. The region chain (national → province → pooling region) is
then merged leaf-wise: a child's mapping keys override its parent's, anything
else replaces the parent's value whole.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import PolicyError

__all__ = [
    "Leaf",
    "Reference",
    "RegionFile",
    "Source",
    "boundaries",
    "merge",
    "parse_region_file",
    "resolve_at",
    "unwrap",
]

_REGION_RE = re.compile(r"^\d{6}$", re.ASCII)
_REF_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOP_KEYS = {"region", "name", "parent", "valid_from", "references", "policy", "note"}
_REF_KEYS = {"title", "url", "status", "note"}
_VERSION_KEYS = {"from", "to", "value", "reference", "note"}
#: A tree may not be deeper than this: policies are tables, not programs.
MAX_DEPTH = 24


@dataclass(frozen=True, slots=True)
class Reference:
    """A citable source: a policy document, or an explicit assumption."""

    key: str
    title: str
    url: str | None
    status: Literal["published", "assumption"]
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """Where one parameter value came from."""

    file: str
    key: str
    effective_from: dt.date | None
    reference: Reference | None


@dataclass(frozen=True, slots=True)
class Leaf:
    value: Any
    source: Source


@dataclass(frozen=True, slots=True)
class RegionFile:
    """One parsed policy file, before date resolution."""

    file: str
    region: str
    name: str
    parent: str | None
    valid_from: dt.date
    references: dict[str, Reference]
    tree: Any


def _fail(file: str, key: str, reason: str) -> PolicyError:
    return PolicyError(file, key, reason)


def _as_date(file: str, key: str, value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        raise _fail(file, key, "expected a date (YYYY-MM-DD), got a timestamp")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise _fail(file, key, f"expected a date (YYYY-MM-DD), got {value!r}")


def parse_region_file(file: str, doc: Any, known_refs: dict[str, Reference]) -> RegionFile:
    """Check a file's envelope and its dated nodes; ``known_refs`` are the ancestors'."""
    if not isinstance(doc, dict):
        raise _fail(file, "", "a policy file must be a YAML mapping")
    unknown = sorted(set(map(str, doc)) - _TOP_KEYS)
    if unknown:
        raise _fail(file, unknown[0], f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    for required in ("region", "name", "valid_from", "policy"):
        if required not in doc:
            raise _fail(file, required, "missing required value")
    region = str(doc["region"])
    if not _REGION_RE.match(region):
        raise _fail(file, "region", f"must be a 6-digit 行政区划 code, got {region!r}")
    parent = doc.get("parent")
    if parent is not None:
        parent = str(parent)
        if not _REGION_RE.match(parent):
            raise _fail(file, "parent", f"must be a 6-digit 行政区划 code, got {parent!r}")
        if parent == region:
            raise _fail(file, "parent", "a region cannot be its own parent")
    refs = dict(known_refs)
    raw_refs = doc.get("references") or {}
    if not isinstance(raw_refs, dict):
        raise _fail(file, "references", "must be a mapping of key -> {title, url, status}")
    for key, body in raw_refs.items():
        path = f"references.{key}"
        if not isinstance(key, str) or not _REF_KEY_RE.match(key):
            raise _fail(file, path, "reference keys are short identifiers")
        if not isinstance(body, dict):
            raise _fail(file, path, "must be a mapping with title, url, status")
        bad = sorted(set(body) - _REF_KEYS)
        if bad:
            raise _fail(file, f"{path}.{bad[0]}", "unknown key (allowed: title, url, status, note)")
        if not isinstance(body.get("title"), str) or not body["title"].strip():
            raise _fail(file, f"{path}.title", "missing required value")
        status = body.get("status", "published")
        if status not in ("published", "assumption"):
            raise _fail(file, f"{path}.status", "must be 'published' or 'assumption'")
        url = body.get("url")
        if url is not None and not isinstance(url, str):
            raise _fail(file, f"{path}.url", "must be a string")
        refs[key] = Reference(key, body["title"].strip(), url, status, body.get("note"))
    name = doc["name"]
    if not isinstance(name, str) or not name.strip():
        raise _fail(file, "name", "must be a non-empty string")
    valid_from = _as_date(file, "valid_from", doc["valid_from"])
    tree = doc["policy"]
    if not isinstance(tree, dict):
        raise _fail(file, "policy", "must be a mapping")
    _check_nodes(file, "policy", tree, refs, 0)
    return RegionFile(file, region, name.strip(), parent, valid_from, refs, tree)


def _is_cited(node: dict[Any, Any]) -> bool:
    return "value" in node and set(node) <= {"value", "reference", "note"} and "reference" in node


def _is_dated(node: dict[Any, Any]) -> bool:
    return "versions" in node and set(node) <= {"versions", "reference", "note"}


def _check_ref(file: str, key: str, ref: Any, refs: dict[str, Reference]) -> None:
    if not isinstance(ref, str) or ref not in refs:
        raise _fail(file, key, f"unknown reference {ref!r} (declare it under 'references')")


def _check_nodes(file: str, path: str, node: Any, refs: dict[str, Reference], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _fail(file, path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_nodes(file, f"{path}[{i}]", item, refs, depth + 1)
        return
    if not isinstance(node, dict):
        return
    if _is_dated(node):
        if "reference" in node:
            _check_ref(file, f"{path}.reference", node["reference"], refs)
        versions = node["versions"]
        if not isinstance(versions, list) or not versions:
            raise _fail(file, f"{path}.versions", "must be a non-empty list of {from, to?, value}")
        previous_end: dt.date | None = None
        previous_start: dt.date | None = None
        for i, version in enumerate(versions):
            vpath = f"{path}.versions[{i}]"
            if not isinstance(version, dict):
                raise _fail(file, vpath, "must be a mapping {from, to?, value}")
            bad = sorted(set(map(str, version)) - _VERSION_KEYS)
            if bad:
                raise _fail(file, f"{vpath}.{bad[0]}", "unknown key (allowed: from, to, value, reference, note)")
            if "from" not in version:
                raise _fail(file, f"{vpath}.from", "missing required value")
            if "value" not in version:
                raise _fail(file, f"{vpath}.value", "missing required value")
            start = _as_date(file, f"{vpath}.from", version["from"])
            end = _as_date(file, f"{vpath}.to", version["to"]) if version.get("to") is not None else None
            if end is not None and end < start:
                raise _fail(file, f"{vpath}.to", f"ends ({end}) before it starts ({start})")
            if previous_start is not None and start <= previous_start:
                raise _fail(file, f"{vpath}.from", "versions must be sorted by 'from', oldest first")
            if previous_start is not None and (previous_end is None or start <= previous_end):
                raise _fail(file, f"{vpath}.from", f"overlaps the previous version (from {previous_start})")
            previous_start, previous_end = start, end
            if "reference" in version:
                _check_ref(file, f"{vpath}.reference", version["reference"], refs)
            _check_nodes(file, f"{vpath}.value", version["value"], refs, depth + 1)
        return
    if _is_cited(node):
        _check_ref(file, f"{path}.reference", node["reference"], refs)
        _check_nodes(file, path, node["value"], refs, depth + 1)
        return
    if "versions" in node:
        raise _fail(file, f"{path}.versions", "a dated value allows only 'versions', 'reference' and 'note' beside it")
    for key, child in node.items():
        if not isinstance(key, str | int):
            raise _fail(file, f"{path}.{key}", "keys must be strings")
        _check_nodes(file, f"{path}.{key}", child, refs, depth + 1)


class _Whole(dict[str, Any]):
    """A mapping that came from a cited or dated node: it replaces, never merges."""


class _Missing:
    """Marks a dated node with no version in force."""


_MISSING = _Missing()


def resolve_at(region: RegionFile, date: dt.date) -> Any:
    """The file's tree at ``date`` with every scalar wrapped in a :class:`Leaf`."""
    return _resolve(region, "", region.tree, date, None, None)


def _resolve(rf: RegionFile, path: str, node: Any, date: dt.date, ref: Reference | None, since: dt.date | None) -> Any:
    if isinstance(node, list):
        items = [_resolve(rf, f"{path}[{i}]", item, date, ref, since) for i, item in enumerate(node)]
        return [item for item in items if item is not _MISSING]
    if isinstance(node, dict):
        if _is_dated(node):
            ref = rf.references[node["reference"]] if "reference" in node else ref
            for version in node["versions"]:
                start = _as_date(rf.file, path, version["from"])
                end = version.get("to")
                end = _as_date(rf.file, path, end) if end is not None else None
                if start <= date and (end is None or date <= end):
                    vref = rf.references[version["reference"]] if "reference" in version else ref
                    return _whole(_resolve(rf, path, version["value"], date, vref, start))
            return _MISSING
        if _is_cited(node):
            return _whole(_resolve(rf, path, node["value"], date, rf.references[node["reference"]], since))
        out = {}
        for key, child in node.items():
            value = _resolve(rf, f"{path}.{key}" if path else str(key), child, date, ref, since)
            if value is not _MISSING:
                out[str(key)] = value
        return out
    return Leaf(node, Source(rf.file, path, since, ref))


def _whole(value: Any) -> Any:
    return _Whole(value) if isinstance(value, dict) else value


def merge(parent: Any, child: Any) -> Any:
    """Child overrides parent: plain mappings merge key by key; a cited or dated
    block, a list or a scalar replaces the parent's value whole."""
    if isinstance(parent, dict) and isinstance(child, dict) and not isinstance(child, _Whole):
        out = dict(parent)
        for key, value in child.items():
            out[key] = merge(parent[key], value) if key in parent else value
        return out
    return child


def unwrap(tree: Any, sources: dict[str, Leaf], path: str = "") -> Any:
    """Strip :class:`Leaf` wrappers, collecting each leaf under its key path."""
    if isinstance(tree, Leaf):
        sources[path] = tree
        return tree.value
    if isinstance(tree, dict):
        return {k: unwrap(v, sources, f"{path}.{k}" if path else k) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unwrap(v, sources, f"{path}[{i}]") for i, v in enumerate(tree)]
    return tree


def boundaries(region: RegionFile) -> set[dt.date]:
    """Every date at which some value of the file starts or stops being in force."""
    found: set[dt.date] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if _is_dated(node):
                for version in node["versions"]:
                    found.add(_as_date(region.file, "", version["from"]))
                    if version.get("to") is not None:
                        found.add(_as_date(region.file, "", version["to"]) + dt.timedelta(days=1))
                    walk(version["value"])
            else:
                for child in node.values():
                    walk(child)

    walk(region.tree)
    return found
