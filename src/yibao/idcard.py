"""Resident identity card numbers (公民身份号码, GB 11643-1999).

18 characters: 6-digit region code, 8-digit birth date, 3-digit sequence (odd for
men, even for women), and a check character computed with ISO 7064 MOD 11-2.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import NamedTuple

__all__ = ["IdCard", "check_digit", "parse_idcard"]

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_RE = re.compile(r"^\d{17}[\dX]$", re.ASCII)


class IdCard(NamedTuple):
    """What an ID number says about its holder."""

    number: str
    region: str
    birth_date: dt.date
    gend: str  # "1" male, "2" female, as the interface codes gender


def check_digit(first17: str) -> str:
    """The 18th character for the first 17 digits."""
    assert len(first17) == 17 and first17.isdigit(), first17
    return _CHECK[sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def parse_idcard(number: str) -> IdCard:
    """Validate an 18-character ID number; ``ValueError`` says what is wrong."""
    text = number.strip().upper()
    if not _RE.match(text):
        raise ValueError("must be 17 digits followed by a digit or X")
    expected = check_digit(text[:17])
    if text[17] != expected:
        raise ValueError(f"check digit is {text[17]}, expected {expected}")
    try:
        birth = dt.date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        raise ValueError(f"birth date {text[6:14]} is not a date") from None
    if birth.year < 1880:
        raise ValueError(f"birth year {birth.year} is implausible")
    return IdCard(text, text[:6], birth, "1" if int(text[16]) % 2 else "2")
