"""What an institution may look up about the platform: designated institutions (1201) and the
catalogue the platform settles against (1312).

Institutions are read from the database in one read-only unit of work; the catalogue is the
one the settlement engine holds in memory (:class:`yibao.catalog.Catalog`), never re-read.
Both answer small immutable values; the gateway formats them with the national field names.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, or_, select

from ..catalog import Catalog, CatalogItem
from ..db.schema import institutions
from .uow import transact

__all__ = [
    "KIND_OF_TYPE",
    "MAX_INSTITUTIONS",
    "CatalogueFilter",
    "CataloguePage",
    "InstitutionInfo",
    "catalogue_page",
    "designated_institutions",
]  # fmt: skip

#: fixmedins_type (定点医药机构类型) → the platform's institution kind.
KIND_OF_TYPE = {"1": "hospital", "2": "pharmacy"}
TYPE_OF_KIND = {kind: code for code, kind in KIND_OF_TYPE.items()}
#: The most institutions one 1201 answers (ordered by code): a name fragment narrows the search.
MAX_INSTITUTIONS = 100


@dataclass(frozen=True)
class InstitutionInfo:
    fixmedins_code: str
    fixmedins_name: str
    fixmedins_type: str
    hosp_lv: str
    admdvs: str


def designated_institutions(
    db: Engine, *, fixmedins_type: str, name: str = "", code: str = "", on: dt.date, limit: int = MAX_INSTITUTIONS
) -> tuple[tuple[InstitutionInfo, ...], bool]:
    """Designated institutions of the type in force on ``on`` (name by substring, code exact), ordered by code,
    at most ``limit``; and whether more matched."""
    t = institutions.c
    conditions = [
        t.kind == KIND_OF_TYPE[fixmedins_type], t.designated.is_(True), t.valid_from <= on,
        or_(t.valid_to.is_(None), t.valid_to >= on),
    ]  # fmt: skip
    if name:
        conditions.append(t.name.contains(name, autoescape=True))  # % and _ in the fragment match themselves
    if code:
        conditions.append(t.fixmedins_code == code)

    def work(conn: Connection) -> tuple[tuple[InstitutionInfo, ...], bool]:
        rows = conn.execute(
            select(t.fixmedins_code, t.name, t.kind, t.hosp_lv, t.admdvs)
            .where(and_(*conditions))
            .order_by(t.fixmedins_code)
            .limit(limit + 1)
        ).all()
        found = tuple(
            InstitutionInfo(r.fixmedins_code, r.name, TYPE_OF_KIND[r.kind], r.hosp_lv, r.admdvs) for r in rows
        )
        return found[:limit], len(found) > limit

    return transact(db, work, readonly=True)


# -- 1312: the catalogue -----------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogueFilter:
    """The 1312 conditions; an empty value does not filter."""

    query_date: dt.date | None = None
    hilist_code: str = ""
    insu_admdvs: str = ""
    begndate: dt.date | None = None
    hilist_name: str = ""
    med_chrgitm_type: str = ""
    chrgitm_lv: str = ""
    lmt_used_flag: str = ""
    list_type: str = ""


@dataclass(frozen=True)
class CataloguePage:
    rows: tuple[CatalogItem, ...]
    total: int
    page_num: int
    page_size: int


def list_type_of(item: CatalogItem) -> str:
    """目录类别 (list_type) by the code's form: 101 西药中成药 (X…/Z… drug codes), 201 医疗服务项目 (15 digits)."""
    code = item.hilist_code
    if code[:1] in ("X", "Z"):
        return "101"
    if len(code) == 15 and code.isascii() and code.isdigit():
        return "201"
    return ""


def _matches(item: CatalogItem, f: CatalogueFilter, regions: frozenset[str] | None) -> bool:
    if f.hilist_code and item.hilist_code != f.hilist_code:
        return False
    if regions is not None and item.admdvs not in regions:
        return False
    if f.query_date is not None and not item.in_force(f.query_date):
        return False
    if f.begndate is not None and item.begndate != f.begndate:
        return False
    if f.hilist_name and f.hilist_name not in item.hilist_name:
        return False
    if f.med_chrgitm_type and item.med_chrgitm_type != f.med_chrgitm_type:
        return False
    if f.chrgitm_lv and item.chrgitm_lv != f.chrgitm_lv:
        return False
    if f.lmt_used_flag and ("1" if item.restricted else "0") != f.lmt_used_flag:
        return False
    return not f.list_type or list_type_of(item) == f.list_type


def catalogue_page(catalog: Catalog, f: CatalogueFilter, page_num: int, page_size: int) -> CataloguePage:
    """One page of the catalogue rows matching ``f``, in the file's order (code, region, begndate).

    ``insu_admdvs`` names a region: its rows and the rows that apply there (its city's, its
    province's and the national rows), as a lookup for that region would consider them."""
    regions = None
    if f.insu_admdvs:
        r = f.insu_admdvs
        regions = frozenset((r, r[:4] + "00", r[:2] + "0000", ""))
    # The common case, one code, is found without a scan.
    rows = catalog.versions(f.hilist_code) if f.hilist_code else _rows(catalog)
    matched = [item for item in rows if _matches(item, f, regions)]
    start = (page_num - 1) * page_size
    return CataloguePage(tuple(matched[start : start + page_size]), len(matched), page_num, page_size)


_cache_lock = threading.Lock()
_cached: dict[int, tuple[Catalog, tuple[CatalogItem, ...]]] = {}


def _rows(catalog: Catalog) -> tuple[CatalogItem, ...]:
    """Every row of the catalogue in order, computed once per catalogue (the engine's is immutable)."""
    entry = _cached.get(id(catalog))
    if entry is not None and entry[0] is catalog:
        return entry[1]
    rows = tuple(item for code in sorted(catalog.codes()) for item in catalog.versions(code))
    with _cache_lock:
        if len(_cached) >= 4:
            _cached.clear()
        _cached[id(catalog)] = (catalog, rows)  # the catalogue is kept alive, so its id is not reused
    return rows
