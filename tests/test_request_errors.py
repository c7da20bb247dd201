"""Malformed settlement requests are refused naming the field; HIS spellings are accepted."""

from __future__ import annotations

import copy
import datetime as dt
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from yibao import Catalog, CatalogItem, PolicyStore, RequestError, load_demo_catalog, parse_request, settle

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "src" / "yibao" / "data" / "policies"
EXAMPLE = json.loads((ROOT / "examples" / "dandong-outpatient.json").read_text("utf-8"))
DELETE = object()


@cache
def presets() -> PolicyStore:
    return PolicyStore.load_dir(PRESETS)


@cache
def catalog() -> Catalog:
    return load_demo_catalog()


def request(*changes: tuple[tuple[Any, ...], Any]) -> dict[str, Any]:
    """The Dandong example with ``(path, value)`` changes; ``DELETE`` removes the key."""
    data = copy.deepcopy(EXAMPLE)
    for path, value in changes:
        node = data
        for key in path[:-1]:
            node = node[key]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return data


def run(data: Any) -> Any:
    return settle(presets(), catalog(), parse_request(data))


def rejected(data: Any, field: str, *words: str, code: str = "REQUEST_INVALID") -> RequestError:
    with pytest.raises(RequestError) as info:
        run(data)
    err = info.value
    assert err.field == field, (err.field, str(err))
    assert err.code == code, err.code
    assert str(err).startswith(f"{field}: ") if field else True
    for word in words:
        assert word in err.reason, (word, err.reason)
    return err


LINE = ("feedetail", 0)
ACC = ("accumulators", "values")
DEDC = "outpatient_pooling.dedc_amt"


# -- shapes and missing values -------------------------------------------------------


@pytest.mark.parametrize("data", [[], "request", 42, None], ids=["list", "string", "number", "null"])
def test_a_request_must_be_an_object(data: Any) -> None:
    rejected(data, "", "JSON 对象")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ((("feedetail",), []), "feedetail", ["非空的费用明细列表"]),
        ((("feedetail",), {}), "feedetail", ["非空的费用明细列表"]),
        ((("feedetail",), DELETE), "feedetail", ["非空的费用明细列表"]),
        (((*LINE,), "line"), "feedetail[0]", ["须为 JSON 对象"]),
        ((("accumulators",), []), "accumulators", ["须为 JSON 对象"]),
        ((("accumulators", "values"), ["x"]), "accumulators.values", ["须为 JSON 对象"]),
        ((("accumulators", "extra"), 1), "accumulators.extra", ["未知字段"]),
        ((("accounts",), ["x"]), "accounts", ["须为 JSON 对象"]),
        ((("accounts", "family"), {"psn_no": "X"}), "accounts.family", ["的列表"]),
        ((("accounts", "family"), [{}] * 21), "accounts.family", ["至多 20"]),
        ((("accounts", "family"), ["x"]), "accounts.family[0]", ["须为 JSON 对象"]),
        ((("psn_idet_types",), "dibao"), "psn_idet_types", ["的列表"]),
        ((("filings",), "referral"), "filings", ["须为 JSON 对象"]),
        ((("filings",), {"offsite": "moon"}), "filings.offsite", ["之一", "'moon'"]),
        ((("filings",), {"where": 1}), "filings.where", ["未知字段"]),
        ((("filings",), {"diseases": "E11"}), "filings.diseases", ["的列表"]),
    ],
)
def test_malformed_shapes(change: tuple[tuple[Any, ...], Any], field: str, words: list[str]) -> None:
    rejected(request(change), field, *words)


@pytest.mark.parametrize(
    "path",
    [
        ("begntime",), ("gend",), ("psn_no",), ("insutype",), ("psn_type",), ("med_type",), ("hosp_lv",),
        ("insuplc_admdvs",), ("mdtrtarea_admvs",), ("age",), (*LINE, "pric"), (*LINE, "cnt"),
        (*LINE, "det_item_fee_sumamt"),
    ],
    ids=lambda p: ".".join(map(str, p)),
)  # fmt: skip
@pytest.mark.parametrize("how", [DELETE, "", "  ", None], ids=["absent", "empty", "blank", "null"])
def test_missing_required_fields(path: tuple[Any, ...], how: Any) -> None:
    field = "feedetail[0]." + path[-1] if path[0] == "feedetail" else path[0]
    # The amount is parsed as money first, so its reason reads "not an amount" rather than "missing".
    words = [] if path[-1] == "det_item_fee_sumamt" else ["缺少必填字段"]
    err = rejected(request((path, how)), field, *words)
    assert err.reason


