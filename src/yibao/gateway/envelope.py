"""Reading the national request envelope: bounded, exact, and refused by name.

The body is read only after the signature headers were verified (app.py). It is then
decoded as UTF-8 JSON with these limits, each refused with the JSON path of the value
and a Chinese reason, before any handler sees it:

* nesting at most :data:`MAX_DEPTH` levels (the national envelopes use five);
* a string at most :data:`MAX_TEXT` characters, without control characters (NUL …)
  or unpaired surrogates, which no field of the interface carries and no database stores;
* an object key at most :data:`MAX_KEY` characters;
* an integer at most :data:`MAX_DIGITS` digits: amounts, quantities and counts are then
  bounded per field by the request parser (engine/request.py) and the handlers;
* NaN and Infinity (not JSON, though some encoders write them) are refused;
* a JSON number with a fraction or exponent (``19.0``, ``1e3``) is kept as its exact
  literal text, never a binary float: amount fields then accept or refuse it as they
  accept or refuse the same decimal string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import RequestError

__all__ = ["MAX_DEPTH", "MAX_DIGITS", "MAX_KEY", "MAX_TEXT", "read_envelope", "text_field"]

MAX_DEPTH = 12
MAX_TEXT = 8_000
MAX_KEY = 64
MAX_DIGITS = 18
#: What no field carries: C0 controls but tab, newline and carriage return; DEL; lone surrogates.
_BAD_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


class _Oversized(str):
    """A number literal with more digits than any field may hold, kept as text until its path is known."""


def _bounded_int(literal: str) -> int | str:
    if len(literal.lstrip("-")) > MAX_DIGITS:
        return _Oversized(literal)
    return int(literal)


def _number_text(literal: str) -> str:
    return _Oversized(literal) if len(literal) > MAX_DIGITS + 8 else literal


class _NotANumber(str):
    """NaN or Infinity, which JSON itself does not allow; kept until its path is known."""


_DECODER = json.JSONDecoder(parse_float=_number_text, parse_int=_bounded_int, parse_constant=_NotANumber)


def read_envelope(raw: bytes) -> dict[str, Any]:
    """The envelope as a dict, every value checked (see the module docstring)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("", f"报文不是合法的 UTF-8 编码 (第 {exc.start} 字节)") from None
    try:
        decoded = _DECODER.decode(text)
    except RecursionError:
        raise RequestError("", f"报文嵌套层数过多 (最多 {MAX_DEPTH} 层)") from None
    except json.JSONDecodeError as exc:
        raise RequestError("", f"报文不是合法的 JSON: 第 {exc.lineno} 行第 {exc.colno} 列, {exc.msg}") from None
    if not isinstance(decoded, dict):
        raise RequestError("", "报文必须是 JSON 对象")
    _check(decoded, "", 1)
    return decoded


def _check(value: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise RequestError(path, f"嵌套层数过多 (最多 {MAX_DEPTH} 层)")
    if isinstance(value, _Oversized):
        raise RequestError(path, f"数值位数过多 (最多 {MAX_DIGITS} 位): {value[:24]}…")
    if isinstance(value, _NotANumber):
        raise RequestError(path, f"不是有效的数值: {value}")
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            if len(key) > MAX_KEY or _BAD_TEXT.search(key):
                raise RequestError(path or "报文", f"字段名不合法: {key[:MAX_KEY]!r}")
            _check(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]", depth + 1)


def _check_text(value: str, path: str) -> None:
    if len(value) > MAX_TEXT:
        raise RequestError(path, f"长度超过 {MAX_TEXT} 个字符")
    found = _BAD_TEXT.search(value)
    if found is not None:
        raise RequestError(path, f"含不允许的控制字符 (U+{ord(found.group()):04X})")


def text_field(envelope: Mapping[str, Any], key: str, *, max_len: int, required: bool = False) -> str:
    """A top-level envelope field as text: a string or an integer, at most ``max_len`` printable ASCII
    characters (national codes and identifiers are ASCII); refused by name otherwise."""
    value = envelope.get(key)
    if value is None or value == "":
        if required:
            raise RequestError(key, "缺少必填项")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RequestError(key, "须为字符串")
    text = str(value).strip()
    if len(text) > max_len:
        raise RequestError(key, f"长度超过 {max_len} 个字符")
    if text and not (text.isascii() and text.isprintable()):
        raise RequestError(key, "只能含可打印的 ASCII 字符")
    if required and not text:
        raise RequestError(key, "缺少必填项")
    return text
