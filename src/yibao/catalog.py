"""The medical insurance catalogue (医保目录): items, classes, caps and restrictions.

Each row is one item version: national (``admdvs`` empty) or regional, valid from
``begndate`` to ``enddate`` inclusive. A lookup takes the most specific region
(county → city → province → national) whose row is in force on the date — the
catalogue of the treating region (就医地目录) applies to off-site care.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import CatalogError
from .money import parse_bp, parse_fen

__all__ = ["COLUMNS", "LEVEL_RANK", "Catalog", "CatalogItem", "load_demo_catalog"]

COLUMNS = (
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

#: National grading of institutions (一/二/三级) used by "二级及以上" restrictions.
LEVEL_RANK = {"level_1": 1, "level_2": 2, "level_3": 3}
_LEVEL_NAMES = {"level_1": "一级", "level_2": "二级", "level_3": "三级"}
#: A catalogue this large is a mistake, not a catalogue.
MAX_ROWS = 2_000_000
MAX_MEMO = 200_000
_CHRGITM_LV = {"01", "02", "03", "04"}


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One version of one catalogue item, with its restrictions (限定支付范围)."""

    hilist_code: str
    hilist_name: str
    chrgitm_lv: str
    med_chrgitm_type: str
    pric_uplmt_fen: int | None
    selfpay_prop_bp: int
    admdvs: str
    begndate: dt.date
    enddate: dt.date | None
    lmt_gend: str | None = None
    lmt_age_min: int | None = None
    lmt_age_max: int | None = None
    lmt_insutypes: frozenset[str] | None = None
    lmt_hosp_lv_min: str | None = None
    lmt_med_types: frozenset[str] | None = None
    lmt_course_days: int | None = None
    lmt_indication: str = ""
    demo_pric_fen: int | None = None
    #: Derived: does any restriction (限定支付范围) apply? Lets unrestricted lines skip the checks.
    restricted: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        restricted = any(
            value is not None
            for value in (
                self.lmt_gend, self.lmt_age_min, self.lmt_age_max, self.lmt_insutypes,
                self.lmt_hosp_lv_min, self.lmt_med_types, self.lmt_course_days,
            )
        ) or bool(self.lmt_indication)  # fmt: skip
        object.__setattr__(self, "restricted", restricted)

    def in_force(self, date: dt.date) -> bool:
        return self.begndate <= date and (self.enddate is None or date <= self.enddate)

    @property
    def min_level_name(self) -> str:
        return _LEVEL_NAMES.get(self.lmt_hosp_lv_min or "", self.lmt_hosp_lv_min or "")


class Catalog:
    """Catalogue rows indexed by code; immutable after construction."""

    def __init__(self, items: Iterable[CatalogItem]) -> None:
        index: dict[str, list[CatalogItem]] = {}
        for item in items:
            index.setdefault(item.hilist_code, []).append(item)
        self._index: Mapping[str, tuple[CatalogItem, ...]] = {
            code: tuple(sorted(rows, key=lambda r: (r.admdvs, r.begndate))) for code, rows in index.items()
        }
        self._size = sum(len(rows) for rows in self._index.values())
        # Bills repeat the same items all day: remember (code, region, date) lookups.
        self._memo: dict[tuple[str, str, dt.date], CatalogItem | None] = {}

    def __len__(self) -> int:
        return self._size

    def __contains__(self, code: object) -> bool:
        return code in self._index

    def codes(self) -> Iterable[str]:
        return self._index.keys()

    def versions(self, code: str) -> tuple[CatalogItem, ...]:
        """Every row (dated version) the catalogue holds for ``code``, in the order loaded."""
        return self._index.get(code, ())

    def lookup(self, code: str, region: str, date: dt.date) -> CatalogItem | None:
        """The item version in force for ``region`` on ``date``, most specific region first."""
        key = (code, region, date)
        try:
            return self._memo[key]
        except KeyError:
            pass
        found = self._find(code, region, date)
        if len(self._memo) >= MAX_MEMO:
            self._memo.clear()
        self._memo[key] = found
        return found

    def _find(self, code: str, region: str, date: dt.date) -> CatalogItem | None:
        rows = self._index.get(code)
        if rows is None:
            return None
        for admdvs in (region, region[:4] + "00", region[:2] + "0000", ""):
            for row in rows:
                if row.admdvs == admdvs and row.in_force(date):
                    return row
        return None

    @classmethod
    def from_csv_text(cls, text: str, file: str = "<catalogue>") -> Catalog:
        reader = csv.DictReader(io.StringIO(text))
        header = tuple(reader.fieldnames or ())
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise CatalogError(file, 1, missing[0], "missing column")
        unknown = [c for c in header if c not in COLUMNS]
        if unknown:
            raise CatalogError(file, 1, unknown[0], "unknown column")
        items = []
        seen: dict[tuple[str, str], list[tuple[dt.date, dt.date | None, int]]] = {}
        for line_no, row in enumerate(reader, start=2):
            if line_no > MAX_ROWS:
                raise CatalogError(file, line_no, "", f"more than {MAX_ROWS} rows")
            item = _parse_row(file, line_no, row)
            key = (item.hilist_code, item.admdvs)
            for start, end, other in seen.get(key, ()):
                if item.begndate <= (end or dt.date.max) and start <= (item.enddate or dt.date.max):
                    raise CatalogError(file, line_no, "begndate", f"overlaps line {other} for the same code and region")
            seen.setdefault(key, []).append((item.begndate, item.enddate, line_no))
            items.append(item)
        return cls(items)

    @classmethod
    def from_csv(cls, path: str | Path) -> Catalog:
        p = Path(path)
        try:
            text = p.read_text("utf-8")
        except OSError as exc:
            raise CatalogError(str(p), 0, "", f"cannot read: {exc.strerror}") from None
        return cls.from_csv_text(text, str(p))