def test_a_line_needs_a_code_or_a_class() -> None:
    rejected(request(((*LINE, "chrgitm_lv"), DELETE)), "feedetail[0].hilist_code", "hilist_code", "chrgitm_lv")


def test_a_family_account_needs_its_person_and_relation() -> None:
    rejected(request((("accounts", "family"), [{"relation": "spouse"}])), "accounts.family[0].psn_no", "缺少必填字段")
    rejected(request((("accounts", "family"), [{"psn_no": "X"}])), "accounts.family[0].relation", "缺少必填字段")


# -- amounts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ((*LINE, "det_item_fee_sumamt"), "-1000.00", "feedetail[0].det_item_fee_sumamt"),
        ((*LINE, "pric"), "-1000.00", "feedetail[0].pric"),
        ((*LINE, "cnt"), "-1", "feedetail[0].cnt"),
        ((*LINE, "pric_uplmt_amt"), "-5", "feedetail[0].pric_uplmt_amt"),
        (("accounts", "current_year"), "-0.01", "accounts.current_year"),
        (("accounts", "historical"), -1, "accounts.historical"),
        (ACC, {DEDC: "-1"}, f"accumulators.values.{DEDC}"),
    ],
)  # fmt: skip
def test_negative_amounts(path: tuple[Any, ...], value: Any, field: str) -> None:
    rejected(request((path, value)), field, "不能为负数")


@pytest.mark.parametrize(
    ("amount", "pric", "cnt"),
    [("999.99", "1000.00", "1"), ("1000.01", "1000.00", "1"), ("100.00", "10", "2"), ("0.98", "0.333", "3")],
)
def test_amount_must_be_price_times_quantity(amount: str, pric: str, cnt: str) -> None:
    data = request(((*LINE, "det_item_fee_sumamt"), amount), ((*LINE, "pric"), pric), ((*LINE, "cnt"), cnt))
    err = rejected(data, "feedetail[0].det_item_fee_sumamt", "不等于 单价 × 数量", "pric × cnt")
    assert pric in err.reason and cnt in err.reason


@pytest.mark.parametrize(
    ("amount", "pric", "cnt"),
    [("1.00", "0.333", "3"), ("0.50", "0.125", "4"), ("12.35", "2.47", "5"), ("0.01", "0.005", "1")],
)
def test_amount_is_price_times_quantity_rounded_half_up_to_the_fen(amount: str, pric: str, cnt: str) -> None:
    data = request(((*LINE, "det_item_fee_sumamt"), amount), ((*LINE, "pric"), pric), ((*LINE, "cnt"), cnt))
    assert parse_request(data).lines[0].amount_fen == round(float(amount) * 100)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ((*LINE, "det_item_fee_sumamt"), 1000.0, "feedetail[0].det_item_fee_sumamt"),
        ((*LINE, "pric"), 1000.0, "feedetail[0].pric"),
        ((*LINE, "cnt"), 1.0, "feedetail[0].cnt"),
        (("accounts", "current_year"), 800.0, "accounts.current_year"),
        (ACC, {DEDC: 300.0}, f"accumulators.values.{DEDC}"),
    ],
)  # fmt: skip
def test_float_amounts_are_rejected(path: tuple[Any, ...], value: Any, field: str) -> None:
    rejected(request((path, value)), field, "float")


@pytest.mark.parametrize(
    ("path", "value", "field", "word"),
    [
        ((*LINE, "det_item_fee_sumamt"), "1000.001", "feedetail[0].det_item_fee_sumamt", "2 位小数"),
        ((*LINE, "det_item_fee_sumamt"), True, "feedetail[0].det_item_fee_sumamt", "bool"),
        ((*LINE, "det_item_fee_sumamt"), "1e3", "feedetail[0].det_item_fee_sumamt", "2 位小数"),
        ((*LINE, "pric"), "1000.0000001", "feedetail[0].pric", "不是合法的单价"),
        ((*LINE, "cnt"), "1.00001", "feedetail[0].cnt", "不是合法的数量"),
        ((*LINE, "cnt"), "one", "feedetail[0].cnt", "不是合法的数量"),
        ((*LINE, "selfpay_prop"), "1.5", "feedetail[0].selfpay_prop", "须在 [0, 1] 之内"),
        ((*LINE, "selfpay_prop"), 0.1, "feedetail[0].selfpay_prop", "float"),
        ((*LINE, "det_item_fee_sumamt"), "1" * 15, "feedetail[0].det_item_fee_sumamt", "2 位小数"),
    ],
)
def test_malformed_numbers(path: tuple[Any, ...], value: Any, field: str, word: str) -> None:
    rejected(request((path, value)), field, word)


