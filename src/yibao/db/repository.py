"""SQL for the service layer: small functions over one open Connection.

Every function runs inside the caller's transaction; none commits. Row locks
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's single writer already holds the
database) are taken in sorted ``psn_no`` order so two settlements never wait on
each other in opposite orders.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..ledger import Entry, Posting, account_kind
from .schema import (
    accumulators,
    credentials,
    enrolments,
    identities,
    institutions,
    journal_entries,
    ledger_accounts,
    messages,
    persons,
    pins,
    postings,
    settlements,
)

__all__ = [
    "add_accumulators",
    "balances",
    "get_accumulators",
    "get_institution",
    "get_message",
    "get_person",
    "lock_persons",
    "post_entry",
]


# Hot-path statements are built once: constructing and cache-keying a statement per call
# costs more than executing it.
_PERSON = select(persons).where(persons.c.psn_no == bindparam("p"))
_INSTITUTION = select(institutions).where(institutions.c.fixmedins_code == bindparam("code"))
_ENROLMENT = (
    select(enrolments)
    .where(
        enrolments.c.psn_no == bindparam("p"),
        enrolments.c.insutype == bindparam("insutype"),
        enrolments.c.begn_date <= bindparam("d"),
        or_(enrolments.c.end_date.is_(None), enrolments.c.end_date >= bindparam("d")),
    )
    .order_by(enrolments.c.begn_date.desc())
)
_IDENTITIES = select(identities.c.idet_type).where(
    identities.c.psn_no == bindparam("p"),
    identities.c.begn_date <= bindparam("d"),
    or_(identities.c.end_date.is_(None), identities.c.end_date >= bindparam("d")),
)
_CREDENTIAL = select(credentials).where(credentials.c.kind == bindparam("kind"), credentials.c.number == bindparam("n"))
_PIN = select(pins).where(pins.c.psn_no == bindparam("p"))
_ACCUMULATORS = select(accumulators.c.key, accumulators.c.value).where(
    accumulators.c.psn_no == bindparam("p"),
    accumulators.c.year == bindparam("y"),
    accumulators.c.insutype == bindparam("insutype"),
)
_ACCOUNT_IDS = select(ledger_accounts.c.code, ledger_accounts.c.id).where(
    ledger_accounts.c.code.in_(bindparam("codes", expanding=True))
)
_BALANCES = select(ledger_accounts.c.code, ledger_accounts.c.balance_fen).where(
    ledger_accounts.c.code.in_(bindparam("codes", expanding=True))
)
_INSERT_ENTRY = insert(journal_entries)
_INSERT_POSTINGS = insert(postings)
_MOVE_PERSONAL = (
    update(ledger_accounts)
    .where(ledger_accounts.c.id == bindparam("b_id"))
    .values(balance_fen=ledger_accounts.c.balance_fen - bindparam("debit"))
)
_MESSAGE = select(messages).where(messages.c.caller == bindparam("c"), messages.c.msgid == bindparam("m"))
_SETTLEMENT = select(settlements).where(settlements.c.setl_id == bindparam("s"))


def get_person(conn: Connection, psn_no: str) -> Row[Any] | None:
    return conn.execute(_PERSON, {"p": psn_no}).first()


def person_by_certno(conn: Connection, certno: str) -> Row[Any] | None:
    return conn.execute(select(persons).where(persons.c.certno == certno.upper())).first()


def lock_persons(conn: Connection, psn_nos: Iterable[str]) -> None:
    """Lock the persons' rows in a fixed order (a no-op beyond the write lock on SQLite)."""
    ordered = sorted(set(psn_nos))
    if conn.dialect.name == "postgresql" and ordered:
        conn.execute(
            select(persons.c.psn_no).where(persons.c.psn_no.in_(ordered)).order_by(persons.c.psn_no).with_for_update()
        )


def get_institution(conn: Connection, code: str) -> Row[Any] | None:
    return conn.execute(_INSTITUTION, {"code": code}).first()


