#!/usr/bin/env python3
"""Build the bundled demo catalogue from the national rule library.

Reads the NHSA rule library in the shared folder (drugs and service items
restricted by gender, age, insurance type, institution level, visit type and
payment course, plus the duplicate-charge / frequency lists) and writes
``src/yibao/data/catalog/demo.csv``. The project never reads the shared folder
at run time; this script is the only bridge.

Codes, names, restrictions and indication texts are copied from the source.
Catalogue class, price caps, self-pay-first ratios and demo prices are
illustrative, derived from a hash of the code; regional override rows and dated
versions come from fixed tables below. Every run produces the same bytes.
See docs/catalog.md for the format and every mapping.

Usage:
    python scripts/build_demo_catalog.py [--shared ../shared]
        [--out src/yibao/data/catalog/demo.csv]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared"
DEFAULT_OUT = REPO / "src" / "yibao" / "data" / "catalog" / "demo.csv"
LIBRARY = Path("data") / "nhsa-rule-library"

HEADER: tuple[str, ...] = (
    "hilist_code",
    "hilist_name",
    "chrgitm_lv",
    "med_chrgitm_type",
    "pric_uplmt_amt",
    "selfpay_prop",
    "admdvs",
    "begndate",
    "enddate",
    "lmt_gend",
    "lmt_age_min",
    "lmt_age_max",
    "lmt_insutypes",
    "lmt_hosp_lv_min",
    "lmt_med_types",
    "lmt_course_days",
    "lmt_indication",
    "demo_pric",
    "source",
    "illustrative",
)

BASE_BEGNDATE = "2020-01-01"
# Every row's class, cap, ratio and demo price are invented; rows may add more.
ALWAYS_ILLUSTRATIVE = ("chrgitm_lv", "pric_uplmt_amt", "selfpay_prop", "demo_pric")

# --- value mappings from the rule library (documented in docs/catalog.md) ---

GENDER = {"男": "1", "女": "2"}
# Age targets -> inclusive integer years. Assumptions: 儿童 = under 18,
# 婴幼儿 = under 3, 新生儿 = first year of life (the 28-day window is finer
# than whole years).
AGE_BY_TARGET: dict[str, tuple[int | None, int | None]] = {
    "儿童": (0, 17),
    "婴幼儿": (0, 2),
    "新生儿": (0, 0),
}
# b8-2: the item is not paid outside the statutory working age (16 up to the
# standard retirement age; 59 = last year before the earliest male retirement
# age of 60). Assumption, since the text gives no numbers.
WORKING_AGE = (16, 59)
INSUTYPE_BY_TARGET = {"工伤": ("410",), "生育": ("510",)}
LEVEL_BY_VALUE = {"二级": "level_2", "三级": "level_3"}
INPATIENT_MED_TYPES = ("21", "210104", "28")
EMERGENCY_MED_TYPE = "13"
LEVEL_ORDER = ("level_1", "level_2", "level_3")

INDICATION_JOIN = " | "

# --- selection sizes ---

CODES_PER_DRUG = 2
GENDER_DRUG_QUOTA = {"男": 20, "女": 40}
AGE_DRUG_QUOTA = 60
GENDER_ITEM_QUOTA = {"男": 30, "女": 50}
# Unrestricted service items per fee category (None = all candidates).
PLAIN_ITEM_QUOTA: dict[str, int | None] = {
    "01": None,
    "02": None,
    "13": None,
    "14": None,
    "07": 12,
    "03": 20,
    "04": 30,
    "05": 15,
    "06": 10,
}

MUST_GENDER_DRUGS = ("阿帕他胺片", "艾附暖宫丸")
MUST_AGE_DRUGS = ("儿童清肺口服液",)
MUST_GENDER_ITEMS = ("子宫造影", "阴茎海绵体造影")
MUST_PLAIN_ITEMS = frozenset(
    {
        "急诊诊查费",
        "住院诊查费",
        "门急诊留观诊查费",
        "普通病房床位费",
        "糖化血红蛋白测定",
        "葡萄糖测定",
        "粪便常规",
    }
)
# A handful of plausible 丙类 (fully self-paid) items: room upgrades, comfort
# surcharges and non-treatment services.
CLASS_03_ITEMS = frozenset(
    {
        "套间病房床位费",
        "普通病房床位费(单人间)",
        "病房空调降温费",
        "病房取暖费",
        "健康咨询",
        "中药特殊调配",
    }
)

# Illustrative unit-price ranges (yuan) per fee category, for demo bills.
PRICE_RANGE: dict[str, tuple[int, int]] = {
    "01": (20, 120),
    "02": (8, 40),
    "03": (20, 400),
    "04": (5, 80),
    "05": (10, 300),
    "06": (300, 6000),
    "07": (8, 60),
    "09": (5, 500),
    "11": (10, 150),
    "13": (1, 10),
    "14": (5, 50),
}
SELFPAY_CHOICES = ("0.0500", "0.0800", "0.1000", "0.1500", "0.2000")
CAP_SHARE = Decimal("0.15")
OVER_CAP_SHARE = Decimal("0.4")

# Dated national versions: (code, [(begndate, enddate, overrides)]). Caps move
# on 2025-01-01 so demos can show the same bill settling differently by date.
VERSIONS: dict[str, list[tuple[str, str, dict[str, str]]]] = {
    # 普通病房床位费: cap raised by a price reform.
    "001109000010000": [
        (BASE_BEGNDATE, "2024-12-31", {"pric_uplmt_amt": "40.00", "demo_pric": "45.00"}),
        ("2025-01-01", "", {"pric_uplmt_amt": "50.00", "demo_pric": "45.00"}),
    ],
    # 奥扎格雷钠注射液: cap cut and lower self-pay-first ratio after procurement.
    "XB01AXA223B002010100156": [
        (
            BASE_BEGNDATE,
            "2024-12-31",
            {"pric_uplmt_amt": "30.00", "selfpay_prop": "0.1000", "demo_pric": "24.00"},
        ),
        (
            "2025-01-01",
            "",
            {"pric_uplmt_amt": "18.00", "selfpay_prop": "0.0500", "demo_pric": "24.00"},
        ),
    ],
    # 糖化血红蛋白测定: cap lowered.
    "002503020030000": [
        (BASE_BEGNDATE, "2024-12-31", {"pric_uplmt_amt": "60.00", "demo_pric": "55.00"}),
        ("2025-01-01", "", {"pric_uplmt_amt": "50.00", "demo_pric": "55.00"}),
    ],
}

# Regional override rows: (code, admdvs, begndate, overrides).
REGIONAL: list[tuple[str, str, str, dict[str, str]]] = [
    # 参附注射液 (乙类): Shanghai and Tianjin set their own ratios.
    ("ZA05CAC0029010102312", "310000", BASE_BEGNDATE, {"selfpay_prop": "0.1200"}),
    ("ZA05CAC0029010102312", "120000", BASE_BEGNDATE, {"selfpay_prop": "0.0600"}),
    # 阿帕他胺片 (乙类): Guangzhou ratio.
    ("XL02BBA326A001010102180", "440100", BASE_BEGNDATE, {"selfpay_prop": "0.0600"}),
    # 急诊诊查费: Tianjin caps the fee from mid-2023.
    ("001102000030000", "120000", "2023-07-01", {"pric_uplmt_amt": "15.00"}),
    # 普通病房床位费(双人间): Shanghai cap.
    ("001109000010200", "310000", BASE_BEGNDATE, {"pric_uplmt_amt": "40.00"}),
    # 丁苯酞软胶囊 first product: Guangzhou cap.
    ("XN07XXD130E002010102774", "440100", BASE_BEGNDATE, {"pric_uplmt_amt": "400.00"}),
]


@dataclass(frozen=True)
class Restriction:
    """One restriction taken from one rule-library file."""

    source: str
    gend: str = ""
    age: tuple[int | None, int | None] = (None, None)
    insutypes: tuple[str, ...] = ()
    hosp_lv_min: str = ""
    med_types: tuple[str, ...] = ()
    course_days: int | None = None
    indication: str = ""


@dataclass
class Entry:
    """A catalogue code with every restriction found for it."""

    code: str
    name: str
    kind: str  # "drug" or "item"
    picked_from: str
    restrictions: list[Restriction] = field(default_factory=list)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [{k.strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh)]


def unit(code: str, salt: str) -> Decimal:
    """Deterministic pseudo-random number in [0, 1) for a code (exact, no binary floats)."""
    digest = hashlib.sha256(f"{salt}:{code}".encode()).digest()
    return Decimal(int.from_bytes(digest[:8], "big")) / Decimal(2**64)


def spread(seq: Sequence[str], k: int) -> list[str]:
    """k evenly spaced elements, keeping source order."""
    if len(seq) <= k:
        return list(seq)
    return [seq[i * len(seq) // k] for i in range(k)]


def pick(names: Sequence[str], k: int, must: Iterable[str]) -> list[str]:
    chosen = spread(names, k)
    chosen += [n for n in must if n in names and n not in chosen]
    return chosen


# --- drugs ---


@dataclass(frozen=True)
class DrugFile:
    stem: str
    code_col: str
    value_col: str


DRUG_FILES = (
    DrugFile("b1-drug-gender", "药品代码", "限定对象"),
    DrugFile("b1-drug-age", "国标代码", "限定对象"),
    DrugFile("b3-drug-insurance-type", "国标代码", "限定对象"),
    DrugFile("b4-drug-visit-type", "国标代码", "限定值域"),
    DrugFile("b5-drug-institution-level", "国标代码", "限定值域"),
    DrugFile("b6-drug-payment-course", "国标代码", "限定值域"),
)


def drug_restriction(stem: str, value: str, text: str) -> Restriction:
    source = f"{stem}-rules.csv"
    if stem == "b1-drug-gender":
        return Restriction(source, gend=GENDER[value], indication=text)
    if stem == "b1-drug-age":
        return Restriction(source, age=AGE_BY_TARGET[value], indication=text)
    if stem == "b3-drug-insurance-type":
        return Restriction(source, insutypes=INSUTYPE_BY_TARGET[value], indication=text)
    if stem == "b4-drug-visit-type":
        if value != "住院":
            raise ValueError(f"unmapped visit type {value!r}")
        # The structured value is always 住院; one text also admits emergency visits.
        extra = (EMERGENCY_MED_TYPE,) if "急诊" in text else ()
        return Restriction(source, med_types=extra + INPATIENT_MED_TYPES, indication=text)
    if stem == "b5-drug-institution-level":
        return Restriction(source, hosp_lv_min=LEVEL_BY_VALUE[value], indication=text)
    if stem == "b6-drug-payment-course":
        m = re.fullmatch(r"(\d+)天", value)
        if not m:
            raise ValueError(f"unmapped payment course {value!r}")
        return Restriction(source, course_days=int(m.group(1)), indication=text)
    raise ValueError(stem)


def load_drugs(lib: Path) -> list[Entry]:
    rules: dict[str, dict[str, dict[str, str]]] = {}
    codes_by_drug: dict[str, dict[str, list[str]]] = {}
    by_code: dict[str, Entry] = {}
    for f in DRUG_FILES:
        rules[f.stem] = {r["药品通用名"]: r for r in read_csv(lib / f"{f.stem}-rules.csv")}
        code_rows = read_csv(lib / f"{f.stem}-codes.csv")
        code_rows.sort(key=lambda r: (r["药品通用名"], int(r["序号"])))
        per_drug: dict[str, list[str]] = {}
        for r in code_rows:
            generic, code = r["药品通用名"], r[f.code_col]
            per_drug.setdefault(generic, []).append(code)
            rule = rules[f.stem][generic]
            restriction = drug_restriction(f.stem, rule[f.value_col], rule["药品说明"])
            # First file wins the name: names differ only in I/Ⅰ spelling.
            entry = by_code.setdefault(code, Entry(code, generic, "drug", restriction.source))
            entry.restrictions.append(restriction)
        codes_by_drug[f.stem] = per_drug

    chosen: dict[str, None] = {}

    def take(stem: str, generics: Iterable[str]) -> None:
        for g in generics:
            for code in codes_by_drug[stem][g][:CODES_PER_DRUG]:
                chosen.setdefault(code)

    gender_rules = list(rules["b1-drug-gender"].values())
    for value, quota in GENDER_DRUG_QUOTA.items():
        names = [r["药品通用名"] for r in gender_rules if r["限定对象"] == value]
        take("b1-drug-gender", pick(names, quota, MUST_GENDER_DRUGS))
    take("b1-drug-age", pick(list(rules["b1-drug-age"]), AGE_DRUG_QUOTA, MUST_AGE_DRUGS))
    for stem in (
        "b3-drug-insurance-type",
        "b4-drug-visit-type",
        "b5-drug-institution-level",
        "b6-drug-payment-course",
    ):
        take(stem, rules[stem])
    return [by_code[c] for c in chosen]


# --- service items ---

ITEM_PLAIN_FILES = (
    "b7-item-duplicate-charge.csv",
    "b8-1-item-frequency.csv",
    "b8-4-item-period.csv",
)
ITEM_CODE = re.compile(r"\d{15}")


def course_from_text(text: str) -> int:
    m = re.search(r"不超过(\d+)天", text)
    if m:
        return int(m.group(1))
    if "不超过一年" in text:
        return 365
    raise ValueError(f"unmapped course text {text!r}")


def item_restrictions(lib: Path) -> tuple[dict[str, Entry], dict[str, list[str]]]:
    """Index restricted items by code; also list gender items by sex for sampling."""
    by_code: dict[str, Entry] = {}
    gender_codes: dict[str, list[str]] = {v: [] for v in GENDER}

    def add(code: str, name: str, restriction: Restriction) -> None:
        entry = by_code.setdefault(code, Entry(code, name, "item", restriction.source))
        entry.restrictions.append(restriction)

    src = "b1-item-gender.csv"
    for r in read_csv(lib / src):
        add(
            r["国标代码"],
            r["项目名称"],
            Restriction(src, gend=GENDER[r["限定性别"]], indication=r["项目说明"]),
        )
        gender_codes[r["限定性别"]].append(r["国标代码"])
    src = "b1-item-age.csv"
    for r in read_csv(lib / src):
        add(r["国标代码"], r["项目名称"], Restriction(src, age=AGE_BY_TARGET[r["限定对象"]]))
    src = "b8-2-item-age.csv"
    for r in read_csv(lib / src):
        if "法定就业年龄" not in r["备注"]:
            raise ValueError(f"unmapped age remark {r['备注']!r}")
        add(r["项目代码"], r["项目名称"], Restriction(src, age=WORKING_AGE, indication=r["备注"]))
    src = "b8-3-item-course.csv"
    for r in read_csv(lib / src):
        add(
            r["项目代码"],
            r["项目名称"],
            Restriction(src, course_days=course_from_text(r["备注"]), indication=r["备注"]),
        )
    return by_code, gender_codes


def plain_item_candidates(lib: Path) -> dict[str, Entry]:
    """Codes named in the duplicate-charge / frequency / period lists, first name wins."""
    out: dict[str, Entry] = {}
    pairs: list[tuple[str, str, str]] = []
    for r in read_csv(lib / ITEM_PLAIN_FILES[0]):
        pairs.append((r["主项编码"], r["主项名称"], ITEM_PLAIN_FILES[0]))
        pairs.append((r["从项编码"], r["从项名称"], ITEM_PLAIN_FILES[0]))
    for r in read_csv(lib / ITEM_PLAIN_FILES[1]):
        pairs.append((r["项目编码"], r["项目名称"], ITEM_PLAIN_FILES[1]))
    for r in read_csv(lib / ITEM_PLAIN_FILES[2]):
        pairs.append((r["项目代码"], r["项目名称"], ITEM_PLAIN_FILES[2]))
    for code, name, src in pairs:
        # Footer rows (合计, 备注) carry no code.
        if ITEM_CODE.fullmatch(code):
            out.setdefault(code, Entry(code, name, "item", src))
    return out


def load_items(lib: Path) -> list[Entry]:
    restricted, gender_codes = item_restrictions(lib)
    chosen: dict[str, Entry] = {}
    names = {e.code: e.name for e in restricted.values()}
    must_gender = [c for c, n in names.items() if n in MUST_GENDER_ITEMS]
    for value, quota in GENDER_ITEM_QUOTA.items():
        for code in pick(gender_codes[value], quota, must_gender):
            chosen[code] = restricted[code]
    # Every age and course item is kept: they are few and each one is a test case.
    for code, entry in restricted.items():
        if any(r.source != "b1-item-gender.csv" for r in entry.restrictions):
            chosen.setdefault(code, entry)

    groups: dict[str, list[Entry]] = {}
    for code, entry in sorted(plain_item_candidates(lib).items()):
        if code not in restricted:
            groups.setdefault(item_fee_type(code, entry.name), []).append(entry)
    for fee_type, entries in sorted(groups.items()):
        limit = PLAIN_ITEM_QUOTA[fee_type]
        by_code = {e.code: e for e in entries}
        wanted = [e.code for e in entries if e.name in MUST_PLAIN_ITEMS | CLASS_03_ITEMS]
        codes = list(by_code) if limit is None else pick(list(by_code), limit, wanted)
        for code in codes:
            chosen.setdefault(code, by_code[code])
    return list(chosen.values())


# --- derived and illustrative values ---

EXAM_WORDS = ("检查", "测", "试验", "评定", "验光", "图", "造影", "透照")
# "…术" or "…术(variant)" names an operation; "术中…" (intra-operative) does not.
SURGERY_NAME = re.compile(r"术(?:$|[(（])")


def item_fee_type(code: str, name: str) -> str:
    """Fee category from the national item chapter (code prefix) and the name."""
    chapter = code[:4]
    if chapter == "0011":
        if "床位" in name or name in ("病房取暖费", "病房空调降温费"):
            return "01"
        if "诊查" in name or "诊察" in name:
            return "02"
        if "挂号" in name:
            return "13"
        return "05"
    if chapter == "0012":
        return "07" if "护理" in name else "05"
    if chapter == "0013":
        if "体检" in name:
            return "03"
        if "巡诊" in name or "咨询" in name:
            return "02"
        return "05"
    if chapter in ("0021", "0022", "0023"):
        return "03"
    if chapter == "0024":
        return "05"
    if chapter in ("0025", "0026", "0027"):
        return "04"
    if chapter in ("0032", "0033"):
        return "06"
    if chapter in ("0031", "0034"):
        if any(w in name for w in EXAM_WORDS):
            return "03"
        return "06" if SURGERY_NAME.search(name) else "05"
    if chapter == "0048":
        return "14"
    if chapter.startswith("004"):
        return "06" if SURGERY_NAME.search(name) else "05"
    raise ValueError(f"no fee category for {code} {name}")


def drug_fee_type(code: str) -> str:
    if code.startswith("X"):
        return "09"
    if code.startswith("Z"):
        return "11"
    raise ValueError(f"no fee category for drug {code}")


def merged(entry: Entry) -> dict[str, str]:
    """Combine restrictions of one code: the strictest wins on every axis."""
    gends = {r.gend for r in entry.restrictions if r.gend}
    if len(gends) > 1:
        raise ValueError(f"{entry.code}: conflicting genders {gends}")
    mins = [r.age[0] for r in entry.restrictions if r.age[0] is not None]
    maxs = [r.age[1] for r in entry.restrictions if r.age[1] is not None]
    insutypes: set[str] | None = None
    med_types: set[str] | None = None
    for r in entry.restrictions:
        if r.insutypes:
            insutypes = set(r.insutypes) if insutypes is None else insutypes & set(r.insutypes)
        if r.med_types:
            med_types = set(r.med_types) if med_types is None else med_types & set(r.med_types)
    levels = [r.hosp_lv_min for r in entry.restrictions if r.hosp_lv_min]
    courses = [r.course_days for r in entry.restrictions if r.course_days is not None]
    texts = list(dict.fromkeys(r.indication for r in entry.restrictions if r.indication))
    sources = list(dict.fromkeys(r.source for r in entry.restrictions)) or [entry.picked_from]
    return {
        "lmt_gend": next(iter(gends), ""),
        "lmt_age_min": str(max(mins)) if mins else "",
        "lmt_age_max": str(min(maxs)) if maxs else "",
        "lmt_insutypes": ";".join(sorted(insutypes)) if insutypes is not None else "",
        "lmt_hosp_lv_min": max(levels, key=LEVEL_ORDER.index) if levels else "",
        "lmt_med_types": ";".join(sorted(med_types)) if med_types is not None else "",
        "lmt_course_days": str(min(courses)) if courses else "",
        "lmt_indication": INDICATION_JOIN.join(texts),
        "source": ";".join(sources),
    }


def catalogue_class(entry: Entry, indication: str) -> str:
    if entry.kind == "drug":
        # Drugs with a 限… payment range are typically 乙类.
        if indication.startswith("限"):
            return "02"
        return "01" if unit(entry.code, "lv") < Decimal("0.55") else "02"
    if entry.name in CLASS_03_ITEMS:
        return "03"
    if "加收" in entry.name or entry.code[:4] in ("0024", "0032", "0034"):
        return "02"
    if entry.code[:4] in ("0011", "0012"):
        return "01"
    return "02" if unit(entry.code, "lv") < Decimal("0.2") else "01"


def money(value: Decimal, step: str = "0.01") -> Decimal:
    return value.quantize(Decimal(step), rounding=ROUND_HALF_UP)


def prices(code: str, fee_type: str, capped: bool) -> tuple[str, str]:
    """(cap, demo price); some capped items are priced above the cap on purpose."""
    lo, hi = PRICE_RANGE[fee_type]
    demo = money(lo + (hi - lo) * unit(code, "price"), "0.1")
    cap = ""
    if capped and unit(code, "cap") < CAP_SHARE:
        factor = Decimal("0.8") if unit(code, "over") < OVER_CAP_SHARE else Decimal("1.25")
        cap = f"{max(money(demo * factor, '1'), Decimal(1)):.2f}"
    return cap, f"{demo:.2f}"


def base_row(entry: Entry) -> dict[str, str]:
    row = dict.fromkeys(HEADER, "")
    row.update(merged(entry))
    fee_type = drug_fee_type(entry.code) if entry.kind == "drug" else item_fee_type(entry.code, entry.name)
    lv = catalogue_class(entry, row["lmt_indication"])
    # A cap on a 丙类 item would never matter: the whole line is self-paid.
    cap, demo = prices(entry.code, fee_type, capped=lv != "03")
    ratio = "0.0000"
    if lv == "02":
        ratio = SELFPAY_CHOICES[int(unit(entry.code, "ratio") * len(SELFPAY_CHOICES))]
    row.update(
        hilist_code=entry.code,
        hilist_name=entry.name,
        chrgitm_lv=lv,
        med_chrgitm_type=fee_type,
        pric_uplmt_amt=cap,
        selfpay_prop=ratio,
        begndate=BASE_BEGNDATE,
        demo_pric=demo,
    )
    return row


def with_illustrative(row: dict[str, str], extra: Iterable[str]) -> dict[str, str]:
    marked = set(ALWAYS_ILLUSTRATIVE) | set(extra)
    row["illustrative"] = ";".join(c for c in HEADER if c in marked)
    return row


def build_rows(entries: list[Entry]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    national: dict[str, dict[str, str]] = {}
    for entry in entries:
        base = base_row(entry)
        national[entry.code] = base
        versions = VERSIONS.get(entry.code)
        if not versions:
            rows.append(with_illustrative(dict(base), ()))
            continue
        for beg, end, overrides in versions:
            row = dict(base, begndate=beg, enddate=end, **overrides)
            rows.append(with_illustrative(row, ("begndate", "enddate", *overrides)))
    for code in VERSIONS:
        if code not in national:
            raise ValueError(f"versioned code {code} not in catalogue")
    for code, admdvs, beg, overrides in REGIONAL:
        if code not in national:
            raise ValueError(f"regional code {code} not in catalogue")
        base = national[code]
        for col, value in overrides.items():
            if base[col] == value:
                raise ValueError(f"regional row {code}/{admdvs} does not differ in {col}")
        row = dict(base, admdvs=admdvs, begndate=beg, **overrides)
        extra = ["admdvs", *overrides] + (["begndate"] if beg != BASE_BEGNDATE else [])
        rows.append(with_illustrative(row, extra))
    rows.sort(key=lambda r: (r["hilist_code"], r["admdvs"], r["begndate"]))
    return rows


# --- validation ---

FEE_TYPES = frozenset(PRICE_RANGE) | {"08", "10", "12"}
MED_TYPES = frozenset(
    {
        "11",
        "12",
        "13",
        "14",
        "140104",
        "140201",
        "140401",
        "21",
        "210104",
        "28",
        "41",
        "51",
        "52",
        "71",
    }
)
INSUTYPES = frozenset({"310", "340", "390", "391", "392", "410", "510"})


def check_amount(value: str, places: int) -> Decimal:
    if not re.fullmatch(rf"\d+\.\d{{{places}}}", value):
        raise AssertionError(f"bad amount {value!r}")
    return Decimal(value)


def validate(rows: list[dict[str, str]]) -> None:
    assert 400 <= len(rows) <= 900, f"row count {len(rows)} outside 400..900"
    keys: set[tuple[str, str, str]] = set()
    spans: dict[tuple[str, str], list[tuple[date, date]]] = {}
    for row in rows:
        assert tuple(row) == HEADER, "column order"
        where = f"{row['hilist_code']}/{row['admdvs']}/{row['begndate']}"
        assert row["hilist_code"] and row["hilist_name"], where
        assert all("\n" not in v and "\r" not in v for v in row.values()), where
        assert row["chrgitm_lv"] in ("01", "02", "03"), where
        assert row["med_chrgitm_type"] in FEE_TYPES, where
        if row["pric_uplmt_amt"]:
            assert check_amount(row["pric_uplmt_amt"], 2) > 0, where
        assert check_amount(row["demo_pric"], 2) > 0, where
        ratio = check_amount(row["selfpay_prop"], 4)
        assert 0 <= ratio <= 1, where
        if row["chrgitm_lv"] == "02":
            assert Decimal("0.05") <= ratio <= Decimal("0.20"), where
        else:
            assert ratio == 0, where
        assert row["admdvs"] == "" or re.fullmatch(r"\d{6}", row["admdvs"]), where
        beg = date.fromisoformat(row["begndate"])
        end = date.fromisoformat(row["enddate"]) if row["enddate"] else date.max
        assert beg <= end, where
        assert row["lmt_gend"] in ("", "1", "2"), where
        lo = int(row["lmt_age_min"]) if row["lmt_age_min"] else 0
        hi = int(row["lmt_age_max"]) if row["lmt_age_max"] else 200
        assert 0 <= lo <= hi, where
        assert all(t in INSUTYPES for t in filter(None, row["lmt_insutypes"].split(";"))), where
        assert row["lmt_hosp_lv_min"] in ("", *LEVEL_ORDER), where
        assert all(t in MED_TYPES for t in filter(None, row["lmt_med_types"].split(";"))), where
        assert row["lmt_course_days"] == "" or int(row["lmt_course_days"]) > 0, where
        assert all(c in HEADER for c in row["illustrative"].split(";")), where
        key = (row["hilist_code"], row["admdvs"], row["begndate"])
        assert key not in keys, f"duplicate {where}"
        keys.add(key)
        spans.setdefault(key[:2], []).append((beg, end))
    for span_key, periods in spans.items():
        periods.sort()
        for (_, prev_end), (next_beg, _) in itertools.pairwise(periods):
            assert prev_end < next_beg, f"overlapping versions for {span_key}"
    order = [(r["hilist_code"], r["admdvs"], r["begndate"]) for r in rows]
    assert order == sorted(order), "rows not sorted"


def write(rows: list[dict[str, str]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows([row[c] for c in HEADER] for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=DEFAULT_SHARED,
        help="shared folder (default: <repo>/../shared)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output CSV")
    args = parser.parse_args(argv)
    lib = args.shared / LIBRARY
    if not lib.is_dir():
        parser.error(f"rule library not found: {lib}")

    drugs = load_drugs(lib)
    items = load_items(lib)
    overlap = {e.code for e in drugs} & {e.code for e in items}
    assert not overlap, f"codes in both drug and item lists: {overlap}"
    rows = build_rows(drugs + items)
    validate(rows)
    write(rows, args.out)

    regional = sum(1 for r in rows if r["admdvs"])
    dated = len({r["hilist_code"] for r in rows if r["enddate"]})
    print(
        f"wrote {args.out}: {len(rows)} rows, {len(drugs)} drug codes, {len(items)} item codes, "
        f"{regional} regional rows, {dated} codes with dated versions"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
