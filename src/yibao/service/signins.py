"""Operator sign-in (9001 签到) and sign-out (9002 签退) of an institution.

Every national transaction but 9001 carries the ``sign_no`` a sign-in handed out; it is valid
for the institution that signed in until that institution signs it out.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, Engine, insert, select, update

from ..db.schema import signins
from .uow import transact

__all__ = ["is_signed_in", "sign_in", "sign_out"]


def sign_in(db: Engine, *, sign_no: str, fixmedins_code: str, opter: str, opter_name: str, now: dt.datetime) -> None:
    """Record the sign-in ``sign_no``; a retry (the same ``sign_no``) changes nothing."""
    assert sign_no and fixmedins_code and opter, "a sign-in names its number, institution and operator"

    def work(conn: Connection) -> None:
        if conn.execute(select(signins.c.sign_no).where(signins.c.sign_no == sign_no)).first() is None:
            conn.execute(
                insert(signins).values(
                    sign_no=sign_no, fixmedins_code=fixmedins_code, opter=opter, opter_name=opter_name,
                    signed_in_at=now, signed_out_at=None,
                )
            )  # fmt: skip

    transact(db, work)


def sign_out(db: Engine, *, sign_no: str, fixmedins_code: str, now: dt.datetime) -> None:
    """End the institution's own sign-in ``sign_no`` (another institution's is left alone)."""

    def work(conn: Connection) -> None:
        conn.execute(
            update(signins)
            .where(signins.c.sign_no == sign_no, signins.c.fixmedins_code == fixmedins_code)
            .values(signed_out_at=now)
        )

    transact(db, work)


def is_signed_in(db: Engine, sign_no: str, fixmedins_code: str) -> bool:
    """The institution signed ``sign_no`` in and has not signed it out."""
    row = transact(
        db, lambda conn: conn.execute(select(signins).where(signins.c.sign_no == sign_no)).first(), readonly=True
    )
    return row is not None and row.fixmedins_code == fixmedins_code and row.signed_out_at is None