# -- codes and references to data ----------------------------------------------------


def test_unknown_region() -> None:
    err = rejected(request((("insuplc_admdvs",), "990000")), "insuplc_admdvs", "990000", code="UNKNOWN_REGION")
    assert err.code == "UNKNOWN_REGION"


@pytest.mark.parametrize("field", ["insuplc_admdvs", "mdtrtarea_admvs"])
@pytest.mark.parametrize("value", ["21060", "2106000", "21060x"])
def test_region_codes_have_six_digits(field: str, value: str) -> None:
    rejected(request(((field,), value)), field, "6 位行政区划代码", repr(value))


def test_unknown_catalogue_code() -> None:
    data = request(((*LINE, "chrgitm_lv"), DELETE), ((*LINE, "hilist_code"), "NO-SUCH-CODE"))
    err = rejected(data, "feedetail[0].hilist_code", "NO-SUCH-CODE", code="UNKNOWN_CODE")
    assert "目录中无此编码" in err.reason


def test_catalogue_code_outside_its_validity() -> None:
    item = CatalogItem(
        hilist_code="OLD01", hilist_name="retired item", chrgitm_lv="01", med_chrgitm_type="09", pric_uplmt_fen=None,
        selfpay_prop_bp=0, admdvs="", begndate=dt.date(2015, 1, 1), enddate=dt.date(2020, 12, 31),
    )  # fmt: skip
    data = request(((*LINE, "chrgitm_lv"), DELETE), ((*LINE, "hilist_code"), "OLD01"))
    with pytest.raises(RequestError) as info:
        settle(presets(), Catalog([item]), parse_request(data))
    assert (info.value.field, info.value.code) == ("feedetail[0].hilist_code", "UNKNOWN_CODE")
    assert "2024-03-05" in info.value.reason


def test_an_unknown_code_with_its_own_class_settles_by_that_class() -> None:
    result = run(request(((*LINE, "hilist_code"), "LOCAL-ONLY-1")))
    assert result.setlinfo()["hifp_pay"] == "455.00"


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ((("insutype",), "999"), "insutype", "UNKNOWN_INSUTYPE"),
        ((("psn_type",), "9999"), "psn_type", "UNKNOWN_CODE"),
        ((("hosp_lv",), "99"), "hosp_lv", "UNKNOWN_CODE"),
        ((("psn_idet_types",), ["rich"]), "psn_idet_types", "UNKNOWN_CODE"),
    ],
)
def test_codes_the_policy_does_not_define(change: tuple[tuple[Any, ...], Any], field: str, code: str) -> None:
    rejected(request(change), field, code=code)


@pytest.mark.parametrize(
    ("change", "field", "word"),
    [
        ((("gend",), "3"), "gend", "1 (男) 或 2 (女)"),
        ((("gend",), "M"), "gend", "1 (男) 或 2 (女)"),
        ((("gend",), True), "gend", "bool"),
        ((("gend",), 1.0), "gend", "float"),
        ((("age",), 151), "age", "[0, 150]"),
        ((("age",), -1), "age", "[0, 150]"),
        ((("age",), "sixty"), "age", "整数"),
        ((("age",), 66.0), "age", "整数"),
        ((("begntime",), "2024-13-01"), "begntime", "不是合法日期"),
        ((("begntime",), 20240305), "begntime", "日期字符串"),
        ((("acct_used_flag",), "2"), "acct_used_flag", "须为 0 或 1"),
        ((("psn_no",), "a b"), "psn_no", "不是合法编码"),
        (((*LINE, "chrgitm_lv"), "05"), "feedetail[0].chrgitm_lv", "05"),
        (((*LINE, "course_day"), "0"), "feedetail[0].course_day", "[1, 3660]"),
        (((*LINE, "hilist_code"), "bad code!"), "feedetail[0].hilist_code", "不是合法编码"),
    ],
)
def test_bad_values_name_the_field(change: tuple[tuple[Any, ...], Any], field: str, word: str) -> None:
    rejected(request(change), field, word)


# -- accumulators --------------------------------------------------------------------


@pytest.mark.parametrize("year", [2023, "2025"])
def test_accumulators_of_another_year(year: Any) -> None:
    rejected(request((("accumulators", "year"), year)), "accumulators.year", "2024")


def test_accumulators_need_a_year() -> None:
    rejected(request((("accumulators", "year"), DELETE)), "accumulators.year", "缺少必填字段")


