"""Clearing applications (3203 清算申请 / 3204 清算申请撤销) of an institution.

An institution applies for the clearing of a period with the totals it declares; the
platform sums the institution's own settlement and reversal rows of the period (as 3201
does) and records the application only when every declared total equals its own. An
application stands (``applied``) until the agency processes it (``processed``, later and
elsewhere: :func:`mark_processed`) or the institution revokes it (``revoked``, only before
processing). Every lookup is scoped by the calling institution.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, select, update
from sqlalchemy.exc import IntegrityError

from ..db import repository as repo
from ..db.schema import clearing_applications, institutions
from ..errors import YibaoError
from ..money import parse_fen
from .uow import transact

__all__ = [
    "AMOUNT_FIELDS", "ClearingApplication", "ClearingMismatch", "ClearingRefused", "ClearingRequest",
    "application_id", "apply_for_clearing", "mark_processed", "revoke_application",
]  # fmt: skip

#: The declared totals a clearing application carries, in the order they are checked.
AMOUNT_FIELDS = ("medfee_sumamt", "med_sumfee", "fund_appy_sum", "cash_payamt", "acct_pay")


class ClearingRefused(YibaoError):
    """The application (or revocation) is refused; nothing was written."""

    code = "CLEARING_REFUSED"


class ClearingMismatch(YibaoError):
    """Declared totals differ from the platform's: ``differences`` = ((field, declared, platform), …)."""

    code = "CLEARING_MISMATCH"

    def __init__(self, differences: tuple[tuple[str, int, int], ...]) -> None:
        self.differences = differences
        super().__init__("; ".join(f"{field}: {declared} / {ours}" for field, declared, ours in differences))


@dataclass(frozen=True)
class ClearingRequest:
    """A clearing application as read from the input (amounts in fen)."""

    clr_type: str
    clr_way: str
    clr_optins: str  # "" = settlements of every insuring region
    setlym: str  # "" when not given
    begndate: dt.date
    enddate: dt.date
    amounts: tuple[tuple[str, int], ...]  # (field, fen) for each of AMOUNT_FIELDS
    psntime: int | None  # 清算人次, checked when given


@dataclass(frozen=True)
class ClearingApplication:
    """A stored application, as answered."""

    clr_appy_evt_id: str
    status: str
    setl_cnt: int
    psntime: int


def application_id(fixmedins_code: str, msgid: str) -> str:
    """The application id of a message (机构清算申请事件ID): a retry, under either infno alias, finds the first."""
    digest = hashlib.sha256(f"{fixmedins_code}|clearing|{msgid}".encode()).hexdigest()
    return f"CLR{digest[:27]}"


def _payload_hash(request: ClearingRequest) -> str:
    return hashlib.sha256(
        json.dumps([request.clr_type, request.clr_way, request.clr_optins, request.setlym, request.begndate.isoformat(),
                    request.enddate.isoformat(), list(request.amounts), request.psntime]).encode()
    ).hexdigest()  # fmt: skip


def _lock_institution(conn: Connection, fixmedins_code: str) -> None:
    """Serialise one institution's clearing writes (a row lock on PostgreSQL; SQLite has one writer)."""
    found = conn.execute(
        select(institutions.c.fixmedins_code).where(institutions.c.fixmedins_code == fixmedins_code).with_for_update()
    ).first()
    if found is None:
        raise ClearingRefused(f"定点医药机构 {fixmedins_code} 不存在")


def _platform_totals(
    conn: Connection, fixmedins_code: str, request: ClearingRequest
) -> tuple[dict[str, int], int, int]:
    """(totals by field, settlement rows covered, net person-times) of the institution's rows in the period."""
    start = dt.datetime.combine(request.begndate, dt.time())
    end = dt.datetime.combine(request.enddate + dt.timedelta(days=1), dt.time())
    totals = dict.fromkeys(AMOUNT_FIELDS, 0)
    rows = net = 0
    for row in repo.settlements_between(conn, fixmedins_code, start, end):
        info: dict[str, Any] = json.loads(row.result_json)["setlinfo"]
        if request.clr_type != str(info.get("clr_type") or ""):
            continue
        if request.clr_optins and str(info.get("insuplc_admdvs") or "") != request.clr_optins:
            continue
        rows += 1
        net += -1 if row.kind == "reversal" else 1
        totals["medfee_sumamt"] += row.medfee_sumamt
        totals["med_sumfee"] += parse_fen(info.get("inscp_scp_amt") or "0", allow_negative=True)
        totals["fund_appy_sum"] += row.fund_pay_sumamt
        totals["cash_payamt"] += row.psn_cash_pay
        totals["acct_pay"] += row.acct_pay
    return totals, rows, net


def _open_key(request: ClearingRequest) -> str:
    return f"{request.clr_type}|{request.clr_optins}|{request.begndate.isoformat()}|{request.enddate.isoformat()}"


def _standing(conn: Connection, fixmedins_code: str, request: ClearingRequest) -> Any:
    """A standing application of the institution whose period and scope overlap the request's, if any."""
    t = clearing_applications.c
    for row in conn.execute(
        select(clearing_applications).where(
            and_(t.fixmedins_code == fixmedins_code, t.clr_type == request.clr_type, t.status != "revoked",
                 t.begndate <= request.enddate, t.enddate >= request.begndate)
        ).order_by(t.begndate, t.clr_appy_evt_id)
    ):  # fmt: skip
        if not row.clr_optins or not request.clr_optins or row.clr_optins == request.clr_optins:
            return row
    return None


