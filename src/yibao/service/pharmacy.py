"""Pharmacy purchases (定点药店购药, med_type 41): pre-settlement, settlement and its reversal.

No registration: the credential and the fee lines come with the settlement itself. Only an
institution of kind ``pharmacy`` may make them. Every line must name a catalogue code — goods
that are not in the insurance catalogue (a smart watch, wellness products) are refused by the
catalogue as an unknown code, so the personal account can never pay for them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select

from ..db import repository as repo
from ..db.schema import visits
from ..errors import YibaoError
from .credentials import Credential
from .fee_lines import engine_lines, total_mismatch
from .settlement import SettleCommand, SettlementService, StoredReply
from .uow import transact
from .visits import person_of

__all__ = ["PHARMACY_MED_TYPE", "Purchase", "PurchaseRefused", "presettle", "reverse", "settle"]

PHARMACY_MED_TYPE = "41"


class PurchaseRefused(YibaoError):
    """The pharmacy purchase cannot be made or reversed (not a pharmacy, another person, wrong settlement …)."""

    code = "PURCHASE_REFUSED"


@dataclass(frozen=True)
class Purchase:
    """What a purchase names: the buyer's credential, the scheme and the lines bought."""

    cred: Credential
    claimed_psn_no: str | None  # the psn_no the input names, if any: must be the credential's
    insutype: str
    med_type: str
    begntime: str | None  # service time (None: now)
    acct_used_flag: str
    lines: tuple[Mapping[str, Any], ...]
    declared_total_fen: int | None  # medfee_sumamt as the pharmacy computed it


def _require_pharmacy(db: Engine, fixmedins_code: str) -> None:
    row = transact(db, lambda conn: repo.get_institution(conn, fixmedins_code), readonly=True)
    if row is None or row.kind != "pharmacy":
        raise PurchaseRefused(f"机构 {fixmedins_code} 不是定点零售药店, 不能办理药店购药结算 (2101–2103)")


def _stored_begntime(db: Engine, fixmedins_code: str, msgid: str) -> str | None:
    """The service time the first attempt of this msgid settled with (a retry must send the same payload)."""

    def work(conn: Connection) -> str | None:
        message = repo.get_message(conn, fixmedins_code, msgid)
        if message is None or message.setl_id is None:
            return None
        done = repo.get_settlement(conn, message.setl_id)
        if done is None or done.fixmedins_code != fixmedins_code:
            return None
        return str(json.loads(done.request_json).get("begntime") or "") or None

    return transact(db, work, readonly=True)


def _command(
    db: Engine, *, msgid: str, fixmedins_code: str, purchase: Purchase, mdtrt_id: str | None, now: dt.datetime
) -> SettleCommand:
    _require_pharmacy(db, fixmedins_code)
    psn_no = person_of(db, purchase.cred, now)
    if (purchase.claimed_psn_no or psn_no) != psn_no:
        raise PurchaseRefused("psn_no 与凭证不符 (不得冒名购药)")
    if purchase.med_type != PHARMACY_MED_TYPE:
        raise PurchaseRefused(f"药店购药的医疗类别须为 41, 收到 {purchase.med_type}")
    begntime = (mdtrt_id is not None and _stored_begntime(db, fixmedins_code, msgid)) or purchase.begntime
    begntime = begntime or now.strftime("%Y-%m-%d %H:%M:%S")
    mismatch = total_mismatch(purchase.declared_total_fen, purchase.lines)
    if mismatch is not None:
        raise PurchaseRefused(mismatch)
    payload: dict[str, Any] = {
        "insutype": purchase.insutype, "med_type": purchase.med_type, "begntime": begntime[:19],
        "acct_used_flag": purchase.acct_used_flag, "feedetail": engine_lines(purchase.lines),
    }  # fmt: skip
    if mdtrt_id is not None:
        payload["mdtrt_id"] = mdtrt_id
    return SettleCommand(msgid, fixmedins_code, purchase.cred, payload)


def presettle(
    db: Engine, service: SettlementService, *, msgid: str, fixmedins_code: str, purchase: Purchase, now: dt.datetime
) -> dict[str, Any]:
    """2101: the purchase's settlement, computed and not committed, as the national JSON (with the person and
    clearing fields)."""
    command = _command(db, msgid=msgid, fixmedins_code=fixmedins_code, purchase=purchase, mdtrt_id=None, now=now)
    return service.presettle_body_with(lambda _conn: command)


def settle(
    db: Engine, service: SettlementService, *, msgid: str, fixmedins_code: str, mdtrt_id: str, purchase: Purchase,
    now: dt.datetime,
) -> StoredReply:  # fmt: skip
    """2102: settle the purchase as ``mdtrt_id``; a retry of the message replays (with its first service time)."""
    return service.settle(
        _command(db, msgid=msgid, fixmedins_code=fixmedins_code, purchase=purchase, mdtrt_id=mdtrt_id, now=now)
    )


def reverse(
    db: Engine, service: SettlementService, *, msgid: str, fixmedins_code: str, setl_id: str, psn_no: str | None
) -> StoredReply:
    """2103: reverse one of the pharmacy's purchase settlements; a retry of the message replays."""
    _require_pharmacy(db, fixmedins_code)

    def check(conn: Connection) -> None:
        if repo.get_message(conn, fixmedins_code, msgid) is not None:
            return  # a retry: the settlement service replays (or refuses a reused msgid)
        target = repo.get_settlement(conn, setl_id)
        if target is None or target.fixmedins_code != fixmedins_code:
            raise PurchaseRefused(f"结算 {setl_id} 不存在或不属于本机构")
        if psn_no and target.psn_no != psn_no:
            raise PurchaseRefused("psn_no 与结算记录不符")
        if target.kind != "settle":
            raise PurchaseRefused(f"{setl_id} 是冲销记录, 不能撤销")
        registered = conn.execute(select(visits.c.mdtrt_id).where(visits.c.mdtrt_id == target.mdtrt_id)).first()
        if target.med_type != PHARMACY_MED_TYPE or registered is not None:
            raise PurchaseRefused(f"结算 {setl_id} 不是药店购药结算")
        if repo.reversal_of(conn, setl_id) is not None:
            raise PurchaseRefused(f"结算 {setl_id} 已撤销, 不能重复撤销")

    transact(db, check, readonly=True)
    return service.reverse(setl_id, msgid, fixmedins_code)
