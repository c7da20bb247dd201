"""Money in fen at the edges: formatting and parsing are exact inverses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yibao.money import format_fen, parse_fen


@pytest.mark.parametrize(
    ("fen", "text"), [(0, "0.00"), (5, "0.05"), (-5, "-0.05"), (100, "1.00"), (12345, "123.45"), (-12345, "-123.45")]
)
def test_format_fen(fen: int, text: str) -> None:
    assert format_fen(fen) == text


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_then_parse_is_identity(fen: int) -> None:
    text = format_fen(fen)
    assert text.count(".") == 1 and len(text.split(".")[1]) == 2
    assert parse_fen(text, allow_negative=True) == fen


def test_amounts_of_a_wider_scale_are_exact_when_the_extra_digits_are_zero() -> None:
    assert parse_fen("19.000") == 1900 and parse_fen("1075.3000") == 107530
    assert parse_fen("-2.500", allow_negative=True) == -250
    for inexact in ("19.001", "1075.305", "1.0000000000000000001", "１９.000"):
        with pytest.raises(ValueError):
            parse_fen(inexact)
