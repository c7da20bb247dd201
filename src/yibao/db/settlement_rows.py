"""The rows one settlement reads and writes, in as few round trips as the data allows.

A settlement (2207) is two round trips on PostgreSQL (see :mod:`.fastsql`):

1. the read, five statements in one pipeline, each naming the person through the
   credential's subquery: the credential's row with the ``msgid`` record (a retry
   replays it); person, enrolment and institution (one row); filings, identities and
   family bindings (tagged rows); row locks on the person and — when the account is
   used with 家庭共济 — every bound account holder, taken by ONE statement in
   ``psn_no`` order (two settlements never wait on each other in opposite orders);
   and, read after the locks, personal balances, the year's accumulators and an id
   for the journal entry (tagged rows);
2. the journal entry with its postings, personal balances, accumulators, the
   settlement row and the msgid record, merged into few statements — followed by
   the commit in the same round trip when nothing else is left to do (with the
   gateway's visit still to close, the commit is a third round trip).

Values come back as small immutable rows with the column names the service uses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy import Connection

from ..ledger import Entry
from .fastsql import Statement, as_date, as_datetime, batch, is_postgresql, write

__all__ = [
    "PSN",
    "Binding",
    "CredentialRow",
    "Enrolment",
    "Filing",
    "Institution",
    "MessageRow",
    "Money",
    "Person",
    "Start",
    "Visit",
    "Who",
    "credential_names",
    "read_credential",
    "read_for_settlement",
    "read_message",
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
    name: str = ""  # 人员姓名
    certno: str = ""  # 证件号码 (居民身份证)
    naty: str = ""  # 民族 (GB/T 3304), "" when not recorded


class Enrolment(NamedTuple):
    psn_type: str
    admdvs: str
    pause_date: dt.date | None
    waiting_until: dt.date | None


class Institution(NamedTuple):
    """A designated hospital or pharmacy (定点医药机构) as stored."""

    fixmedins_code: str
    name: str
    kind: str
    hosp_lv: str
    admdvs: str
    designated: bool
    valid_from: dt.date
    valid_to: dt.date | None
    networked: bool
    pin_by_terminal: bool = False  # the PIN pad verifies the settlement PIN (密码由终端校验)


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

    balances: Mapping[str, tuple[int, int]]  # psn_no -> (current-year, historical) fen, of locked payers
    account_ids: Mapping[str, int]  # personal account code -> ledger account id
    accumulators: Mapping[str, int]
    entry_id: int


_MESSAGE = (
    "SELECT msgid, operation, payload_hash, response_json, setl_id FROM messages WHERE caller = ? AND msgid = ?"
)
_CREDENTIAL = "SELECT psn_no, card_sn, status, expires_at FROM credentials WHERE kind = ? AND number = ?"
# An ID number (mdtrt_cert_type 02) names the person directly: the same shape, always active.
_PERSON_BY_CERTNO = "SELECT psn_no, NULL, 'active', NULL FROM persons WHERE certno = ?"
# Person, enrolment and institution in one row; a missing one comes back as NULLs.
_VISIT = (
    "SELECT p.psn_no, p.gend, p.brdy, p.admdvs, p.suspended_from, p.suspended_to, p.suspension_reason,"
    " e.psn_type, e.admdvs, e.pause_date, e.waiting_until,"
    " i.fixmedins_code, i.name, i.kind, i.hosp_lv, i.admdvs, i.designated, i.valid_from, i.valid_to, i.networked,"
    " i.pin_by_terminal, p.name, p.certno, p.naty"
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
# The persons whose money a settlement may move: the person, and with 家庭共济 the holders
# of the accounts bound to them (as the binding stands when this statement runs).
_PAYERS = "{col} = ?"
# (One IN over a UNION, not "= ? OR IN (…)": an OR across a subquery cannot use the index,
# and the lock and the balances then scanned every person and every account.)
_PAYERS_WITH_FAMILY = (
    "{col} IN (SELECT ? UNION ALL"
    " SELECT holder_psn_no FROM family_bindings WHERE member_psn_no = ? AND unbound_at IS NULL)"
)
# PostgreSQL row locks, sorted. Balances and accumulators are read by LATER statements: under
# READ COMMITTED a locking statement re-reads only the locked rows after a wait, so a balance
# joined into it could be stale.
_LOCK = "SELECT psn_no FROM persons WHERE {payers} ORDER BY psn_no FOR UPDATE"
# What the engine may draw on, read after the locks, as tagged rows of one statement:
# B personal balances (owner, code, id, fen), A accumulators (key, value), E the entry id.
_BALANCE_ROWS = (
    "SELECT 'B', owner, code, id, balance_fen FROM ledger_accounts"
    " WHERE {payers} AND kind IN ('psn_current', 'psn_historical')"
)
_ACCUMULATOR_ROWS = "SELECT 'A', NULL, key, 0, value FROM accumulators WHERE psn_no = ? AND year = ? AND insutype = ?"
_ENTRY_ID_ROW = {
    "postgresql": "SELECT 'E', NULL, NULL, nextval(pg_get_serial_sequence('journal_entries', 'id')), 0",
    # SQLite: the caller holds the database's single write lock (BEGIN IMMEDIATE).
    "sqlite": "SELECT 'E', NULL, NULL, COALESCE(MAX(id), 0) + 1, 0 FROM journal_entries",
}
# The credential's row (or, for an ID number, the person's) and the msgid record, as one row.
_START = (
    "SELECT {credential}, m.msgid, m.operation, m.payload_hash, m.response_json, m.setl_id"
    " FROM (SELECT 1 AS one) k LEFT JOIN {source} LEFT JOIN messages m ON m.caller = ? AND m.msgid = ?"
)
_START_BY_CREDENTIAL = _START.format(
    credential="c.psn_no, c.card_sn, c.status, c.expires_at", source="credentials c ON c.kind = ? AND c.number = ?"
)
_START_BY_CERTNO = _START.format(
    credential="c.psn_no, NULL, CASE WHEN c.psn_no IS NULL THEN NULL ELSE 'active' END, NULL",
    source="persons c ON c.certno = ?",
)
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
    "INSERT INTO messages (caller, msgid, operation, payload_hash, response_json, setl_id, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
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


class Start(NamedTuple):
    credential: CredentialRow | None
    message: MessageRow | None


def read_message(conn: Connection, caller: str, msgid: str) -> MessageRow | None:
    """What ``msgid`` of ``caller`` (the sending institution) did, if anything."""
    rows = batch(conn, [(_MESSAGE, (caller, msgid))])[0]
    return MessageRow(*rows[0]) if rows else None


def _credential_statement(kind: str, number: str) -> Statement:
    return (_PERSON_BY_CERTNO, (number.upper(),)) if kind == "idcard" else (_CREDENTIAL, (kind, number))


def read_credential(conn: Connection, kind: str, number: str) -> CredentialRow | None:
    """The credential row (``kind`` card/evoucher, or idcard: the person by ID number)."""
    found = batch(conn, [_credential_statement(kind, number)])[0]
    if not found:
        return None
    psn_no, card_sn, status, expires_at = found[0]
    return CredentialRow(psn_no, card_sn, status, as_datetime(expires_at))


def _visit_statements(psn_no: Any, fixmedins_code: str, insutype: str, date: dt.date) -> list[Statement]:
    # ``psn_no`` is a person number or the :data:`PSN` mark (named through the credential).
    return [
        (_VISIT, (psn_no, psn_no, insutype, date, date, fixmedins_code)),
        (_SIDE_ROWS, (psn_no, date, date, psn_no, date, date, psn_no)),
    ]


def _visit(psn_no: str, fixmedins_code: str, insutype: str, main: list[Any], side: list[Any]) -> Visit:
    r = main[0]
    person = enrolment = institution = None
    if r[0] is not None:
        person = Person(r[0], r[1], _date(r[2]), r[3], as_date(r[4]), as_date(r[5]), r[6], r[21], r[22], r[23] or "")
    if r[7] is not None:
        enrolment = Enrolment(r[7], r[8], as_date(r[9]), as_date(r[10]))
    if r[11] is not None:
        institution = Institution(
            r[11], r[12], r[13], r[14], r[15], bool(r[16]), _date(r[17]), as_date(r[18]), bool(r[19]), bool(r[20])
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


def read_visit(conn: Connection, psn_no: str, fixmedins_code: str, insutype: str, date: dt.date) -> Visit:
    """Registry rows for a visit on ``date`` (two statements, one round trip on PostgreSQL)."""
    main, side = batch(conn, _visit_statements(psn_no, fixmedins_code, insutype, date))
    return _visit(psn_no, fixmedins_code, insutype, main, side)


class Who(NamedTuple):
    """How a statement names the person: the credential's scalar subquery and its parameters."""

    sql: str
    params: tuple[str, ...]


