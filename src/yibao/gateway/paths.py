"""Which transaction a request path names: the one national endpoint, and the per-transaction paths.

HIS clients reach the national platform in three ways, all served here by the same handlers:

* ``POST /fsi/api/rsfComIfsService/callService`` — the envelope's ``infno`` names the transaction;
* ``POST /fsi/api/rsfComIfsService/callService/{infno}`` — the same, with ``infno`` in the path;
* the per-transaction service paths that provincial gateways publish (for example
  ``/fsi/api/outpatientSettleService/saveSettletmentV2`` for 2207), as HIS code configures them.

Where the path names a transaction, the envelope's ``infno`` must be that one (or absent).
Any other path under ``/fsi/api/`` is answered with the national envelope, never a bare 404.
"""

from __future__ import annotations

__all__ = ["CALL_SERVICE", "PREFIX", "SERVICE_PATHS", "Route", "route_of"]

PREFIX = "/fsi/api/"
CALL_SERVICE = "/fsi/api/rsfComIfsService/callService"

#: Per-transaction service paths as provincial gateways publish them (spelling as published,
#: ``Settletment`` and ``Rregistration`` included: clients send exactly these).
SERVICE_PATHS: dict[str, str] = {
    "/fsi/api/signInSignOutService/signIn": "9001",
    "/fsi/api/signInSignOutService/signOut": "9002",
    "/fsi/api/catalogdownservice/downCatalog1301": "1301",
    "/fsi/api/catalogqueryservice/queryHilist": "1312",
    "/fsi/api/fsiPsnInfoService/queryPsnInfo": "1101",
    "/fsi/api/fsiFixMedInsService/queryFixMedIns": "1201",
    "/fsi/api/fsiPsnPriorityInfoService/queryPsnPriorityInfo": "2001",
    "/fsi/api/outpatientDocInfoService/outpatientRregistration": "2201",
    "/fsi/api/outpatientDocInfoService/outpatientRegistrationCancel": "2202",
    "/fsi/api/outpatientDocInfoService/outpatientMdtrtinfoUp": "2203",
    "/fsi/api/outpatientDocInfoService/outpatientFeeListUp": "2204",
    "/fsi/api/outpatientDocInfoService/outpatientFeeListUpCancel": "2205",
    "/fsi/api/outpatientSettleService/preSettletment": "2206",
    "/fsi/api/outpatientSettleService/saveSettletmentV2": "2207",
    "/fsi/api/outpatientSettleService/cancleSettletment": "2208",
    "/fsi/api/hospFeeDtlService/feeDtlUp": "2301",
    "/fsi/api/hospFeeDtlService/feeDtlCl": "2302",
    "/fsi/api/hospSettService/preSett": "2303",
    "/fsi/api/hospSettService/settV2": "2304",
    "/fsi/api/hospSettService/settCl": "2305",
    "/fsi/api/hospitalRegisterService/hospitalRegisterSave": "2401",
    "/fsi/api/dscgService/dischargeProcess": "2402",
    "/fsi/api/hospitalRegisterService/hospitalRegisterEdit": "2403",
    "/fsi/api/hospitalRegisterService/hospitalRegisterCancel": "2404",
    "/fsi/api/dscgService/dischargeUndo": "2405",
    "/fsi/api/reverseService/revsMethod": "2601",
    "/fsi/api/riskConService/beforeAnalyze": "3101",
    "/fsi/api/riskConService/courseAnalyze": "3102",
    "/fsi/api/ybSettlementStmtService/stmtTotal": "3201",
    "/fsi/api/ybSettlementStmtService/stmtDetail": "3202",
    "/fsi/api/fsiIntegratedQueryService/querySetlInfo": "5203",
    "/fsi/api/fsiIntegratedQueryService/queryFeeList": "5204",
    "/fsi/api/fsiIntegratedQueryService/queryFixmedinsPracPsnSum": "5206",
    "/fsi/api/fsiIntegratedQueryService/queryPsnOpspReg": "5301",
    "/fsi/api/fsiIntegratedQueryService/queryInhospInfo": "5303",
}
#: The longest path routed (a longer one is unknown without looking further).
_MAX_PATH = 200


class Route:
    """Where a request under :data:`PREFIX` goes: ``known`` paths name the transaction (or leave it to
    the envelope, ``infno`` None); an unknown path is answered with the national envelope."""

    __slots__ = ("infno", "known")

    def __init__(self, known: bool, infno: str | None) -> None:
        self.known, self.infno = known, infno


_ENVELOPE = Route(True, None)
_UNKNOWN = Route(False, None)
_BY_PATH = {path: Route(True, infno) for path, infno in SERVICE_PATHS.items()}


def route_of(path: str) -> Route:
    """The route of ``path`` (which starts with :data:`PREFIX`); a trailing slash is ignored."""
    if len(path) > _MAX_PATH:
        return _UNKNOWN
    path = path.rstrip("/")
    if path == CALL_SERVICE:
        return _ENVELOPE
    found = _BY_PATH.get(path)
    if found is not None:
        return found
    head, _, infno = path.rpartition("/")
    if head == CALL_SERVICE and infno.isascii() and infno.isalnum() and len(infno) <= 8:
        return Route(True, infno)
    return _UNKNOWN
