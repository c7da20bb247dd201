"""The settlement request: national field names in, validated immutable values out.

The JSON shape is documented in ``docs/request-result.md``. Every rejection names
the offending field (``feedetail[3].cnt``) and the reason; nothing is guessed.
HIS systems send codes as numbers or strings and optional fields as ``""``:
both are accepted.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import RequestError
from ..money import MAX_AMOUNT_FEN, format_fen, parse_bp, parse_fen

__all__ = [
    "MAX_FAMILY_ACCOUNTS",
    "MAX_LINES",
    "FamilyAccount",
    "FeeLine",
    "SettlementRequest",
    "parse_request",
]

#: Fee lines in one settlement; a long inpatient stay has a few thousand.
MAX_LINES = 20_000
MAX_FAMILY_ACCOUNTS = 20
MAX_ACCUMULATORS = 500
#: A year-to-date count (visits, admissions) never exceeds one settlement a second all year: a bound
#: no person reaches, unlike a bound of one visit a day, which dialysis and pharmacy patients pass.
MAX_YEAR_COUNT = 366 * 86_400
#: Per fee line: a unit price, a quantity and a line amount no real bill comes near (the dearest
#: listed therapies cost about 1.3 million yuan a course); anything above is a typing or encoding error.
MAX_PRICE_MICRO = 10_000_000 * 1_000_000  # 10 million yuan, in 1/1,000,000 yuan
MAX_COUNT_UNITS = 1_000_000 * 10_000  # one million units, in 1/10,000
MAX_LINE_FEN = 100_000_000 * 100  # 100 million yuan
# ASCII digits only: \d alone would also take full-width and other scripts' digits (１, ٣).
_REGION_RE = re.compile(r"^\d{6}$", re.ASCII)
_CODE_RE = re.compile(r"^[0-9A-Za-z._-]{1,50}$")
_ACC_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}\.(visit_cnt|[a-z][a-z0-9_]{0,23}_amt)$")
_PRICE_RE = re.compile(r"^\d{1,14}(\.\d{1,6})?$", re.ASCII)
_COUNT_RE = re.compile(r"^\d{1,10}(\.\d{1,4})?$", re.ASCII)
_OFFSITE_TYPES = ("long_term", "referral", "emergency", "temporary")


class FeeLine(NamedTuple):
    """One fee line (费用明细) as uploaded by 2204/2301."""

    position: int  # 0-based place in feedetail, for error messages
    feedetl_sn: str
    hilist_code: str | None
    hilist_name: str
    cnt: str
    pric: str
    cnt_units: int  # quantity in 1/10,000
    pric_micro: int  # price in 1/1,000,000 yuan
    amount_fen: int
    chrgitm_lv: str | None
    med_chrgitm_type: str | None
    selfpay_prop_bp: int | None
    pric_uplmt_fen: int | None
    hosp_appr_flag: str | None
    course_day: int | None


@dataclass(frozen=True, slots=True)
class FamilyAccount:
    """A bound relative's account offered for 家庭共济."""

    psn_no: str
    relation: str
    insuplc_admdvs: str
    current_year_fen: int
    historical_fen: int


@dataclass(frozen=True, slots=True)
class SettlementRequest:
    """Everything the engine needs; nothing it would have to look up elsewhere."""

    psn_no: str
    gend: str
    age: int
    insutype: str
    psn_type: str
    med_type: str
    hosp_lv: str
    insuplc_admdvs: str
    mdtrtarea_admvs: str
    service_date: dt.date
    acct_used_flag: bool
    identities: frozenset[str]
    offsite_filing: str | None
    dise_codg: str | None
    disease_filings: frozenset[str]
    lines: tuple[FeeLine, ...]
    year: int
    accumulators: Mapping[str, int]
    current_year_fen: int
    historical_fen: int
    family: tuple[FamilyAccount, ...]
    setl_id: str | None = None
    mdtrt_id: str | None = None
    #: An interim or final settlement continuing an admission already settled in part
    #: (中途结算): no new visit is counted, and the visit deductible already borne counts.
    continues_visit: bool = False
    visit_dedc_paid_fen: int = 0


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _shown(value: Any) -> str:
    """A value quoted for an error message, cut to a sane length."""
    if isinstance(value, str):
        return repr(value[:40])
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _code(data: Mapping[str, Any], key: str, *, field: str | None = None, required: bool = True) -> str | None:
    value = data.get(key)
    name = field or key
    if _blank(value):
        if required:
            raise RequestError(name, "缺少必填字段")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RequestError(name, f"须为编码字符串, 不能是 {type(value).__name__} 类型: {_shown(value)}")
    text = str(value).strip()
    if not _CODE_RE.match(text):
        raise RequestError(name, f"不是合法编码 (1–50 位半角字母、数字或 . _ -): {text[:40]!r}")
    return text


