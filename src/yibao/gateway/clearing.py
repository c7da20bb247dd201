"""3203 清算申请 and 3204 清算申请撤销 (and the 3203A / 3204A spellings of provincial specs).

The handlers read and bound the input, hand it to :mod:`yibao.service.clearing` (which checks
the declared totals against the institution's own settlements, records the application and
keeps it idempotent per msgid) and answer with the national field names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RequestError
from ..money import format_fen
from ..service.clearing import (
    AMOUNT_FIELDS,
    ClearingMismatch,
    ClearingRefused,
    ClearingRequest,
    apply_for_clearing,
    revoke_application,
)
from .inputs import Call, GatewayError, amount_fen, date_of, text_of

__all__ = ["HANDLERS", "MAX_CLEARING_DAYS"]

#: The longest period one clearing application may cover.
MAX_CLEARING_DAYS = 366
#: Spellings of the same field seen in public client code: (national name, other spelling).
_ALIASES = (("med_sumfee", "medsumfee"), ("clr_optins", "setl_optins"), ("clr_appy_evt_id", "clr_apply_evt_id"))


def _node(call: Call) -> tuple[Mapping[str, Any], str]:
    inner = call.data.get("data")
    if isinstance(inner, Mapping):
        return inner, "input.data"
    return call.data, "input"


def _field(body: Mapping[str, Any], key: str, where: str, *, required: bool, max_len: int) -> tuple[str, str]:
    """(value, the name it came under): the national name, or the other spelling when only that is sent;
    both with different values is refused."""
    other = next((alt for name, alt in _ALIASES if name == key), None)
    value = text_of(body, key, where, required=False, max_len=max_len)
    if other is not None:
        alt = text_of(body, other, where, required=False, max_len=max_len)
        if alt and value and alt != value:
            raise RequestError(f"{where}.{key}", f"与 {other} 不一致 ({value[:20]} / {alt[:20]})")
        if alt and not value:
            return alt, other
    if required and not value:
        raise RequestError(f"{where}.{key}", "缺少必填字段")
    return value, key


def _code(body: Mapping[str, Any], key: str, where: str, max_len: int, *, required: bool = False) -> str:
    value, _ = _field(body, key, where, required=required, max_len=max_len)
    if value and not (value.isascii() and value.isalnum()):
        raise RequestError(f"{where}.{key}", f"只能含半角字母和数字, 收到 {value[:20]!r}")
    return value


def _request(body: Mapping[str, Any], where: str) -> ClearingRequest:
    clr_type = _code(body, "clr_type", where, 30, required=True)
    clr_way = _code(body, "clr_way", where, 30, required=True)
    clr_optins = _code(body, "clr_optins", where, 6)
    if clr_optins and not (len(clr_optins) == 6 and clr_optins.isdigit()):
        raise RequestError(f"{where}.clr_optins", f"须为 6 位医保区划代码, 收到 {clr_optins!r}")
    setlym = _code(body, "setlym", where, 6)
    if setlym and not (len(setlym) == 6 and setlym.isdigit() and 1 <= int(setlym[4:]) <= 12):
        raise RequestError(f"{where}.setlym", f"须为清算年月 yyyyMM, 收到 {setlym!r}")
    begndate = date_of(text_of(body, "begndate", where, max_len=30), f"{where}.begndate")
    enddate = date_of(text_of(body, "enddate", where, max_len=30), f"{where}.enddate")
    if enddate < begndate:
        raise RequestError(f"{where}.enddate", "结束日期早于开始日期")
    if (enddate - begndate).days >= MAX_CLEARING_DAYS:
        raise RequestError(f"{where}.enddate", f"一次清算申请最多 {MAX_CLEARING_DAYS} 天")
    amounts = []
    for key in AMOUNT_FIELDS:
        text, name = _field(body, key, where, required=True, max_len=40)
        amounts.append((key, amount_fen(text, f"{where}.{name}")))
    psntime_text = text_of(body, "psntime", where, required=False, max_len=12)
    # Clients typed with decimals send a count as 1.0: a zero fraction is the same whole number.
    whole, dot, fraction = psntime_text.partition(".")
    if dot and fraction and set(fraction) == {"0"}:
        psntime_text = whole
    if psntime_text and not (psntime_text.isascii() and psntime_text.isdigit() and len(psntime_text) <= 9):
        raise RequestError(f"{where}.psntime", f"须为不超过 9 位的非负整数, 收到 {psntime_text[:20]!r}")
    return ClearingRequest(
        clr_type=clr_type, clr_way=clr_way, clr_optins=clr_optins, setlym=setlym, begndate=begndate, enddate=enddate,
        amounts=tuple(amounts), psntime=int(psntime_text) if psntime_text else None,
    )  # fmt: skip


def _mismatch(exc: ClearingMismatch, where: str) -> GatewayError:
    parts = []
    for field, declared, ours in exc.differences:
        shown = (str(declared), str(ours)) if field == "psntime" else (format_fen(declared), format_fen(ours))
        parts.append(f"[{where}.{field}] 申报 {shown[0]} / 中心 {shown[1]}")
    return GatewayError("清算申请与本机构该期间结算不符, 未受理: " + "; ".join(parts))


def apply(call: Call) -> dict[str, Any]:
    body, where = _node(call)
    request = _request(body, where)
    try:
        done = apply_for_clearing(call.db, call.fixmedins_code, call.msgid, request, call.clock)
    except ClearingMismatch as exc:
        raise _mismatch(exc, where) from None
    except ClearingRefused as exc:
        raise GatewayError(str(exc)) from None
    return {"result": {"clr_appy_evt_id": done.clr_appy_evt_id}}


def revoke(call: Call) -> dict[str, Any]:
    body, where = _node(call)
    clr_appy_evt_id = _code(body, "clr_appy_evt_id", where, 40, required=True)
    _code(body, "clr_optins", where, 6)  # read and bounded; the application knows its agency
    try:
        revoke_application(call.db, call.fixmedins_code, call.msgid, clr_appy_evt_id, call.clock)
    except ClearingRefused as exc:
        raise GatewayError(str(exc)) from None
    return {}


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "3203": apply,
    "3203A": apply,
    "3204": revoke,
    "3204A": revoke,
}
