"""Money and ratios: integer fen inside, decimal strings at the edges.

金额在系统内一律是"分"为单位的整数; 比例 (报销比例、先行自付比例) 是"万分之一"为单位的
整数 (basis points, ``bp``), so ``0.6500`` is ``6500``. The interface carries ratios as
decimal(5,4), so every ratio it can express is exact in bp, and all arithmetic stays in
integers. The only rounding rule in the project is half-up to the fen (四舍五入到分),
applied once per fund layer; every other share is derived as a remainder.
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = [
    "BP_ONE",
    "MAX_AMOUNT_FEN",
    "apply_bp",
    "format_bp",
    "format_fen",
    "parse_bp",
    "parse_fen",
    "round_div_half_up",
]

#: A ratio of 1 (100%) in basis points.
BP_ONE = 10_000

#: decimal(16,2) in the interface: at most 14 integer digits.
MAX_AMOUNT_FEN = 10**16 - 1

# ASCII digits only (\d alone also takes full-width and other scripts' digits).
_AMOUNT_RE = re.compile(r"^[+-]?\d{1,14}(\.\d{1,2})?$", re.ASCII)
_PADDED_RE = re.compile(r"^([+-]?\d{1,14}\.\d{2})0{1,16}$", re.ASCII)
_RATIO_RE = re.compile(r"^[+-]?\d{1,5}(\.\d{1,4})?$", re.ASCII)


def _shown(value: object) -> str:
    """A value quoted for an error message, cut to a sane length."""
    if isinstance(value, str):
        return repr(value[:40])
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _as_text(value: object, what: str) -> str:
    # bool is an int subclass and float is inexact: both are refused outright.
    if isinstance(value, bool | float):
        raise ValueError(f"{what}须为十进制数字字符串或整数, 不能是 {type(value).__name__} 类型: {value!r}")
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int | str):
        return str(value).strip()
    raise ValueError(f"{what}须为十进制数字字符串, 不能是 {type(value).__name__} 类型: {_shown(value)}")


def parse_fen(value: object, *, allow_negative: bool = False) -> int:
    """Parse a yuan amount (``"123.45"``, ``123``, ``Decimal``) into integer fen.

    Raises ``ValueError`` with a short reason in Chinese; callers add the field name.
    """
    text = _as_text(value, "金额")
    if not _AMOUNT_RE.match(text):
        exact = _PADDED_RE.match(text)  # 19.000, as decimal JSON numbers of a wider scale arrive: exact in fen
        if exact is None:
            raise ValueError(f"不是合法金额 (至多 14 位整数、2 位小数): {_shown(value)}")
        text = exact.group(1)
    sign = -1 if text.startswith("-") else 1
    whole, _, cents = text.lstrip("+-").partition(".")
    fen = sign * (int(whole) * 100 + int((cents + "00")[:2]))
    if fen < 0 and not allow_negative:
        raise ValueError(f"金额不能为负数: {_shown(value)}")
    return fen


#: ".00" … ".99": the fen part of a yuan string.
_CENTS = tuple(f".{cents:02d}" for cents in range(100))


def format_fen(fen: int) -> str:
    """Integer fen as a yuan string with exactly two decimals: 12345 -> "123.45"."""
    # Called ~200 times per settlement reply, hence the table of cents.
    if fen >= 0:
        return str(fen // 100) + _CENTS[fen % 100]
    return "-" + str(-fen // 100) + _CENTS[-fen % 100]


def parse_bp(value: object, *, signed: bool = False) -> int:
    """Parse a ratio with at most four decimals into basis points: "0.65" -> 6500.

    Unsigned ratios must lie in [0, 1]; signed ones (point adjustments) in [-1, 1].
    """
    text = _as_text(value, "比例")
    if not _RATIO_RE.match(text):
        raise ValueError(f"不是合法比例 (至多 4 位小数): {_shown(value)}")
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("+-").partition(".")
    bp = sign * (int(whole) * BP_ONE + int((frac + "0000")[:4]))
    low = -BP_ONE if signed else 0
    if not low <= bp <= BP_ONE:
        raise ValueError(f"比例须在 [{'-1' if signed else '0'}, 1] 之内: {_shown(value)}")
    return bp


#: ".0000" … ".9999": the fraction of a ratio, made on first use.
_FRACTIONS: dict[int, str] = {}


def format_bp(bp: int) -> str:
    """Basis points as the interface's decimal(5,4): 6500 -> "0.6500"."""
    whole, frac = divmod(abs(bp), BP_ONE)
    text = _FRACTIONS.get(frac)
    if text is None:
        text = _FRACTIONS[frac] = f".{frac:04d}"  # at most BP_ONE entries
    return ("-" if bp < 0 else "") + str(whole) + text


def round_div_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half-up, for non-negative numerators."""
    assert numerator >= 0 and denominator > 0, (numerator, denominator)
    return (2 * numerator + denominator) // (2 * denominator)


def apply_bp(fen: int, bp: int) -> int:
    """``fen × bp / 10000`` rounded half-up to the fen (the one rounding rule)."""
    return round_div_half_up(fen * bp, BP_ONE)