@pytest.mark.parametrize(
    ("values", "field", "word"),
    [
        ({"Bad Key": "1"}, "accumulators.values.Bad Key", "累计项名须形如"),
        ({"outpatient_pooling": "1"}, "accumulators.values.outpatient_pooling", "累计项名须形如"),
        ({"outpatient_pooling.visit_cnt": 366 * 86_400 + 1}, "accumulators.values.outpatient_pooling.visit_cnt",
         "[0, 31622400]"),
        ({"outpatient_pooling.visit_cnt": "1.5"}, "accumulators.values.outpatient_pooling.visit_cnt", "整数"),
        ({"outpatient_pooling.dedc_amt": "3.001"}, "accumulators.values.outpatient_pooling.dedc_amt", "2 位小数"),
    ],
)
def test_bad_accumulator_values(values: dict[str, Any], field: str, word: str) -> None:
    rejected(request((("accumulators", "values"), values)), field, word)


# -- duplicates ----------------------------------------------------------------------


@pytest.mark.parametrize("sn", ["1", 1, " 1 "])
def test_duplicate_feedetl_sn(sn: Any) -> None:
    rejected(request((("feedetail", 1, "feedetl_sn"), sn)), "feedetail[1].feedetl_sn", "流水号重复: '1'")


def test_lines_without_a_serial_number_are_numbered_by_position() -> None:
    data = request((("feedetail", 0, "feedetl_sn"), DELETE), (("feedetail", 1, "feedetl_sn"), ""))
    assert [line.feedetl_sn for line in parse_request(data).lines] == ["1", "2"]
    # ... and a number given to another line may then collide with a position.
    data = request((("feedetail", 0, "feedetl_sn"), "2"), (("feedetail", 1, "feedetl_sn"), DELETE))
    rejected(data, "feedetail[1].feedetl_sn", "流水号重复")


# -- what HIS systems send -----------------------------------------------------------


def test_codes_as_numbers_and_optional_fields_as_empty_strings_settle_the_same() -> None:
    canonical = run(request()).to_json(trace=False)
    his = request(
        (("gend",), 1), (("age",), "66"), (("insutype",), 310), (("psn_type",), 1201), (("med_type",), 11),
        (("insuplc_admdvs",), 210600), (("mdtrtarea_admvs",), 210600), (("acct_used_flag",), 1),
        (("begntime",), "2024-03-05"), (("dise_codg",), ""), (("setl_id",), ""), (("mdtrt_id",), ""),
        (("psn_idet_types",), []), (("filings",), {"offsite": "", "diseases": []}),
        (("accumulators", "year"), "2024"), (("accumulators", "values"), {}),
        (("accounts", "current_year"), 800), (("accounts", "historical"), " 1200.00 "), (("accounts", "family"), []),
        (("feedetail", 0, "feedetl_sn"), 1), (("feedetail", 0, "cnt"), 1), (("feedetail", 0, "pric"), 1000),
        (("feedetail", 0, "det_item_fee_sumamt"), 1000), (("feedetail", 0, "course_day"), ""),
        (("feedetail", 0, "selfpay_prop"), ""), (("feedetail", 0, "pric_uplmt_amt"), ""),
        (("feedetail", 0, "hosp_appr_flag"), ""), (("feedetail", 0, "hilist_code"), ""),
        (("feedetail", 1, "cnt"), "2.0000"), (("feedetail", 1, "pric"), "25.000000"),
        (("feedetail", 1, "det_item_fee_sumamt"), "50"),
    )  # fmt: skip
    result = run(his).to_json(trace=False)
    assert result["setlinfo"] == canonical["setlinfo"]
    assert result["setldetail"] == canonical["setldetail"]
    assert result["setlinfo"]["hifp_pay"] == "455.00" and result["setlinfo"]["psn_part_amt"] == "595.00"


def test_null_optional_sections_are_accepted() -> None:
    data = request(
        (("accumulators",), None), (("accounts",), None), (("filings",), None), (("psn_idet_types",), None),
        (("acct_used_flag",), None),
    )  # fmt: skip
    result = run(data)
    assert result.setlinfo()["hifp_pay"] == "455.00"
    assert result.acct_pay == 0 and result.balc == 0


def test_med_list_codg_is_an_alias_of_hilist_code() -> None:
    data = request(((*LINE, "chrgitm_lv"), DELETE), ((*LINE, "med_list_codg"), "NO-SUCH-CODE"))
    rejected(data, "feedetail[0].hilist_code", code="UNKNOWN_CODE")