#: Marks the person's place among a statement's parameters (see :func:`_naming`).
PSN: Any = object()


def credential_names(kind: str, number: str) -> Who:
    """The person a credential of ``kind`` (card, evoucher, idcard) names, as a scalar subquery."""
    if kind == "idcard":
        return Who("(SELECT psn_no FROM persons WHERE certno = ?)", (number.upper(),))
    return Who("(SELECT psn_no FROM credentials WHERE kind = ? AND number = ?)", (kind, number))


_NAMED: dict[tuple[str, tuple[int, ...], str], str] = {}


def _naming(statement: Statement, who: Who) -> Statement:
    """``statement`` with every :data:`PSN` parameter replaced by ``who``."""
    sql, params = statement
    marks = tuple(i for i, value in enumerate(params) if value is PSN)
    key = (sql, marks, who.sql)
    named = _NAMED.get(key)
    if named is None:
        parts = sql.split("?")
        assert len(parts) == len(params) + 1, "one parameter per placeholder"
        named = parts[0] + "".join((who.sql if i in marks else "?") + tail for i, tail in enumerate(parts[1:]))
        if len(_NAMED) < 1024:  # a bounded set of statement shapes
            _NAMED[key] = named
    values: list[Any] = []
    for value in params:
        values.extend(who.params if value is PSN else (value,))
    return named, values