def _answer(row: Any) -> ClearingApplication:
    return ClearingApplication(row.clr_appy_evt_id, row.status, row.setl_cnt, row.psntime)


def apply_for_clearing(
    db: Engine, fixmedins_code: str, msgid: str, request: ClearingRequest, clock: Callable[[], dt.datetime]
) -> ClearingApplication:
    """Record the application if its totals are the platform's; a retried msgid returns the stored one.

    Raises :class:`ClearingMismatch` (declared totals differ) or :class:`ClearingRefused`.
    """
    new_id = application_id(fixmedins_code, msgid)
    digest = _payload_hash(request)

    def work(conn: Connection) -> ClearingApplication:
        _lock_institution(conn, fixmedins_code)
        t = clearing_applications.c
        stored = conn.execute(
            select(clearing_applications).where(and_(t.fixmedins_code == fixmedins_code, t.msgid == msgid))
        ).first()
        if stored is not None:
            if stored.payload_hash != digest:
                raise ClearingRefused(f"msgid {msgid} 已用于另一清算申请 ({stored.clr_appy_evt_id}), 内容不同")
            return _answer(stored)
        ours, rows, net = _platform_totals(conn, fixmedins_code, request)
        if rows == 0:
            raise ClearingRefused(
                f"{request.begndate}~{request.enddate} 本机构无清算类别 {request.clr_type} 的结算, 无需清算申请"
            )
        declared = dict(request.amounts)
        differences = tuple((f, declared[f], ours[f]) for f in AMOUNT_FIELDS if declared[f] != ours[f])
        if request.psntime is not None and request.psntime != net:
            differences += (("psntime", request.psntime, net),)
        if differences:
            raise ClearingMismatch(differences)
        other = _standing(conn, fixmedins_code, request)
        if other is not None:
            raise ClearingRefused(
                f"本机构已有未撤销的清算申请 {other.clr_appy_evt_id} ({other.begndate}~{other.enddate}, "
                f"清算类别 {other.clr_type}), 期间重叠; 须先撤销 (3204)"
            )
        conn.execute(
            clearing_applications.insert().values(
                clr_appy_evt_id=new_id, fixmedins_code=fixmedins_code, msgid=msgid, payload_hash=digest,
                clr_type=request.clr_type, clr_way=request.clr_way, clr_optins=request.clr_optins,
                setlym=request.setlym, begndate=request.begndate, enddate=request.enddate, **declared,
                psntime=net, setl_cnt=rows, status="applied", open_key=_open_key(request), created_at=clock(),
            )
        )  # fmt: skip
        return ClearingApplication(new_id, "applied", rows, net)

    return _once_more_on_conflict(db, work)


def revoke_application(
    db: Engine, fixmedins_code: str, msgid: str, clr_appy_evt_id: str, clock: Callable[[], dt.datetime]
) -> ClearingApplication:
    """Revoke the institution's own application not yet processed; a retried msgid answers as the first time."""

    def work(conn: Connection) -> ClearingApplication:
        _lock_institution(conn, fixmedins_code)
        t = clearing_applications.c
        row = conn.execute(
            select(clearing_applications).where(
                and_(t.clr_appy_evt_id == clr_appy_evt_id, t.fixmedins_code == fixmedins_code)
            )
        ).first()
        if row is None:  # the same answer whether it is another institution's or does not exist
            raise ClearingRefused(f"清算申请 {clr_appy_evt_id} 不存在或不属于本机构")
        if row.status == "revoked":
            if row.revoke_msgid == msgid:
                return _answer(row)
            raise ClearingRefused(f"清算申请 {clr_appy_evt_id} 已撤销")
        if row.status == "processed":
            raise ClearingRefused(f"清算申请 {clr_appy_evt_id} 经办机构已受理处理, 不能撤销")
        conn.execute(
            update(clearing_applications)
            .where(and_(t.clr_appy_evt_id == clr_appy_evt_id, t.status == "applied"))
            .values(status="revoked", open_key=None, revoked_at=clock(), revoke_msgid=msgid)
        )
        return ClearingApplication(row.clr_appy_evt_id, "revoked", row.setl_cnt, row.psntime)

    return transact(db, work)


def mark_processed(db: Engine, clr_appy_evt_id: str, clock: Callable[[], dt.datetime]) -> bool:
    """The agency's side: a standing application is taken up for clearing (it can no longer be revoked)."""

    def work(conn: Connection) -> bool:
        t = clearing_applications.c
        done = conn.execute(
            update(clearing_applications)
            .where(and_(t.clr_appy_evt_id == clr_appy_evt_id, t.status == "applied"))
            .values(status="processed", processed_at=clock())
        )
        return bool(done.rowcount)

    return transact(db, work)


def _once_more_on_conflict(db: Engine, work: Callable[[Connection], ClearingApplication]) -> ClearingApplication:
    """A concurrent first attempt of the same msgid (or the same period) may commit first: the unique
    constraint refuses ours, and running again answers from what it stored (or refuses the overlap)."""
    try:
        return transact(db, work)
    except IntegrityError:
        return transact(db, work)
