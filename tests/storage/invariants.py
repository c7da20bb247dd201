"""Invariants of the money core, checked on a whole database, and the small vocabulary the proofs share.

:func:`violations` reads every table the settlement service writes and returns one line per broken
invariant (empty = all hold); :func:`assert_invariants` raises with those lines. The invariants:

* every journal entry sums to zero;
* no personal balance is below zero;
* each personal account's stored balance equals −Σ its postings;
* stored accumulators equal Σ ``deltas_json`` of that person's settlement rows (settle and
  reversal) per (year, insutype, key);
* every settlement's ``fund_pay_sumamt + acct_pay`` equals the institution's credit in its entry,
  the funds' postings equal ``fund_pay_sumamt`` and the personal postings ``acct_pay``; every
  settlement or reversal entry belongs to exactly one settlement (no half-done write);
* each ``msgid`` appears at most once per sending institution in ``messages`` and in ``settlements``; every settlement's
  reply is stored under its msgid; each settlement is reversed at most once, by its exact negation.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

import yibao
from yibao import Engine as SettlementEngine
from yibao import PolicyStore, load_demo_catalog
from yibao.db import schema as S

__all__ = [
    "INSTITUTION",
    "assert_invariants",
    "bill",
    "evoucher",
    "settlement_engine",
    "violations",
]

INSTITUTION = "H21060000001"
POLICIES = Path(yibao.__file__).parent / "data" / "policies"


@cache
def settlement_engine() -> SettlementEngine:
    """The engine over the shipped policies (Dandong: outpatient pooling, 300 yuan a year, 65 %)."""
    return SettlementEngine(PolicyStore.load_dir(POLICIES), load_demo_catalog())


def bill(yuan: int, *, acct: bool = True, begntime: str = "2025-03-01 09:00:00") -> dict[str, Any]:
    """An employee outpatient bill (Dandong 310/11) of one 甲类 line of ``yuan`` whole yuan."""
    amount = f"{yuan}.00"
    return {
        "insutype": "310",
        "med_type": "11",
        "begntime": begntime,
        "acct_used_flag": "1" if acct else "0",
        "feedetail": [
            {"feedetl_sn": "1", "hilist_name": "诊疗", "chrgitm_lv": "01", "cnt": "1", "pric": amount,
             "det_item_fee_sumamt": amount},
        ],
    }  # fmt: skip


def evoucher(conn: Connection, psn_no: str, now: dt.datetime) -> str:
    """Give ``psn_no`` a non-expiring e-voucher (no PIN on this path) and return its number."""
    number = f"EV{psn_no}"
    conn.execute(
        insert(S.credentials).values(
            psn_no=psn_no, kind="evoucher", number=number, card_sn=None, status="active", expires_at=None,
            created_at=now,
        )
    )  # fmt: skip
    return number


def _rows(conn: Connection, table: Any) -> list[Any]:
    return list(conn.execute(select(table)).all())


def violations(db: Engine) -> list[str]:
    """Every broken invariant, one line each (read in one transaction)."""
    out: list[str] = []
    with db.connect() as conn, conn.begin():
        accounts = {row.id: row for row in _rows(conn, S.ledger_accounts)}
        entries = {row.id: row for row in _rows(conn, S.journal_entries)}
        postings_by_entry: dict[int, list[tuple[str, int]]] = defaultdict(list)
        sum_by_account: Counter[int] = Counter()
        for p in _rows(conn, S.postings):
            postings_by_entry[p.entry_id].append((accounts[p.account_id].code, int(p.amount_fen)))
            sum_by_account[p.account_id] += int(p.amount_fen)
        settlements = _rows(conn, S.settlements)
        messages = _rows(conn, S.messages)
        stored_acc = {(r.psn_no, r.year, r.insutype, r.key): int(r.value) for r in _rows(conn, S.accumulators)}

    # 1. Every journal entry sums to zero.
    for entry_id, lines in sorted(postings_by_entry.items()):
        total = sum(amount for _, amount in lines)
        if total != 0:
            out.append(f"entry {entry_id} ({entries[entry_id].kind} {entries[entry_id].ref}) sums to {total}")

    # 2 and 3. Personal balances: never negative, and equal to −Σ postings.
    for account_id, acc in sorted(accounts.items()):
        if acc.kind not in S.PERSONAL_KINDS:
            continue
        if acc.balance_fen < 0:
            out.append(f"personal account {acc.code} is negative: {acc.balance_fen}")
        if acc.balance_fen != -sum_by_account[account_id]:
            by_postings = -sum_by_account[account_id]
            out.append(f"personal account {acc.code} stores {acc.balance_fen}, postings say {by_postings}")

    # 4. Accumulators are exactly the sum of the settlements' deltas.
    summed: Counter[tuple[str, int, str, str]] = Counter()
    for s in settlements:
        for key, delta in json.loads(s.deltas_json).items():
            summed[(s.psn_no, s.year, s.insutype, key)] += int(delta)
    for key in sorted(set(summed) | set(stored_acc)):
        if stored_acc.get(key, 0) != summed.get(key, 0):
            out.append(f"accumulator {key} stores {stored_acc.get(key)}, settlements' deltas sum to {summed.get(key)}")

    # 5. Each settlement's money is its entry's money.
    entry_users: Counter[int] = Counter()
    for s in settlements:
        entry_users[s.entry_id] += 1
        entry = entries.get(s.entry_id)
        if entry is None:
            out.append(f"settlement {s.setl_id} points at missing entry {s.entry_id}")
            continue
        if entry.ref != s.setl_id:
            out.append(f"settlement {s.setl_id}: its entry {s.entry_id} has ref {entry.ref}")
        lines = postings_by_entry.get(s.entry_id, [])
        inst_credit = -sum(a for code, a in lines if code == f"inst:{s.fixmedins_code}:payable")
        funds = sum(a for code, a in lines if code.startswith("fund:"))
        personal = sum(a for code, a in lines if code.startswith("psn:"))
        other = [code for code, _ in lines if not code.startswith(("fund:", "psn:", f"inst:{s.fixmedins_code}:"))]
        if inst_credit != s.fund_pay_sumamt + s.acct_pay:
            out.append(f"settlement {s.setl_id}: fund+acct = {s.fund_pay_sumamt + s.acct_pay}, "
                       f"institution credited {inst_credit}")  # fmt: skip
        if funds != s.fund_pay_sumamt or personal != s.acct_pay or other:
            out.append(f"settlement {s.setl_id}: funds {funds} vs {s.fund_pay_sumamt}, accounts {personal} vs "
                       f"{s.acct_pay}, unexpected accounts {other}")  # fmt: skip
    for entry_id, users in entry_users.items():
        if users > 1:
            out.append(f"entry {entry_id} is booked by {users} settlements")
    for entry_id, entry in sorted(entries.items()):
        if entry.kind in ("settlement", "reversal") and entry_id not in entry_users:
            out.append(f"entry {entry_id} ({entry.kind} {entry.ref}) belongs to no settlement: a half-done write")

    # 6. msgids once per sending institution; replies stored with their settlements; reversals once and exact.
    for (caller, msgid), n in Counter((m.caller, m.msgid) for m in messages).items():
        if n > 1:
            out.append(f"msgid {msgid} of {caller} stored {n} times in messages")
    for (caller, msgid), n in Counter((s.fixmedins_code, s.msgid) for s in settlements if s.msgid is not None).items():
        if n > 1:
            out.append(f"msgid {msgid} of {caller} produced {n} settlements")
    by_msgid = {(m.caller, m.msgid): m for m in messages}
    by_id = {s.setl_id: s for s in settlements}
    for s in settlements:
        message = by_msgid.get((s.fixmedins_code, s.msgid))
        if message is None or message.setl_id != s.setl_id:
            out.append(f"settlement {s.setl_id} (msgid {s.msgid}) has no reply stored under its msgid")
    for m in messages:
        made = by_id.get(m.setl_id) if m.setl_id is not None else None
        if m.setl_id is not None and (made is None or (made.fixmedins_code, made.msgid) != (m.caller, m.msgid)):
            out.append(f"message {m.msgid} of {m.caller} names settlement {m.setl_id}, which it did not produce")
    for target, n in Counter(s.reverses_setl_id for s in settlements if s.reverses_setl_id).items():
        if n > 1:
            out.append(f"settlement {target} reversed {n} times")
    for s in settlements:
        if (s.kind == "reversal") != (s.reverses_setl_id is not None):
            out.append(f"settlement {s.setl_id}: kind {s.kind} with reverses_setl_id {s.reverses_setl_id}")
        if s.reverses_setl_id is None:
            continue
        original = by_id.get(s.reverses_setl_id)
        if original is None:
            out.append(f"reversal {s.setl_id} of missing settlement {s.reverses_setl_id}")
            continue
        fields = ("medfee_sumamt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay")
        if original.psn_no != s.psn_no or any(getattr(s, f) != -getattr(original, f) for f in fields):
            out.append(f"reversal {s.setl_id} is not the negation of {original.setl_id}")
        negated = {k: -v for k, v in json.loads(original.deltas_json).items()}
        if json.loads(s.deltas_json) != negated:
            out.append(f"reversal {s.setl_id}: deltas are not the negated deltas of {original.setl_id}")
        if sorted(postings_by_entry.get(s.entry_id, [])) != sorted(
            (c, -a) for c, a in postings_by_entry.get(original.entry_id, [])
        ):
            out.append(f"reversal {s.setl_id}: entry is not the negated entry of {original.setl_id}")
    return out


def assert_invariants(db: Engine) -> None:
    broken = violations(db)
    assert not broken, "invariants broken:\n" + "\n".join(broken)