def read_for_settlement(
    conn: Connection,
    credential: tuple[str, str],
    fixmedins_code: str,
    insutype: str,
    date: dt.date,
    *,
    accounts: bool,
    family: bool,
    lock: bool,
    msgid: str | None = None,
) -> tuple[Start, Visit, Money]:
    """The credential's row, the visit, and under row locks (``lock``) what the engine may draw
    on — one round trip.

    ``credential`` = (kind, number) names the person; every statement finds them through
    it (:func:`credential_names`). With ``msgid`` that message's record (the institution's
    own: messages are scoped by ``fixmedins_code``) comes along.
    ``accounts``: the personal account is used, so balances are read — with ``family``
    also those of the bound account holders, who are then locked too. The person is
    always locked, as their accumulators move. Without ``lock`` (pre-settlement)
    nothing is locked and no entry id is taken.
    """
    kind, number = credential
    who = credential_names(kind, number)
    payers = _PAYERS_WITH_FAMILY if accounts and family else _PAYERS
    payer_params: tuple[Any, ...] = (PSN, PSN) if accounts and family else (PSN,)
    if kind == "idcard":
        head: list[Statement] = [(_START_BY_CERTNO, (number.upper(), fixmedins_code, msgid))]
    else:
        head = [(_START_BY_CREDENTIAL, (kind, number, fixmedins_code, msgid))]
    statements = _visit_statements(PSN, fixmedins_code, insutype, date)
    pg = is_postgresql(conn)
    if lock and pg:
        statements.append((_LOCK.format(payers=payers.format(col="psn_no")), payer_params))
    money_sql = [_ACCUMULATOR_ROWS]
    money_params: list[Any] = [PSN, date.year, insutype]
    if accounts:
        money_sql.insert(0, _BALANCE_ROWS.format(payers=payers.format(col="owner")))
        money_params[:0] = payer_params
    if lock:
        money_sql.append(_ENTRY_ID_ROW[conn.dialect.name])
    statements.append((" UNION ALL ".join(money_sql), money_params))
    results = batch(conn, head + [_naming(statement, who) for statement in statements])
    cred = message = None
    c_psn, card_sn, status, expires_at, m_msgid, *m_rest = results.pop(0)[0]
    if c_psn is not None:
        cred = CredentialRow(c_psn, card_sn, status, as_datetime(expires_at))
    if m_msgid is not None:
        message = MessageRow(m_msgid, *m_rest)
    main, side = results.pop(0), results.pop(0)
    visit = _visit(cred.psn_no if cred is not None else "", fixmedins_code, insutype, main, side)
    if lock and pg:
        results.pop(0)
    balances: dict[str, tuple[int, int]] = {}
    account_ids: dict[str, int] = {}
    accumulators: dict[str, int] = {}
    entry_id = 0
    for tag, owner, code, number_id, value in results.pop(0):
        if tag == "B":
            current, historical = balances.get(owner, (0, 0))
            balance = int(value)
            balances[owner] = (balance, historical) if code.endswith(":current") else (current, balance)
            account_ids[code] = int(number_id)
        elif tag == "A":
            accumulators[code] = int(value)
        else:
            entry_id = int(number_id)
    assert entry_id > 0 or not lock, "a locked read takes an entry id"
    return Start(cred, message), visit, Money(balances, account_ids, accumulators, entry_id)


def write_settlement(
    conn: Connection,
    *,
    entry_id: int,
    entry: Entry,
    account_ids: Mapping[str, int],
    now: dt.datetime,
    accumulator_deltas: Mapping[str, int],
    settlement: Mapping[str, Any],
    message: tuple[str, str, str, str, str, str | None],
    commit: bool = False,
) -> None:
    """Append the settlement's entry, move balances and accumulators, store the row and the msgid record.

    ``account_ids`` must hold every account the entry posts to; ``message`` is
    (caller, msgid, operation, payload_hash, response_json, setl_id). Accumulator deltas are
    increases only (a settlement never lowers a year-to-date total). ``commit``: these
    are the unit of work's last writes; its commit goes with them (one round trip less).
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
    write(conn, statements, commit=commit)