def _region(data: Mapping[str, Any], key: str) -> str:
    text = _code(data, key)
    assert text is not None
    if not _REGION_RE.match(text):
        raise RequestError(key, f"须为 6 位行政区划代码, 收到 {text[:40]!r}")
    return text


def _amount(value: Any, field: str) -> int:
    if _blank(value):
        raise RequestError(field, "缺少必填字段")
    try:
        fen = parse_fen(value)
    except ValueError as exc:
        raise RequestError(field, str(exc)) from None
    if fen > MAX_AMOUNT_FEN:
        raise RequestError(field, f"金额过大 (至多 {format_fen(MAX_AMOUNT_FEN)} 元): {_shown(value)}")
    return fen


def _date(value: Any, field: str) -> dt.date:
    if _blank(value):
        raise RequestError(field, "缺少必填字段")
    if not isinstance(value, str):
        raise RequestError(
            field,
            f"须为日期字符串 (yyyy-MM-dd 或 yyyy-MM-dd HH:mm:ss), 不能是 {type(value).__name__} 类型: {_shown(value)}",
        )
    text = value.strip()
    try:
        return dt.date.fromisoformat(text[:10]) if len(text) in (10, 19) else dt.date.fromisoformat(text)
    except ValueError:
        raise RequestError(field, f"不是合法日期 (yyyy-MM-dd 或 yyyy-MM-dd HH:mm:ss): {text[:40]!r}") from None


def _flag(value: Any, field: str) -> bool:
    if _blank(value):
        return False
    text = str(value).strip()
    if text not in ("0", "1"):
        raise RequestError(field, f"须为 0 或 1, 收到 {text[:40]!r}")
    return text == "1"


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or _blank(value):
        raise RequestError(
            field, "缺少必填字段" if _blank(value) else f"须为整数, 不能是 {type(value).__name__} 类型: {value!r}"
        )
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        value = int(value.strip())
    if not isinstance(value, int):
        raise RequestError(field, f"须为整数, 收到 {_shown(value)}")
    if not low <= value <= high:
        raise RequestError(field, f"须在 [{low}, {high}] 之内, 收到 {value}")
    return value


def _decimal_text(value: Any, field: str, pattern: re.Pattern[str], what: str, shape: str) -> str:
    """``what``: the field's Chinese name (单价); ``shape``: the digits it allows, for the message."""
    if isinstance(value, bool | float):
        raise RequestError(field, f"{what}须为十进制数字字符串或整数, 不能是 {type(value).__name__} 类型: {value!r}")
    if _blank(value):
        raise RequestError(field, "缺少必填字段")
    if not isinstance(value, str | int):
        raise RequestError(field, f"{what}须为十进制数字字符串, 不能是 {type(value).__name__} 类型: {_shown(value)}")
    text = str(value).strip()
    if text.startswith("-"):
        raise RequestError(field, f"{what}不能为负数: {text[:40]!r}")
    if not pattern.match(text):
        raise RequestError(field, f"不是合法的{what} ({shape}): {text[:40]!r}")
    return text


def _scaled(text: str, places: int) -> int:
    # The patterns guarantee at most ``places`` decimals, so padding is exact.
    whole, _, frac = text.partition(".")
    return int(whole + frac.ljust(places, "0"))


_AMOUNT_TEXT_RE = re.compile(r"^\d{1,14}(\.\d{1,2})?$", re.ASCII)
_LV_CODES = frozenset(("01", "02", "03", "04"))
_FAST_OPTIONAL = ("hilist_code", "med_list_codg", "chrgitm_lv", "med_chrgitm_type", "hosp_appr_flag")


