"""YAML reading for policy files: exact decimals, no duplicate keys.

PyYAML turns ``0.65`` into a binary float; policy numbers must stay exact, so
floats are constructed as ``Decimal`` from their source text. A key repeated in
one mapping is an error rather than a silent override.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import yaml

__all__ = ["YamlError", "load_yaml"]


class YamlError(ValueError):
    """Syntax or structure error in a YAML document, with line information and key path."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class _ExactLoader(yaml.SafeLoader):
    pass


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    assert isinstance(node, yaml.ScalarNode)
    text = str(loader.construct_scalar(node)).replace("_", "")
    return Decimal(text)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
    assert isinstance(node, yaml.MappingNode)
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        # Dates as keys are allowed too (they hash), but lists are not.
        if not isinstance(key, str | int) and not hasattr(key, "isoformat"):
            raise YamlError(f"line {key_node.start_mark.line + 1}: unhashable key")
        if key in result:
            raise YamlError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
_ExactLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _check_duplicates(node: yaml.Node | None, path: str) -> None:
    """Find a key repeated in one mapping, naming its key path (composition keeps both)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            where = f"{path}.{key}" if path else key
            if key in seen:
                raise YamlError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}", where)
            seen.add(key)
            _check_duplicates(value_node, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, f"{path}[{i}]")


def load_yaml(text: str) -> Any:
    """Parse one YAML document into plain Python values (Decimal for reals)."""
    try:
        _check_duplicates(yaml.compose(text, Loader=_ExactLoader), "")
        return yaml.load(text, Loader=_ExactLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YamlError(f"{where}{exc.problem}") from None
    except yaml.YAMLError as exc:
        raise YamlError(str(exc)) from None
