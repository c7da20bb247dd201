"""Direct-table builders for storage tests (independent of the registry services)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Engine, insert

from yibao import ledger
from yibao.db import repository as repo
from yibao.db import schema as S
from yibao.idcard import check_digit
from yibao.service.credentials import hash_pin
from yibao.service.uow import transact

NOW = dt.datetime(2025, 3, 1, 9, 0, 0)
PIN = "654321"
_HASHED_PIN = hash_pin(PIN)


def certno(region: str, birth: dt.date, seq: int, gend: str) -> str:
    """A valid 18-digit ID number (odd sequence digit for men)."""
    seq3 = seq % 1000
    if (seq3 % 2 == 1) != (gend == "1"):
        seq3 = (seq3 + 1) % 1000
    first17 = f"{region}{birth:%Y%m%d}{seq3:03d}"
    return first17 + check_digit(first17)


def region(conn: Connection, code: str = "210600", name: str = "丹东市") -> None:
    if conn.execute(S.regions.select().where(S.regions.c.code == code)).first() is None:
        conn.execute(insert(S.regions).values(code=code, name=name, parent_code=None))


def institution(
    conn: Connection, code: str = "H21060000001", *, admdvs: str = "210600", hosp_lv: str = "08",
    kind: str = "hospital", networked: bool = True,
) -> str:  # fmt: skip
    region(conn, admdvs)
    conn.execute(
        insert(S.institutions).values(
            fixmedins_code=code, name=f"机构{code}", kind=kind, hosp_lv=hosp_lv, admdvs=admdvs, designated=True,
            valid_from=dt.date(2020, 1, 1), valid_to=None, networked=networked,
        )
    )  # fmt: skip
    return code


def person(
    conn: Connection, psn_no: str, *, admdvs: str = "210600", insutype: str = "310", psn_type: str = "1201",
    birth: dt.date = dt.date(1958, 5, 1), gend: str = "1", balance_fen: int = 0, card: str | None = None,
    pin_must_change: bool = False, naty: str | None = None, emp_name: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A person with an enrolment, a card (number = psn_no unless given), a PIN and a balance."""
    region(conn, admdvs)
    seq = int("".join(ch for ch in psn_no if ch.isdigit()) or "1")
    conn.execute(
        insert(S.persons).values(
            psn_no=psn_no, name=f"参保人{psn_no}", certno=certno(admdvs, birth, seq, gend), gend=gend, brdy=birth,
            admdvs=admdvs, naty=naty,
        )
    )  # fmt: skip
    conn.execute(
        insert(S.enrolments).values(
            psn_no=psn_no, insutype=insutype, psn_type=psn_type, admdvs=admdvs, begn_date=dt.date(2015, 1, 1),
            emp_name=emp_name,
        )
    )
    number = card or f"C{psn_no}"
    conn.execute(
        insert(S.credentials).values(
            psn_no=psn_no, kind="card", number=number, card_sn=f"SN{psn_no}", status="active", created_at=NOW
        )
    )
    conn.execute(
        insert(S.pins).values(
            psn_no=psn_no, pin_hash=_HASHED_PIN, must_change=pin_must_change, failed_attempts=0, locked=False,
            updated_at=NOW,
        )
    )  # fmt: skip
    if balance_fen:
        repo.post_entry(
            conn,
            ledger.contribution_entry(
                kind="employee_monthly", ref=f"seed-{psn_no}", psn_no=psn_no, admdvs=admdvs, fund_pay_type="310100",
                amount_fen=balance_fen * 4, account_fen=balance_fen,
            ),
            NOW,
        )  # fmt: skip
    return {"psn_no": psn_no, "card": number, "card_sn": f"SN{psn_no}"}


def build(engine: Engine, fn: Any) -> Any:
    return transact(engine, fn)