def _fast_line(raw: Any, index: int) -> FeeLine | None:
    """The common, clean shape of a line, parsed without per-field error bookkeeping.

    Returns None for anything unusual (numbers instead of strings, blanks,
    whitespace, self-pay ratios, caps, course days, bad values): :func:`_checked_line`
    then parses it with precise errors. Both give the same FeeLine for valid input.
    """
    if type(raw) is not dict:
        return None
    get = raw.get
    pric, cnt, amt = get("pric"), get("cnt"), get("det_item_fee_sumamt")
    if type(pric) is not str or type(cnt) is not str or type(amt) is not str:
        return None
    if not (_PRICE_RE.match(pric) and _COUNT_RE.match(cnt) and _AMOUNT_TEXT_RE.match(amt)):
        return None
    if "selfpay_prop" in raw or "pric_uplmt_amt" in raw or "course_day" in raw:
        return None
    for key in _FAST_OPTIONAL:
        value = get(key)
        if value is not None and (type(value) is not str or not _CODE_RE.match(value)):
            return None
    code = get("hilist_code") or get("med_list_codg")
    lv = get("chrgitm_lv")
    if (code is None and lv is None) or (lv is not None and lv not in _LV_CODES):
        return None
    sn = get("feedetl_sn")
    if sn is not None and (type(sn) is not str or not sn or sn != sn.strip()):
        return None
    name = get("hilist_name") or get("medins_list_name") or ""
    if type(name) is not str:
        return None
    pric_micro, cnt_units = _scaled(pric, 6), _scaled(cnt, 4)
    amount = _scaled(amt, 2)
    if pric_micro > MAX_PRICE_MICRO or cnt_units > MAX_COUNT_UNITS or amount > MAX_LINE_FEN:
        return None
    if (2 * pric_micro * cnt_units + 10**8) // (2 * 10**8) != amount:
        return None
    return FeeLine(
        index, sn if sn is not None else str(index + 1), code, name.strip(), cnt, pric, cnt_units, pric_micro,
        amount, lv, get("med_chrgitm_type"), None, None, get("hosp_appr_flag"), None,
    )  # fmt: skip


def _line(raw: Any, index: int) -> FeeLine:
    return _fast_line(raw, index) or _checked_line(raw, index)


def _checked_line(raw: Any, index: int) -> FeeLine:
    at = f"feedetail[{index}]"
    if not isinstance(raw, Mapping):
        raise RequestError(at, "每条费用明细须为 JSON 对象")
    code = _code(raw, "hilist_code", field=f"{at}.hilist_code", required=False)
    if code is None:
        code = _code(raw, "med_list_codg", field=f"{at}.med_list_codg", required=False)
    pric = _decimal_text(raw.get("pric"), f"{at}.pric", _PRICE_RE, "单价", "至多 14 位整数、6 位小数")
    cnt = _decimal_text(raw.get("cnt"), f"{at}.cnt", _COUNT_RE, "数量", "至多 10 位整数、4 位小数")
    amount = _amount(raw.get("det_item_fee_sumamt"), f"{at}.det_item_fee_sumamt")
    # price has 6 decimals, quantity 4: the product is in 1e-10 yuan; fen is 1e-2 yuan.
    pric_micro, cnt_units = _scaled(pric, 6), _scaled(cnt, 4)
    if pric_micro > MAX_PRICE_MICRO:
        raise RequestError(f"{at}.pric", f"单价超过上限 {MAX_PRICE_MICRO // 10**6} 元: {pric[:40]!r}")
    if cnt_units > MAX_COUNT_UNITS:
        raise RequestError(f"{at}.cnt", f"数量超过上限 {MAX_COUNT_UNITS // 10**4}: {cnt[:40]!r}")
    if amount > MAX_LINE_FEN:
        raise RequestError(
            f"{at}.det_item_fee_sumamt", f"明细项目费用总额超过上限 {MAX_LINE_FEN // 100} 元: {format_fen(amount)}"
        )
    product = pric_micro * cnt_units
    expected = (2 * product + 10**8) // (2 * 10**8)
    if expected != amount:
        raise RequestError(
            f"{at}.det_item_fee_sumamt",
            f"明细项目费用总额 {_shown(raw.get('det_item_fee_sumamt'))} 不等于 单价 × 数量 "
            f"(pric × cnt = {pric} × {cnt}), 应为 {format_fen(expected)}",
        )
    lv = _code(raw, "chrgitm_lv", field=f"{at}.chrgitm_lv", required=False)
    if lv is not None and lv not in ("01", "02", "03", "04"):
        raise RequestError(f"{at}.chrgitm_lv", f"须为 01 (甲类), 02 (乙类), 03 (丙类) 或 04 (可报丙类), 收到 {lv!r}")
    prop: int | None = None
    if not _blank(raw.get("selfpay_prop")):
        try:
            prop = parse_bp(raw["selfpay_prop"])
        except ValueError as exc:
            raise RequestError(f"{at}.selfpay_prop", str(exc)) from None
    cap = None if _blank(raw.get("pric_uplmt_amt")) else _amount(raw["pric_uplmt_amt"], f"{at}.pric_uplmt_amt")
    if code is None and lv is None:
        raise RequestError(f"{at}.hilist_code", "须填写医保目录编码 (hilist_code) 或该明细的收费项目等级 (chrgitm_lv)")
    course = raw.get("course_day")
    sn = raw.get("feedetl_sn")
    appr = raw.get("hosp_appr_flag")
    return FeeLine(
        position=index,
        feedetl_sn=str(sn).strip() if not _blank(sn) else str(index + 1),
        hilist_code=code,
        hilist_name=str(raw.get("hilist_name") or raw.get("medins_list_name") or "").strip(),
        cnt=cnt,
        pric=pric,
        cnt_units=cnt_units,
        pric_micro=pric_micro,
        amount_fen=amount,
        chrgitm_lv=lv,
        med_chrgitm_type=_code(raw, "med_chrgitm_type", field=f"{at}.med_chrgitm_type", required=False),
        selfpay_prop_bp=prop,
        pric_uplmt_fen=cap,
        hosp_appr_flag=None if _blank(appr) else str(appr).strip(),
        course_day=None if _blank(course) else _int(course, f"{at}.course_day", 1, 3660),
    )


