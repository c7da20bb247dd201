"""Reading a national ``input``: the call being answered and its field readers.

Every transaction module reads its fields through these, so a missing or malformed
field is refused the same way everywhere: ``RequestError(field, reason)``, answered
as ``infcode -1`` with ``[input.data.field] reason`` in Chinese. Nothing here touches
the database: the handlers pass what they read to the service layer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import RequestError, YibaoError
from ..money import parse_fen
from ..service.credentials import CERT_TYPES, Credential
from ..service.settlement import SettlementService
from ..service.uow import Engine

__all__ = [
    "Call", "GatewayError", "amount_fen", "credential_of", "date_of", "declared_total", "derived_id", "flag_of",
    "optional_credential", "payload_of", "text_of",
]  # fmt: skip

#: A credential number (card number, e-voucher code, ID number): printable ASCII, bounded.
_CERT_NO_RE = re.compile(r"^[\x21-\x7e]{1,64}$")
_CARD_SN_RE = re.compile(r"^[\x21-\x7e]{1,32}$")
#: Free text fields (names, codes) are bounded.
MAX_TEXT = 500


class GatewayError(YibaoError):
    """A business refusal answered with a non-zero infcode."""

    code = "GATEWAY_REFUSED"


@dataclass(frozen=True)
class Call:
    """One envelope being answered: who sends it, its ids, its ``input``, and the services that answer it."""

    db: Engine
    service: SettlementService
    clock: Callable[[], dt.datetime]
    infno: str
    msgid: str
    fixmedins_code: str
    envelope: Mapping[str, Any]
    data: Mapping[str, Any]

    def field(self, key: str, *, required: bool = True) -> str:
        return text_of(self.data, key, "input", required=required)


def payload_of(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """National inputs nest the business fields under ``data`` (or another key); accept both."""
    inner = data.get(key)
    return inner if isinstance(inner, Mapping) else data


def text_of(body: Mapping[str, Any], key: str, where: str, *, required: bool = True, max_len: int = MAX_TEXT) -> str:
    """A text field (a JSON number is taken as its text, as HIS clients send codes either way)."""
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
        raise RequestError(f"{where}.{key}", "须为字符串")
    result = "" if value is None else str(value).strip()
    if required and not result:
        raise RequestError(f"{where}.{key}", "缺少必填字段")
    if len(result) > max_len:
        raise RequestError(f"{where}.{key}", f"过长 (至多 {max_len} 个字符)")
    return result


def flag_of(body: Mapping[str, Any], key: str, where: str) -> str:
    """A 0/1 flag (absent = 0)."""
    value = body.get(key)
    result = "0" if value is None or value == "" else str(value).strip()
    if result not in ("0", "1"):
        raise RequestError(f"{where}.{key}", f"须为 0 或 1, 收到 {str(value)[:20]!r}")
    return result


def date_of(value: Any, field: str) -> dt.date:
    """A date, or the date part of a date-time (``2026-03-01``, ``2026-03-01 08:00:00``)."""
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise RequestError(field, f"不是合法日期 (yyyy-MM-dd): {str(value)[:40]!r}") from None


def amount_fen(value: Any, field: str) -> int:
    """An amount as HIS systems send it (decimal string, integer, or a JSON number's exact text) in fen;
    may be negative."""
    try:
        return parse_fen(value, allow_negative=True)
    except ValueError as exc:
        raise RequestError(field, f"不是合法金额 (最多两位小数): {str(value)[:40]}") from exc


def declared_total(body: Mapping[str, Any], where: str) -> int | None:
    """The ``medfee_sumamt`` an input declares for the lines it settles, in fen (None if it declares none)."""
    declared = body.get("medfee_sumamt")
    if declared is None or declared == "":
        return None
    return amount_fen(declared, f"{where}.medfee_sumamt")


def derived_id(prefix: str, call: Call) -> str:
    """An identifier the platform hands out, derived from the sender's message: a retry finds the first one."""
    digest = hashlib.sha256(f"{call.fixmedins_code}|{call.infno}|{call.msgid}".encode()).hexdigest()
    return f"{prefix}{digest[:23]}"


def credential_of(body: Mapping[str, Any], where: str = "input", *, card_sn_required: bool = True) -> Credential:
    """The credential an input names. ``card_sn`` (卡识别码) is read off the card at 1101; registrations
    (2201, 2401) carry none in the national interface, and a card number then counts as an ID number does
    (its status is checked, and account payment still needs the card password)."""
    cert_type = str(body.get("mdtrt_cert_type") or "").strip()
    if cert_type not in CERT_TYPES:
        raise RequestError(f"{where}.mdtrt_cert_type", "须为 01 (电子凭证), 02 (身份证) 或 03 (社保卡)")
    number = str(body.get("mdtrt_cert_no") or "").strip()
    if not number:
        raise RequestError(f"{where}.mdtrt_cert_no", "缺少必填字段")
    if not _CERT_NO_RE.match(number):
        raise RequestError(f"{where}.mdtrt_cert_no", "凭证号只能含可打印的半角 ASCII 字符, 至多 64 位 (全角字符不可用)")
    card_sn = str(body.get("card_sn") or "").strip() or None
    if cert_type == "03" and card_sn is None and card_sn_required:
        raise RequestError(f"{where}.card_sn", "社保卡须提供卡识别码 card_sn")
    if card_sn is not None and not _CARD_SN_RE.match(card_sn):
        raise RequestError(f"{where}.card_sn", "卡识别码只能含可打印的半角 ASCII 字符, 至多 32 位")
    pin = str(body.get("pin") or "").strip() or None
    if pin is not None and len(pin) > 64:
        raise RequestError(f"{where}.pin", "过长")
    return Credential(cert_type, number, card_sn, pin)


def optional_credential(body: Mapping[str, Any], where: str = "input") -> Credential | None:
    """The credential an input names, if it names one (queries accept a psn_no instead)."""
    if body.get("mdtrt_cert_type") or body.get("mdtrt_cert_no"):
        return credential_of(body, where)
    return None
