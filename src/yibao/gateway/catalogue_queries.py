"""1201 (医药机构信息获取) and 1312 (医保目录信息查询); 1301 and 9102 answered as unsupported.

The handlers read their input through :mod:`.inputs`, ask the service layer
(:mod:`yibao.service.catalogue_queries`) and format its answer with the national field names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from ..catalog import CatalogItem
from ..errors import RequestError
from ..service.catalogue_queries import (
    KIND_OF_TYPE,
    CatalogueFilter,
    catalogue_page,
    designated_institutions,
    list_type_of,
)
from .inputs import Call, GatewayError, date_of, text_of

__all__ = ["HANDLERS", "MAX_PAGE_NUM", "MAX_PAGE_SIZE"]

#: The most rows one 1312 page carries (page_size); more are asked for page by page.
MAX_PAGE_SIZE = 1000
#: page_num beyond this is refused (a catalogue of 2,000,000 rows has 2,000 pages of 1,000).
MAX_PAGE_NUM = 1_000_000
#: Insurance types paid by the medical (not work-injury 410 or maternity 510) schemes.
_NON_MEDICAL = frozenset({"410", "510"})
#: 1312 output fields the catalogue holds nothing for: answered empty.
_EMPTY_1312 = ("hilist_use_type", "lmt_cpnd_type", "wubi", "pinyin")
_EMPTY_AUDIT = ("updt_time", "crter_id", "crter_name", "crte_time", "crte_optins_no", "opter_id", "opter_name",
                "opt_time", "optins_no", "poolarea_no")  # fmt: skip


def _node(call: Call, key: str) -> tuple[Mapping[str, Any], str]:
    """The business fields (under ``key`` or directly under ``input``) and their JSON path for messages."""
    inner = call.data.get(key)
    if isinstance(inner, Mapping):
        return inner, f"input.{key}"
    return call.data, "input"


def _code(body: Mapping[str, Any], key: str, where: str, max_len: int, *, required: bool = False) -> str:
    """A code: printable ASCII without spaces, bounded."""
    value = text_of(body, key, where, required=required, max_len=max_len)
    if value and not (value.isascii() and value.isprintable() and " " not in value):
        raise RequestError(f"{where}.{key}", "只能含半角可打印字符 (不含空格)")
    return value


def _optional_date(body: Mapping[str, Any], key: str, where: str) -> dt.date | None:
    value = text_of(body, key, where, required=False, max_len=30)
    return date_of(value, f"{where}.{key}") if value else None


def _count(body: Mapping[str, Any], key: str, where: str, high: int) -> int:
    value = text_of(body, key, where, max_len=12)
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= high:
        raise RequestError(f"{where}.{key}", f"须为 1 至 {high} 的整数, 收到 {value[:20]!r}")
    return int(value)


def _choice(body: Mapping[str, Any], key: str, where: str, allowed: tuple[str, ...]) -> str:
    value = _code(body, key, where, 8)
    if value and value not in allowed:
        raise RequestError(f"{where}.{key}", f"须为 {' / '.join(allowed)} 之一, 收到 {value!r}")
    return value


# -- 1201 医药机构信息获取 -------------------------------------------------------------------------
def medins_info(call: Call) -> dict[str, Any]:
    body, where = _node(call, "medinsinfo")
    if body is call.data:
        body, where = _node(call, "data")
    fixmedins_type = _code(body, "fixmedins_type", where, 6, required=True)
    if fixmedins_type not in KIND_OF_TYPE:
        raise RequestError(f"{where}.fixmedins_type", "须为 1 (定点医疗机构) 或 2 (定点零售药店)")
    name = text_of(body, "fixmedins_name", where, required=False, max_len=100)
    code = _code(body, "fixmedins_code", where, 30)
    found, _more = designated_institutions(
        call.db, fixmedins_type=fixmedins_type, name=name, code=code, on=call.clock().date()
    )
    return {
        "medinsinfo": [
            {"fixmedins_code": i.fixmedins_code, "fixmedins_name": i.fixmedins_name, "uscc": "",
             "fixmedins_type": i.fixmedins_type, "hosp_lv": i.hosp_lv}
            for i in found
        ]
    }  # fmt: skip


# -- 1312 医保目录信息查询 -------------------------------------------------------------------------
def _flags(item: CatalogItem) -> tuple[str, str]:
    """(med_use_flag, matn_used_flag) from the insurance types the item is limited to (none = every type)."""
    if item.lmt_insutypes is None:
        return "1", "1"
    return ("1" if item.lmt_insutypes - _NON_MEDICAL else "0"), ("1" if "510" in item.lmt_insutypes else "0")


def _catalogue_row(item: CatalogItem) -> dict[str, str]:
    med_use, matn_used = _flags(item)
    region = item.admdvs or "000000"
    return {
        "hilist_code": item.hilist_code, "hilist_name": item.hilist_name, "insu_admdvs": item.admdvs,
        "begndate": item.begndate.isoformat(), "enddate": item.enddate.isoformat() if item.enddate else "",
        "med_chrgitm_type": item.med_chrgitm_type, "chrgitm_lv": item.chrgitm_lv,
        "lmt_used_flag": "1" if item.restricted else "0", "list_type": list_type_of(item),
        "med_use_flag": med_use, "matn_used_flag": matn_used, **dict.fromkeys(_EMPTY_1312, ""),
        "memo": item.lmt_indication, "vali_flag": "1",
        "rid": f"{item.hilist_code}-{region}-{item.begndate:%Y%m%d}", **dict.fromkeys(_EMPTY_AUDIT, ""),
    }  # fmt: skip


def catalogue_query(call: Call) -> dict[str, Any]:
    body, where = _node(call, "data")
    region = _code(body, "insu_admdvs", where, 6)
    if region and not (len(region) == 6 and region.isdigit()):
        raise RequestError(f"{where}.insu_admdvs", f"须为 6 位医保区划代码, 收到 {region!r}")
    _optional_date(body, "updt_time", where)  # accepted, not a filter: the catalogue has no update times
    conditions = CatalogueFilter(
        query_date=_optional_date(body, "query_date", where),
        hilist_code=_code(body, "hilist_code", where, 50),
        insu_admdvs=region,
        begndate=_optional_date(body, "begndate", where),
        hilist_name=text_of(body, "hilist_name", where, required=False, max_len=200),
        med_chrgitm_type=_code(body, "med_chrgitm_type", where, 6),
        chrgitm_lv=_choice(body, "chrgitm_lv", where, ("01", "02", "03", "04")),
        lmt_used_flag=_choice(body, "lmt_used_flag", where, ("0", "1")),
        list_type=_code(body, "list_type", where, 6),
    )
    page_num = _count(body, "page_num", where, MAX_PAGE_NUM)
    page_size = _count(body, "page_size", where, MAX_PAGE_SIZE)
    page = catalogue_page(call.service.engine.catalog, conditions, page_num, page_size)
    pages = -(-page.total // page_size)
    return {
        "data": [_catalogue_row(item) for item in page.rows],
        "recordCounts": page.total, "pages": pages, "size": len(page.rows), "pageNum": page_num,
        "pageSize": page_size, "firstPage": 1 if pages else 0, "lastPage": pages,
    }  # fmt: skip


# -- 1301 / 9102: file downloads, not served -------------------------------------------------------
def file_download_unsupported(call: Call) -> dict[str, Any]:
    raise GatewayError(
        f"交易 {call.infno} 不支持: 本平台不提供目录文件下载 (1301 的药品目录文件字段本平台目录不具备, "
        "9102 的应答为文件流而非报文), 请使用 1312 医保目录信息查询分页获取本平台结算所用目录"
    )


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "1201": medins_info,
    "1312": catalogue_query,
    "1301": file_download_unsupported,
    "9102": file_download_unsupported,
}
