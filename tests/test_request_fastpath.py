"""The fast path for clean fee lines must agree with the checked parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from yibao.engine.request import _checked_line, _fast_line
from yibao.errors import RequestError

digits = st.integers(min_value=0, max_value=10**6)
codes = st.sampled_from(["001102000030000", "XL02BBA326A001010102180", "ABC", "a b", "", " 01"])


@st.composite
def raw_lines(draw: st.DrawFn) -> dict[str, object]:
    pric_micro = draw(st.integers(min_value=0, max_value=10**9))
    cnt_units = draw(st.integers(min_value=0, max_value=10**6))
    pric = f"{pric_micro // 10**6}.{pric_micro % 10**6:06d}".rstrip("0").rstrip(".")
    cnt = f"{cnt_units // 10**4}.{cnt_units % 10**4:04d}".rstrip("0").rstrip(".")
    fen = (2 * pric_micro * cnt_units + 10**8) // (2 * 10**8) + draw(st.sampled_from([0, 0, 0, 1]))
    line: dict[str, object] = {"pric": pric, "cnt": cnt, "det_item_fee_sumamt": f"{fen // 100}.{fen % 100:02d}"}
    for key in ("hilist_code", "med_list_codg", "chrgitm_lv", "med_chrgitm_type", "hosp_appr_flag"):
        if draw(st.booleans()):
            line[key] = draw(codes | st.sampled_from(["01", "02", "03", "05", "0", "1"]))
    if draw(st.booleans()):
        line["feedetl_sn"] = draw(st.sampled_from(["1", "A-7", "", " 2", 3]))
    if draw(st.booleans()):
        line["hilist_name"] = draw(st.sampled_from(["诊查费", " 床位费 ", ""]))
    return line


@settings(max_examples=400, deadline=None)
@given(raw_lines())
def test_fast_path_agrees_with_checked_parser(raw: dict[str, object]) -> None:
    fast = _fast_line(raw, 3)
    try:
        checked = _checked_line(raw, 3)
    except RequestError:
        assert fast is None, "the fast path accepted a line the checked parser rejects"
        return
    assert fast is None or fast == checked
