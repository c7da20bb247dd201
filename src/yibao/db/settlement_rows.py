"""The rows one settlement reads and writes, in as few round trips as the data allows.

A settlement (2207) reads in three batches and writes in one (see :mod:`.fastsql`):

1. the credential (which person);
2. the registry rows of the visit — person, enrolment, institution, filings,
   identities, family bindings with the holders' insuring regions (no locks);
3. under row locks on every person whose money may move (sorted ``psn_no``, so two
   settlements never wait on each other in opposite orders): the personal account
   balances, the year's accumulators and a journal entry id;
4. the journal entry and its postings, the personal balances, the accumulators, the
   settlement row and the idempotency record — one pipeline, then the commit.

Values come back as small immutable rows with the column names the service uses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection

from ..ledger import Entry
from .fastsql import Statement, as_date, as_datetime, batch, is_postgresql, write

__all__ = [
    "Binding",
    "CredentialRow",
    "Enrolment",
    "Filing",
    "Institution",
    "MessageRow",
    "Money",
    "Person",
    "Visit",
    "read_credential",
    "read_message",
    "read_money",
    "read_person_by_certno",
    "read_visit",
    "write_settlement",
]


class CredentialRow(NamedTuple):
    psn_no: str
    card_sn: str | None
    status: str
    expires_at: dt.datetime | None


class Person(NamedTuple):
    psn_no: str
    gend: str
    brdy: dt.date
    admdvs: str
    suspended_from: dt.date | None
    suspended_to: dt.date | None
    suspension_reason: str | None


class Enrolment(NamedTuple):
    psn_type: str
    admdvs: str
    pause_date: dt.date | None
    waiting_until: dt.date | None


class Institution(NamedTuple):
    fixmedins_code: str
    name: str
    kind: str
    hosp_lv: str
    admdvs: str
    designated: bool
    valid_from: dt.date
    valid_to: dt.date | None
    networked: bool


class Filing(NamedTuple):
    kind: str
    offsite_type: str | None
    mdtrtarea_admvs: str | None
    dise_codg: str | None


class Binding(NamedTuple):
    """An active 家庭共济 binding of the member to an account holder (the holder's region too)."""

    holder_psn_no: str
    relation: str
    holder_admdvs: str


class Visit(NamedTuple):
    """The registry rows a settlement's gates and request need."""

    psn_no: str
    fixmedins_code: str
    insutype: str
    person: Person | None
    enrolment: Enrolment | None
    institution: Institution | None
    filings: tuple[Filing, ...]
    identities: frozenset[str]
    bindings: tuple[Binding, ...]


class Money(NamedTuple):
    """Read under the persons' row locks: what the engine may draw on and the next entry id."""

    balances: Mapping[str, tuple[int, int]]  # psn_no -> (current-year, historical) fen
    account_ids: Mapping[str, int]  # personal account code -> ledger account id
    accumulators: Mapping[str, int]
    entry_id: int


_MESSAGE = "SELECT msgid, operation, payload_hash, response_json, setl_id FROM messages WHERE msgid = ?"
_CREDENTIAL = "SELECT psn_no, card_sn, status, expires_at FROM credentials WHERE kind = ? AND number = ?"
_PERSON_BY_CERTNO = "SELECT psn_no FROM persons WHERE certno = ?"
# Person, enrolment and institution in one row; a missing one comes back as NULLs.
_VISIT = (
    "SELECT p.psn_no, p.gend, p.brdy, p.admdvs, p.suspended_from, p.suspended_to, p.suspension_reason,"
    " e.psn_type, e.admdvs, e.pause_date, e.waiting_until,"
    " i.fixmedins_code, i.name, i.kind, i.hosp_lv, i.admdvs, i.designated, i.valid_from, i.valid_to, i.networked"
    " FROM (SELECT 1 AS one) k"
    " LEFT JOIN persons p ON p.psn_no = ?"
    " LEFT JOIN enrolments e ON e.id = (SELECT id FROM enrolments WHERE psn_no = ? AND insutype = ?"
    " AND begn_date <= ? AND (end_date IS NULL OR end_date >= ?) ORDER BY begn_date DESC, id DESC LIMIT 1)"
    " LEFT JOIN institutions i ON i.fixmedins_code = ?"
)
# The person's many-valued rows, tagged: F filing, I identity, B binding (with the holder's region).
_SIDE_ROWS = (
    "SELECT 'F', kind, offsite_type, mdtrtarea_admvs, dise_codg, id FROM filings"
    " WHERE psn_no = ? AND status = 'active' AND begn_date <= ? AND (end_date IS NULL OR end_date >= ?)"
    " UNION ALL SELECT 'I', idet_type, NULL, NULL, NULL, id FROM identities"
    " WHERE psn_no = ? AND begn_date <= ? AND (end_date IS NULL OR end_date >= ?)"
    " UNION ALL SELECT 'B', b.holder_psn_no, b.relation, h.admdvs, NULL, b.id"
    " FROM family_bindings b JOIN persons h ON h.psn_no = b.holder_psn_no"
    " WHERE b.member_psn_no = ? AND b.unbound_at IS NULL"
    " ORDER BY 1, 6"
)
# Row locks on the persons (PostgreSQL). Balances are read by the NEXT statement: under READ
# COMMITTED a locking statement re-reads only the locked rows after a wait, so a balance read
# by the same statement could be stale.
_LOCK = "SELECT psn_no FROM persons WHERE psn_no IN ({marks}) ORDER BY psn_no FOR UPDATE"
_BALANCES = (
    "SELECT code, id, balance_fen FROM ledger_accounts"
    " WHERE owner IN ({marks}) AND kind IN ('psn_current', 'psn_historical')"
)
_ACCUMULATORS = "SELECT key, value FROM accumulators WHERE psn_no = ? AND year = ? AND insutype = ?"
_NEXT_ENTRY_ID = {
    "postgresql": "SELECT nextval(pg_get_serial_sequence('journal_entries', 'id'))",
    # SQLite: the caller holds the database's single write lock (BEGIN IMMEDIATE).
    "sqlite": "SELECT COALESCE(MAX(id), 0) + 1 FROM journal_entries",
}
# Rows as (column1, column2) of a VALUES list, shared values once ("WHERE true" lets SQLite
# parse ON CONFLICT after a SELECT).
_INSERT_POSTINGS = (
    "INSERT INTO postings (entry_id, account_id, amount_fen) SELECT ?, column1, column2 FROM (VALUES {values}) AS v"
)
_ADD_ACCUMULATORS = (
    "INSERT INTO accumulators (psn_no, year, insutype, key, value)"
    " SELECT ?, ?, ?, column1, column2 FROM (VALUES {values}) AS v WHERE true"
    " ON CONFLICT (psn_no, year, insutype, key) DO UPDATE SET value = accumulators.value + excluded.value"
)
_MOVE_PERSONAL = "UPDATE ledger_accounts SET balance_fen = balance_fen - ? WHERE id = ?"
_INSERT_ENTRY = "INSERT INTO journal_entries (id, kind, ref, created_at, memo) VALUES (?, ?, ?, ?, ?)"
_INSERT_MESSAGE = (
    "INSERT INTO messages (msgid, operation, payload_hash, response_json, setl_id, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_SETTLEMENT_COLUMNS = (
    "setl_id", "msgid", "kind", "reverses_setl_id", "psn_no", "fixmedins_code", "mdtrt_id", "insutype", "med_type",
    "year", "setl_time", "medfee_sumamt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay", "policy_version",
    "entry_id", "request_json", "result_json", "deltas_json",
)  # fmt: skip
_INSERT_SETTLEMENT = (
    f"INSERT INTO settlements ({', '.join(_SETTLEMENT_COLUMNS)}) VALUES ({', '.join('?' * len(_SETTLEMENT_COLUMNS))})"
)


def _values(row_sql: str, count: int) -> str:
    return ", ".join([row_sql] * count)


class MessageRow(NamedTuple):
    """What a ``msgid`` did: its operation, payload digest and reply (or settlement)."""

    msgid: str
    operation: str
    payload_hash: str
    response_json: str
    setl_id: str | None


def read_message(conn: Connection, msgid: str) -> MessageRow | None:
    rows = batch(conn, [(_MESSAGE, (msgid,))])[0]
    return MessageRow(*rows[0]) if rows else None


def read_credential(conn: Connection, kind: str, number: str) -> CredentialRow | None:
    rows = batch(conn, [(_CREDENTIAL, (kind, number))])[0]
    if not rows:
        return None
    psn_no, card_sn, status, expires_at = rows[0]
    return CredentialRow(psn_no, card_sn, status, as_datetime(expires_at))


def read_person_by_certno(conn: Connection, certno: str) -> str | None:
    rows = batch(conn, [(_PERSON_BY_CERTNO, (certno.upper(),))])[0]
    return str(rows[0][0]) if rows else None


def read_visit(conn: Connection, psn_no: str, fixmedins_code: str, insutype: str, date: dt.date) -> Visit:
    """Registry rows for a visit on ``date`` (two statements, one round trip on PostgreSQL)."""
    main, side = batch(
        conn,
        [
            (_VISIT, (psn_no, psn_no, insutype, date, date, fixmedins_code)),
            (_SIDE_ROWS, (psn_no, date, date, psn_no, date, date, psn_no)),
        ],
    )
    r = main[0]
    person = enrolment = institution = None
    if r[0] is not None:
        person = Person(r[0], r[1], _date(r[2]), r[3], as_date(r[4]), as_date(r[5]), r[6])
    if r[7] is not None:
        enrolment = Enrolment(r[7], r[8], as_date(r[9]), as_date(r[10]))
    if r[11] is not None:
        institution = Institution(
            r[11], r[12], r[13], r[14], r[15], bool(r[16]), _date(r[17]), as_date(r[18]), bool(r[19])
        )
    return Visit(
        psn_no,
        fixmedins_code,
        insutype,
        person,
        enrolment,
        institution,
        tuple(Filing(a, b, c, d) for tag, a, b, c, d, _ in side if tag == "F"),
        frozenset(a for tag, a, *_ in side if tag == "I"),
        tuple(Binding(a, b, c) for tag, a, b, c, _d, _ in side if tag == "B"),
    )


def _date(value: Any) -> dt.date:
    date = as_date(value)
    assert date is not None, "a NOT NULL date column"
    return date


def read_money(conn: Connection, psn_no: str, payers: Sequence[str], year: int, insutype: str, *, lock: bool) -> Money:
    """Lock the persons (sorted; PostgreSQL row locks) and read balances, accumulators and an entry id.

    ``payers`` are the persons whose personal accounts may be drawn on (the person
    first when the account is used, then 家庭共济 holders); ``psn_no`` is always locked,
    as its accumulators move. Without ``lock`` (pre-settlement) nothing is locked and
    no entry id is taken.
    """
    statements: list[Statement] = []
    pg = is_postgresql(conn)
    locked = sorted({psn_no, *payers})
    if lock and pg:
        statements.append((_LOCK.format(marks=", ".join("?" * len(locked))), locked))
    if payers:
        statements.append((_BALANCES.format(marks=", ".join("?" * len(payers))), list(payers)))
    statements.append((_ACCUMULATORS, (psn_no, year, insutype)))
    if lock:
        statements.append((_NEXT_ENTRY_ID[conn.dialect.name], ()))
    results = batch(conn, statements)
    if lock and pg:
        results.pop(0)
    accounts = {code: (int(account_id), int(balance)) for code, account_id, balance in results.pop(0)} if payers else {}
    accumulators = {key: int(value) for key, value in results.pop(0)}
    entry_id = int(results.pop(0)[0][0]) if lock else 0
    balances = {
        p: (accounts.get(f"psn:{p}:current", (0, 0))[1], accounts.get(f"psn:{p}:historical", (0, 0))[1]) for p in payers
    }
    return Money(balances, {code: ids for code, (ids, _b) in accounts.items()}, accumulators, entry_id)


def write_settlement(
    conn: Connection,
    *,
    entry_id: int,
    entry: Entry,
    account_ids: Mapping[str, int],
    now: dt.datetime,
    accumulator_deltas: Mapping[str, int],
    settlement: Mapping[str, Any],
    message: tuple[str, str, str, str, str | None],
) -> None:
    """Append the settlement's entry, move balances and accumulators, store the row and the msgid record.

    ``account_ids`` must hold every account the entry posts to; ``message`` is
    (msgid, operation, payload_hash, response_json, setl_id). Accumulator deltas are
    increases only (a settlement never lowers a year-to-date total).
    """
    assert all(delta >= 0 for delta in accumulator_deltas.values()), accumulator_deltas
    assert sum(p.amount_fen for p in entry.postings) == 0, "an entry balances"
    statements: list[Statement] = [(_INSERT_ENTRY, (entry_id, entry.kind, entry.ref, now, entry.memo[:200]))]
    if entry.postings:
        params: list[Any] = [entry_id]
        for posting in entry.postings:
            params += (account_ids[posting.account], posting.amount_fen)
        statements.append((_INSERT_POSTINGS.format(values=_values("(?, ?)", len(entry.postings))), params))
    # Personal accounts are liabilities: a debit lowers the stored credit balance (CHECK >= 0).
    # One change per account row: the writes may run as parts of one statement.
    moves: dict[int, int] = {}
    for posting in entry.postings:
        if posting.account.startswith("psn:"):
            account_id = account_ids[posting.account]
            moves[account_id] = moves.get(account_id, 0) + posting.amount_fen
    for account_id, debit_fen in sorted(moves.items()):
        statements.append((_MOVE_PERSONAL, (debit_fen, account_id)))
    if accumulator_deltas:
        params = [settlement["psn_no"], settlement["year"], settlement["insutype"]]
        for key, delta in sorted(accumulator_deltas.items()):
            params += (key, delta)
        statements.append((_ADD_ACCUMULATORS.format(values=_values("(?, ?)", len(accumulator_deltas))), params))
    statements.append((_INSERT_SETTLEMENT, [settlement[c] for c in _SETTLEMENT_COLUMNS]))
    statements.append((_INSERT_MESSAGE, (*message, now)))
    write(conn, statements)