def enrolment_on(conn: Connection, psn_no: str, insutype: str, date: dt.date) -> Row[Any] | None:
    """The enrolment covering ``date`` (begun, not ended), paused or not."""
    return conn.execute(_ENROLMENT, {"p": psn_no, "insutype": insutype, "d": date}).first()


def enrolments_of(conn: Connection, psn_no: str) -> Sequence[Row[Any]]:
    return conn.execute(select(enrolments).where(enrolments.c.psn_no == psn_no).order_by(enrolments.c.begn_date)).all()


def identities_on(conn: Connection, psn_no: str, date: dt.date) -> frozenset[str]:
    return frozenset(conn.execute(_IDENTITIES, {"p": psn_no, "d": date}).scalars())


def credential(conn: Connection, kind: str, number: str) -> Row[Any] | None:
    return conn.execute(_CREDENTIAL, {"kind": kind, "n": number}).first()


def pin_row(conn: Connection, psn_no: str) -> Row[Any] | None:
    return conn.execute(_PIN, {"p": psn_no}).first()


def get_accumulators(conn: Connection, psn_no: str, year: int, insutype: str) -> dict[str, int]:
    rows = conn.execute(_ACCUMULATORS, {"p": psn_no, "y": year, "insutype": insutype}).all()
    return {key: value for key, value in rows}


_DECREASE = (
    update(accumulators)
    .where(
        accumulators.c.psn_no == bindparam("b_psn_no"),
        accumulators.c.year == bindparam("b_year"),
        accumulators.c.insutype == bindparam("b_insutype"),
        accumulators.c.key == bindparam("b_key"),
    )
    .values(value=accumulators.c.value + bindparam("delta"))
)


def add_accumulators(conn: Connection, psn_no: str, year: int, insutype: str, deltas: Mapping[str, int]) -> None:
    """Add ``deltas`` to the stored rows, creating them: one upsert (the person is locked by the caller)."""
    if not deltas:
        return
    rows: list[dict[str, Any]] = [
        {"psn_no": psn_no, "year": year, "insutype": insutype, "key": key, "value": delta}
        for key, delta in sorted(deltas.items())
    ]
    # Increases may create rows: one upsert. Decreases (reversals) only touch existing rows, and
    # PostgreSQL checks CHECK(value >= 0) on the proposed insert row, so they take the UPDATE path.
    ups = [row for row in rows if row["value"] >= 0]
    downs = [row for row in rows if row["value"] < 0]
    if ups:
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        stmt = dialect_insert(accumulators)
        stmt = stmt.on_conflict_do_update(
            index_elements=["psn_no", "year", "insutype", "key"],
            set_={"value": accumulators.c.value + stmt.excluded.value},
        )
        conn.execute(stmt, ups)
    if downs:
        conn.execute(
            _DECREASE,
            [
                {"b_psn_no": psn_no, "b_year": year, "b_insutype": insutype, "b_key": r["key"], "delta": r["value"]}
                for r in downs
            ],
        )