def _parse_row(file: str, line: int, row: Mapping[str, str | None]) -> CatalogItem:
    def text(column: str) -> str:
        return (row.get(column) or "").strip()

    def fail(column: str, reason: str) -> CatalogError:
        return CatalogError(file, line, column, reason)

    def optional_int(column: str, low: int, high: int) -> int | None:
        raw = text(column)
        if not raw:
            return None
        if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
            raise fail(column, f"must be an integer in [{low}, {high}], got {raw!r}")
        return int(raw)

    def date(column: str) -> dt.date | None:
        raw = text(column)
        if not raw:
            return None
        try:
            return dt.date.fromisoformat(raw)
        except ValueError:
            raise fail(column, f"must be a date YYYY-MM-DD, got {raw!r}") from None

    def codes(column: str) -> frozenset[str] | None:
        raw = text(column)
        return frozenset(part.strip() for part in raw.split(";") if part.strip()) if raw else None

    code = text("hilist_code")
    if not code:
        raise fail("hilist_code", "missing required value")
    chrgitm_lv = text("chrgitm_lv")
    if chrgitm_lv not in _CHRGITM_LV:
        raise fail("chrgitm_lv", f"must be 01, 02, 03 or 04, got {chrgitm_lv!r}")
    try:
        cap = parse_fen(text("pric_uplmt_amt")) if text("pric_uplmt_amt") else None
    except ValueError as exc:
        raise fail("pric_uplmt_amt", str(exc)) from None
    try:
        demo = parse_fen(text("demo_pric")) if text("demo_pric") else None
    except ValueError as exc:
        raise fail("demo_pric", str(exc)) from None
    try:
        prop = parse_bp(text("selfpay_prop") or "0")
    except ValueError as exc:
        raise fail("selfpay_prop", str(exc)) from None
    if chrgitm_lv in ("01", "03") and prop:
        raise fail("selfpay_prop", f"must be 0 for chrgitm_lv {chrgitm_lv}: only 乙类 has a self-pay-first ratio")
    admdvs = text("admdvs")
    if admdvs and not (admdvs.isascii() and admdvs.isdigit() and len(admdvs) == 6):
        raise fail("admdvs", f"must be empty (national) or a 6-digit region code, got {admdvs!r}")
    begndate = date("begndate")
    if begndate is None:
        raise fail("begndate", "missing required value")
    enddate = date("enddate")
    if enddate is not None and enddate < begndate:
        raise fail("enddate", "ends before begndate")
    gend = text("lmt_gend") or None
    if gend not in (None, "1", "2"):
        raise fail("lmt_gend", f"must be empty, 1 or 2, got {gend!r}")
    level = text("lmt_hosp_lv_min") or None
    if level is not None and level not in LEVEL_RANK:
        raise fail("lmt_hosp_lv_min", f"must be one of {', '.join(LEVEL_RANK)}, got {level!r}")
    age_min = optional_int("lmt_age_min", 0, 150)
    age_max = optional_int("lmt_age_max", 0, 150)
    if age_min is not None and age_max is not None and age_min > age_max:
        raise fail("lmt_age_max", "is below lmt_age_min")
    return CatalogItem(
        hilist_code=code,
        hilist_name=text("hilist_name"),
        chrgitm_lv=chrgitm_lv,
        med_chrgitm_type=text("med_chrgitm_type"),
        pric_uplmt_fen=cap,
        selfpay_prop_bp=prop,
        admdvs=admdvs,
        begndate=begndate,
        enddate=enddate,
        lmt_gend=gend,
        lmt_age_min=age_min,
        lmt_age_max=age_max,
        lmt_insutypes=codes("lmt_insutypes"),
        lmt_hosp_lv_min=level,
        lmt_med_types=codes("lmt_med_types"),
        lmt_course_days=optional_int("lmt_course_days", 1, 3660),
        lmt_indication=text("lmt_indication"),
        demo_pric_fen=demo,
    )


def load_demo_catalog() -> Catalog:
    """The bundled demo catalogue: real national codes and restrictions (see docs/catalog.md)."""
    text = resources.files("yibao").joinpath("data/catalog/demo.csv").read_text("utf-8")
    return Catalog.from_csv_text(text, "yibao/data/catalog/demo.csv")