def _accumulators(raw: Any, year: int) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise RequestError("accumulators", "须为 JSON 对象 {year, values}")
    unknown = sorted(set(raw) - {"year", "values"})
    if unknown:
        raise RequestError(f"accumulators.{unknown[0]}", "未知字段 (只允许 year, values)")
    acc_year = _int(raw.get("year"), "accumulators.year", 1990, 2200)
    if acc_year != year:
        raise RequestError("accumulators.year", f"累计年度为 {acc_year}, 但就诊日期 (begntime) 在 {year} 年")
    values = raw.get("values") or {}
    if not isinstance(values, Mapping):
        raise RequestError("accumulators.values", "须为 JSON 对象 {累计项名: 金额或次数}")
    if len(values) > MAX_ACCUMULATORS:
        raise RequestError("accumulators.values", f"累计项超过 {MAX_ACCUMULATORS} 个")
    out: dict[str, int] = {}
    for key, value in values.items():
        field = f"accumulators.values.{key}"
        if not isinstance(key, str) or not _ACC_KEY_RE.match(key):
            raise RequestError(
                field, "累计项名须形如 '<规则>.<计数项>_amt' 或 '<规则>.visit_cnt' (小写字母、数字、下划线)"
            )
        out[key] = _int(value, field, 0, MAX_YEAR_COUNT) if key.endswith("_cnt") else _amount(value, field)
    return out


def _balances(raw: Mapping[str, Any], at: str) -> tuple[int, int]:
    current = 0 if _blank(raw.get("current_year")) else _amount(raw["current_year"], f"{at}.current_year")
    historical = 0 if _blank(raw.get("historical")) else _amount(raw["historical"], f"{at}.historical")
    return current, historical


