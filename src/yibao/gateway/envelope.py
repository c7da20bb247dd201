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
* what real clients send is normalised: the string ``"null"`` is no value; ISO date-times
  (``2026-12-04T09:30:00``, with milliseconds or ``+08:00``) become ``2026-12-04 09:30:00``;
  ``input`` sent as a JSON string is read as the object it holds; a body whose Content-Type
  names GBK (or GB2312, GB18030) is read as such;
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


#: Charsets a Content-Type may name besides UTF-8: GBK and its relatives, read as GB 18030 (their superset).
_GB_CHARSETS = frozenset({"gbk", "gb2312", "gb18030", "cp936"})
#: ISO date-times as Java and .NET clients write them: 2026-12-04T09:30:00, with milliseconds or +08:00.
_ISO_T = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(\.\d{1,7})?(\+08:00)?$", re.ASCII)


def read_envelope(raw: bytes, charset: str = "utf-8") -> dict[str, Any]:
    """The envelope as a dict, every value checked and normalised (see the module docstring)."""
    gb = charset.lower() in _GB_CHARSETS
    try:
        text = raw.decode("gb18030" if gb else "utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("", f"报文不是合法的 {'GBK' if gb else 'UTF-8'} 编码 (第 {exc.start} 字节)") from None
    decoded = _decode(text, "")
    if not isinstance(decoded, dict):
        raise RequestError("", "报文必须是 JSON 对象")
    inner = decoded.get("input")
    if isinstance(inner, str) and inner.lstrip().startswith("{"):
        decoded["input"] = _decode(inner, "input")  # some clients send input as a JSON string
    cleaned: dict[str, Any] = _clean(decoded, "", 1)
    return cleaned


def _decode(text: str, path: str) -> Any:
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise RequestError(path, f"报文嵌套层数过多 (最多 {MAX_DEPTH} 层)") from None
    except json.JSONDecodeError as exc:
        where = f"{path} 中" if path else "报文"
        raise RequestError(path, f"{where}不是合法的 JSON: 第 {exc.lineno} 行第 {exc.colno} 列, {exc.msg}") from None


def _clean(value: Any, path: str, depth: int) -> Any:
    """``value`` checked, with what clients write for "nothing" ("null") and ISO date-times normalised."""
    if depth > MAX_DEPTH:
        raise RequestError(path, f"嵌套层数过多 (最多 {MAX_DEPTH} 层)")
    if isinstance(value, _Oversized):
        raise RequestError(path, f"数值位数过多 (最多 {MAX_DIGITS} 位): {value[:24]}…")
    if isinstance(value, _NotANumber):
        raise RequestError(path, f"不是有效的数值: {value}")
    if isinstance(value, str):
        _check_text(value, path)
        if value == "null":
            return None
        iso = _ISO_T.match(value)
        return f"{iso.group(1)} {iso.group(2)}" if iso else value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if len(key) > MAX_KEY or _BAD_TEXT.search(key):
                raise RequestError(path or "报文", f"字段名不合法: {key[:MAX_KEY]!r}")
            out[key] = _clean(item, f"{path}.{key}" if path else key, depth + 1)
        return out
    if isinstance(value, list):
        return [_clean(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    return value


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
