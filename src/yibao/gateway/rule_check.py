"""3101: the rule check (明细审核) of a visit's fee lines, in the visit's context (service/rule_check.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RequestError
from ..service import rule_check as rules
from .inputs import Call, payload_of, text_of

__all__ = ["HANDLERS"]


# -- 3101 rule check (pre-event audit of fee lines) --------------------------------------------
def rule_check(call: Call) -> dict[str, Any]:
    body = payload_of(call.data, "data")
    given = call.data.get("feedetail", body.get("feedetail"))
    mdtrt_id = text_of(body, "mdtrt_id", "input.data", required=False)
    if not mdtrt_id and isinstance(given, list) and given and isinstance(given[0], Mapping):
        mdtrt_id = str(given[0].get("mdtrt_id") or "").strip()
    if not mdtrt_id:
        raise RequestError("input.data.mdtrt_id", "缺少必填字段")
    if given is not None and (
        not isinstance(given, list) or not given or not all(isinstance(line, Mapping) for line in given)
    ):
        raise RequestError("input.feedetail", "须为非空的费用明细列表")
    result = rules.violations(call.db, call.service, msgid=call.msgid, fixmedins_code=call.fixmedins_code,
                              mdtrt_id=mdtrt_id, lines=given)  # fmt: skip
    return {"result": result}


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "3101": rule_check,
}