def _visit(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise RequestError("visit", "须为 JSON 对象 {continues, dedc_paid}")
    unknown = sorted(set(raw) - {"continues", "dedc_paid"})
    if unknown:
        raise RequestError(f"visit.{unknown[0]}", "未知字段 (只允许 continues, dedc_paid)")
    continues = raw.get("continues", False)
    if not isinstance(continues, bool):
        raise RequestError("visit.continues", f"须为 true 或 false, 收到 {_shown(continues)}")
    paid = 0 if _blank(raw.get("dedc_paid")) else _amount(raw["dedc_paid"], "visit.dedc_paid")
    if paid and not continues:
        raise RequestError("visit.dedc_paid", "只有延续的就诊 (continues 为 true) 才有已承担的起付线金额")
    return {"continues_visit": continues, "visit_dedc_paid_fen": paid}


def parse_request(data: Any) -> SettlementRequest:
    """Validate a decoded JSON request; raises :class:`RequestError` naming the field."""
    if not isinstance(data, Mapping):
        raise RequestError("", "请求须为 JSON 对象")
    date = _date(data.get("begntime"), "begntime")
    gend = _code(data, "gend")
    if gend not in ("1", "2"):
        raise RequestError("gend", f"须为 1 (男) 或 2 (女), 收到 {gend!r}")
    raw_lines = data.get("feedetail")
    if not isinstance(raw_lines, list) or not raw_lines:
        raise RequestError("feedetail", "须为非空的费用明细列表")
    if len(raw_lines) > MAX_LINES:
        raise RequestError("feedetail", f"费用明细超过 {MAX_LINES} 条")
    lines = tuple(_line(raw, i) for i, raw in enumerate(raw_lines))
    seen_sn: set[str] = set()
    for line in lines:
        if line.feedetl_sn in seen_sn:
            raise RequestError(
                f"feedetail[{line.position}].feedetl_sn", f"费用明细流水号重复: {line.feedetl_sn[:40]!r}"
            )
        seen_sn.add(line.feedetl_sn)
    identities = data.get("psn_idet_types") or []
    if not isinstance(identities, list) or not all(isinstance(i, str) for i in identities):
        raise RequestError("psn_idet_types", "须为人员身份名称 (字符串) 的列表")
    filings = data.get("filings") or {}
    if not isinstance(filings, Mapping):
        raise RequestError("filings", "须为 JSON 对象 {offsite, diseases}")
    unknown = sorted(set(filings) - {"offsite", "diseases"})
    if unknown:
        raise RequestError(f"filings.{unknown[0]}", "未知字段 (只允许 offsite, diseases)")
    offsite = filings.get("offsite")
    if _blank(offsite):
        offsite = None
    elif offsite not in _OFFSITE_TYPES:
        raise RequestError("filings.offsite", f"须为 {', '.join(_OFFSITE_TYPES)} 之一, 收到 {_shown(offsite)}")
    diseases = filings.get("diseases") or []
    if not isinstance(diseases, list) or not all(isinstance(d, str) for d in diseases):
        raise RequestError("filings.diseases", "须为病种编码 (字符串) 的列表")
    accounts = data.get("accounts")
    accounts = {} if accounts is None else accounts
    if not isinstance(accounts, Mapping):
        raise RequestError("accounts", "须为 JSON 对象 {current_year, historical, family}")
    current, historical = _balances(accounts, "accounts")
    family_raw = accounts.get("family")
    family_raw = [] if family_raw is None else family_raw
    if not isinstance(family_raw, list) or len(family_raw) > MAX_FAMILY_ACCOUNTS:
        raise RequestError("accounts.family", f"须为至多 {MAX_FAMILY_ACCOUNTS} 个共济账户的列表")
    family = []
    for i, rel in enumerate(family_raw):
        at = f"accounts.family[{i}]"
        if not isinstance(rel, Mapping):
            raise RequestError(at, "须为 JSON 对象")
        cur, hist = _balances(rel, at)
        psn = _code(rel, "psn_no", field=f"{at}.psn_no")
        relation = _code(rel, "relation", field=f"{at}.relation")
        assert psn is not None and relation is not None
        region = (
            _region(rel, "insuplc_admdvs") if not _blank(rel.get("insuplc_admdvs")) else _region(data, "insuplc_admdvs")
        )
        family.append(FamilyAccount(psn, relation, region, cur, hist))
    psn_no = _code(data, "psn_no")
    insutype = _code(data, "insutype")
    psn_type = _code(data, "psn_type")
    med_type = _code(data, "med_type")
    hosp_lv = _code(data, "hosp_lv")
    assert psn_no and insutype and psn_type and med_type and hosp_lv
    return SettlementRequest(
        psn_no=psn_no,
        gend=gend,
        age=_int(data.get("age"), "age", 0, 150),
        insutype=insutype,
        psn_type=psn_type,
        med_type=med_type,
        hosp_lv=hosp_lv,
        insuplc_admdvs=_region(data, "insuplc_admdvs"),
        mdtrtarea_admvs=_region(data, "mdtrtarea_admvs"),
        service_date=date,
        acct_used_flag=_flag(data.get("acct_used_flag"), "acct_used_flag"),
        identities=frozenset(identities),
        offsite_filing=offsite,
        dise_codg=_code(data, "dise_codg", required=False),
        disease_filings=frozenset(diseases),
        lines=lines,
        year=date.year,
        accumulators=_accumulators(data.get("accumulators"), date.year),
        current_year_fen=current,
        historical_fen=historical,
        family=tuple(family),
        setl_id=_code(data, "setl_id", required=False),
        **_visit(data.get("visit")),
        mdtrt_id=_code(data, "mdtrt_id", required=False),
    )
