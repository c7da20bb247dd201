"""Queries about a person a HIS may make while the person is there: 5301 filings, 5303 in-hospital status.

Like 5206, each answers only for a person who shows a credential at the institution
(``mdtrt_cert_type``, ``mdtrt_cert_no``, ``card_sn`` in ``data``) or has an open visit there;
otherwise ``无权查询``, the same whether or not the person exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..service import queries
from ..service.credentials import Credential
from .inputs import Call, credential_of, payload_of

__all__ = ["HANDLERS"]


def _person(call: Call) -> tuple[str, Credential | None]:
    body: Mapping[str, Any] = payload_of(call.data, "data")
    psn_no = str(body.get("psn_no") or "").strip()
    credential = credential_of(body) if body.get("mdtrt_cert_type") or body.get("mdtrt_cert_no") else None
    return psn_no, credential


def disease_filings(call: Call) -> dict[str, Any]:
    """5301 人员慢特病备案查询: ``feedetail`` rows {opsp_dise_code, opsp_dise_name, begndate, enddate}."""
    psn_no, credential = _person(call)
    rows = queries.disease_filings_at_institution(call.db, call.fixmedins_code, psn_no, credential, call.clock())
    return {"feedetail": rows}


def in_hospital(call: Call) -> dict[str, Any]:
    """5303 在院信息查询: ``data`` rows of the person's open admissions, wherever they are."""
    psn_no, credential = _person(call)
    policies = call.service.engine.policies

    def same_region(a: str, b: str) -> bool:
        return policies.find_region(a) == policies.find_region(b)

    rows = queries.admissions_at_institution(call.db, call.fixmedins_code, psn_no, credential, call.clock(),
                                             same_region)  # fmt: skip
    return {"data": rows}


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {"5301": disease_filings, "5303": in_hospital}