# -- ledger ----------------------------------------------------------------------------
def account_ids(conn: Connection, codes: Iterable[str], *, existing_only: bool = False) -> dict[str, int]:
    """Ids of the accounts, creating missing ones unless ``existing_only`` (personal accounts are
    created at enrolment)."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    found = dict(conn.execute(_ACCOUNT_IDS, {"codes": wanted}).all())
    missing = [code for code in wanted if code not in found]
    if missing and not existing_only:
        # Two settlements may open the same institution or fund account at once: let one win.
        rows = [{"code": c, "kind": account_kind(c), "owner": c.split(":")[1], "balance_fen": 0} for c in missing]
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(dialect_insert(ledger_accounts).on_conflict_do_nothing(index_elements=["code"]), rows)
        found.update(conn.execute(_ACCOUNT_IDS, {"codes": missing}).all())
    return found


def post_entry(conn: Connection, entry: Entry, now: dt.datetime) -> int:
    """Append one balanced entry; personal balances move with it (CHECK ≥ 0 guards them)."""
    key = conn.execute(
        _INSERT_ENTRY, {"kind": entry.kind, "ref": entry.ref, "created_at": now, "memo": entry.memo[:200]}
    ).inserted_primary_key
    assert key is not None
    entry_id = int(key[0])
    if not entry.postings:
        return entry_id
    ids = account_ids(conn, (p.account for p in entry.postings))
    conn.execute(
        _INSERT_POSTINGS,
        [{"entry_id": entry_id, "account_id": ids[p.account], "amount_fen": p.amount_fen} for p in entry.postings],
    )
    # Personal accounts are liabilities: a debit lowers the stored credit balance.
    moves = [{"b_id": ids[p.account], "debit": p.amount_fen} for p in entry.postings if p.account.startswith("psn:")]
    if moves:
        conn.execute(_MOVE_PERSONAL, moves)
    return entry_id


def entry_of(conn: Connection, entry_id: int) -> Entry:
    """A stored entry as a value (to negate it)."""
    head = conn.execute(select(journal_entries).where(journal_entries.c.id == entry_id)).one()
    rows = conn.execute(
        select(ledger_accounts.c.code, postings.c.amount_fen)
        .select_from(postings.join(ledger_accounts, postings.c.account_id == ledger_accounts.c.id))
        .where(postings.c.entry_id == entry_id)
        .order_by(postings.c.id)
    ).all()
    return Entry(head.kind, head.ref, head.memo, tuple(Posting(code, amount) for code, amount in rows))


def entry_persons(conn: Connection, entry_id: int) -> list[str]:
    """Persons whose personal accounts an entry touched."""
    return sorted({p.account.split(":")[1] for p in entry_of(conn, entry_id).postings if p.account.startswith("psn:")})


def balances(conn: Connection, psn_no: str) -> tuple[int, int]:
    """(current-year, historical) personal account balances in fen."""
    current, historical = f"psn:{psn_no}:current", f"psn:{psn_no}:historical"
    rows = dict(conn.execute(_BALANCES, {"codes": [current, historical]}).all())
    return rows.get(current, 0), rows.get(historical, 0)


def account_balance_by_postings(conn: Connection, code: str) -> int:
    """Σ postings of an account (debit positive)."""
    value = conn.execute(
        select(func.coalesce(func.sum(postings.c.amount_fen), 0))
        .select_from(postings.join(ledger_accounts, postings.c.account_id == ledger_accounts.c.id))
        .where(ledger_accounts.c.code == code)
    ).scalar_one()
    return int(value)


# -- settlements and messages ----------------------------------------------------------
def get_message(conn: Connection, caller: str, msgid: str) -> Row[Any] | None:
    """The record of ``msgid`` as ``caller`` (the sending institution) sent it: never another's."""
    return conn.execute(_MESSAGE, {"c": caller, "m": msgid}).first()


def get_settlement(conn: Connection, setl_id: str) -> Row[Any] | None:
    return conn.execute(_SETTLEMENT, {"s": setl_id}).first()


def reversal_of(conn: Connection, setl_id: str) -> Row[Any] | None:
    return conn.execute(select(settlements).where(settlements.c.reverses_setl_id == setl_id)).first()


def settlements_of(conn: Connection, psn_no: str, year: int | None = None) -> Sequence[Row[Any]]:
    query = select(settlements).where(settlements.c.psn_no == psn_no)
    if year is not None:
        query = query.where(settlements.c.year == year)
    return conn.execute(query.order_by(settlements.c.setl_time, settlements.c.setl_id)).all()


def settlements_between(
    conn: Connection, fixmedins_code: str, start: dt.datetime, end: dt.datetime
) -> Sequence[Row[Any]]:
    return conn.execute(
        select(settlements)
        .where(
            and_(
                settlements.c.fixmedins_code == fixmedins_code,
                settlements.c.setl_time >= start,
                settlements.c.setl_time < end,
            )
        )
        .order_by(settlements.c.setl_time, settlements.c.setl_id)
    ).all()
