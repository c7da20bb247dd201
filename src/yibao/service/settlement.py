"""Real-time settlement: entitlement (2001), pre-settle, settle, reverse and 冲正.

Each write runs in one unit of work: lock the persons whose money moves (sorted),
read their accumulators and balances, run the pure engine, then store the
settlement, its balanced journal entry, the accumulator deltas and the reply
under the ``msgid`` — all or nothing. A retry of a ``msgid`` returns the stored
reply; the same ``msgid`` with another payload is an error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, insert

from .. import _json, ledger
from ..db import repository as repo
from ..db import settlement_rows as rows
from ..db import visit_rows
from ..db.schema import messages, settlements
from ..engine import Engine as SettlementEngine
from ..engine import SettlementResult, parse_request, scheme_counters
from ..errors import Reason, RequestError, SettlementRefused, YibaoError
from ..money import format_fen
from ..policy import PolicyStore
from .credentials import CERT_TYPES, Credential, check_pin, judge_credential, resolve_credential
from .uow import transact

__all__ = [
    "IdempotencyConflict", "NotFound", "SettleCommand", "SettlementService", "StoredReply", "VisitMismatch",
    "is_inpatient",
]  # fmt: skip

#: The member's relation to the account holder → the holder's relation to the member.
_INVERSE = {
    "spouse": "spouse",
    "child": "parent",
    "parent": "child",
    "sibling": "sibling",
    "grandchild": "grandparent",
    "grandparent": "grandchild",
}


#: Money columns of a settlement row, negated in its reversal.
_AMOUNT_COLUMNS = ("medfee_sumamt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay")


class IdempotencyConflict(YibaoError):
    """The ``msgid`` was used before with a different payload."""

    code = "MSGID_CONFLICT"


class NotFound(YibaoError):
    code = "NOT_FOUND"


class VisitMismatch(YibaoError):
    """A reversal naming a visit that is not its settlement's own (it would reopen another visit)."""

    code = "VISIT_MISMATCH"


class Forbidden(YibaoError):
    code = "FORBIDDEN"


@dataclass(frozen=True)
class SettleCommand:
    """A settlement as the gateway or a test asks for it (national field names in ``payload``).

    ``payload`` holds ``insutype``, ``med_type``, ``begntime``, ``feedetail``,
    ``acct_used_flag``, optional ``dise_codg``, ``mdtrt_id``, ``psn_idet_types`` is
    NOT accepted from outside — identities come from the registry.
    """

    msgid: str
    fixmedins_code: str
    credential: Credential
    payload: Mapping[str, Any]
    use_family: bool = True

    def digest(self, operation: str) -> str:
        body = {
            "op": operation,
            "fixmedins_code": self.fixmedins_code,
            "cred": [self.credential.cert_type, self.credential.number, self.credential.card_sn],
            "payload": self.payload,
            "family": self.use_family,
        }
        return hashlib.sha256(_json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class StoredReply:
    """A reply as stored under its msgid; ``replayed`` is True for a retry."""

    msgid: str
    operation: str
    body: dict[str, Any]
    setl_id: str | None
    replayed: bool = False


@dataclass
class _Prepared:
    psn_no: str
    admdvs: str
    request: dict[str, Any]
    money: rows.Money
    identity: dict[str, Any]  # the national setlinfo's person and clearing fields (:func:`_identity`)


#: 人员类别 of civil servants (公务员), whose settlements carry cvlserv_flag 1.
CIVIL_SERVANT_TYPES = frozenset({"1102", "1202"})
#: 清算方式: every settlement here is computed line by line from the catalogue (按项目).
CLR_WAY_BY_ITEM = "1"


def _identity(cmd: SettleCommand, visit: rows.Visit, age: int) -> dict[str, Any]:
    """The fields a national 2206/2207 (2303/2304, 2101/2102) setlinfo carries beside the amounts: who was
    settled, with which credential, and who clears it (清算经办机构 = the agency of the institution's region)."""
    person, enrol, inst = visit.person, visit.enrolment, visit.institution
    assert person is not None and enrol is not None and inst is not None
    return {
        "psn_name": person.name, "psn_cert_type": "01", "certno": person.certno, "gend": person.gend,
        "naty": person.naty,
        "brdy": person.brdy.isoformat(), "age": age, "cvlserv_flag": "1" if enrol.psn_type in CIVIL_SERVANT_TYPES
        else "0", "mdtrt_cert_type": cmd.credential.cert_type, "medins_setl_id": cmd.msgid[:30],
        "clr_optins": inst.admdvs, "clr_way": CLR_WAY_BY_ITEM,
    }  # fmt: skip


def is_inpatient(med_type: str) -> bool:
    """住院类医疗类别: 21 普通住院, 2x (28 日间手术 …), 52 生育住院, 71 家庭病床."""
    return med_type.startswith("2") or med_type in ("52", "71")


def _offsite_filing(policies: PolicyStore, filed: Sequence[Any], treated_in: str) -> Any | None:
    """The active off-site filing that covers care in ``treated_in`` (its target region), if any."""
    target = policies.find_region(treated_in)
    for f in filed:
        if f.kind == "offsite" and (f.mdtrtarea_admvs is None or policies.find_region(f.mdtrtarea_admvs) == target):
            return f
    return None


def _age(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


class SettlementService:
    """The settlement use cases over a database and a loaded engine."""

    def __init__(
        self,
        db: Engine,
        engine: SettlementEngine,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(),
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:24],
    ) -> None:
        self.db = db
        self.engine = engine
        self.clock = clock
        self.new_id = new_id
        self._known_accounts: dict[str, int] = {}

    # -- 2001 entitlement ------------------------------------------------------------------
    def entitlement(
        self, credential: Credential, fixmedins_code: str, insutype: str, med_type: str, date: dt.date
    ) -> list[Reason]:
        """Every reason the person may not get benefits for this visit (empty = entitled)."""

        def work(conn: Connection) -> list[Reason]:
            psn_no, reasons = resolve_credential(conn, credential, self.clock())
            if psn_no is None:
                return reasons
            return reasons + self._gates(rows.read_visit(conn, psn_no, fixmedins_code, insutype, date), med_type, date)

        return transact(self.db, work, readonly=True)

    def entitlement_of(
        self, psn_no: str, fixmedins_code: str, insutype: str, med_type: str, date: dt.date
    ) -> list[Reason]:
        """2001 for a person already identified (by 1101): every reason, empty = entitled."""
        return transact(
            self.db,
            lambda conn: self.entitlement_in(conn, psn_no, fixmedins_code, insutype, med_type, date),
            readonly=True,
        )

    def entitlement_in(
        self, conn: Connection, psn_no: str, fixmedins_code: str, insutype: str, med_type: str, date: dt.date
    ) -> list[Reason]:
        """:meth:`entitlement_of` inside the caller's unit of work (e.g. with a registration)."""
        return self._gates(rows.read_visit(conn, psn_no, fixmedins_code, insutype, date), med_type, date)

    def _gates(self, visit: rows.Visit, med_type: str, date: dt.date) -> list[Reason]:
        """Eligibility gates of domain.md §7 over rows already loaded (no queries here)."""
        person, enrol, inst, insutype = visit.person, visit.enrolment, visit.institution, visit.insutype
        if person is None:
            return [Reason("PERSON_NOT_FOUND", f"人员 {visit.psn_no} 不存在")]
        reasons: list[Reason] = []
        if enrol is None:
            reasons.append(Reason("NOT_INSURED", f"{date} 未参加险种 {insutype}"))
        else:
            if enrol.pause_date is not None and enrol.pause_date <= date:
                reasons.append(Reason("PAUSED", f"参保已于 {enrol.pause_date} 暂停 (中断缴费), 统筹基金暂停支付"))
            if enrol.waiting_until is not None and date <= enrol.waiting_until:
                reasons.append(Reason("WAITING_PERIOD", f"处于待遇等待期, {enrol.waiting_until} 后方可享受待遇"))
        if person.suspended_from is not None and person.suspended_from <= date <= (person.suspended_to or date):
            why = person.suspension_reason or "违规使用医保"
            reasons.append(Reason("SETTLEMENT_SUSPENDED", f"直接结算已暂停至 {person.suspended_to} ({why})"))
        if inst is None:
            reasons.append(Reason("INSTITUTION_UNKNOWN", f"定点机构 {visit.fixmedins_code} 不存在"))
            return reasons
        if not inst.designated or inst.valid_from > date or (inst.valid_to is not None and inst.valid_to < date):
            reasons.append(Reason("INSTITUTION_NOT_DESIGNATED", f"{inst.name} 在 {date} 不是定点医药机构"))
        if enrol is not None:
            policies = self.engine.policies
            scheme = policies.resolve(enrol.admdvs, date).scheme(insutype)
            # The policy's gates decide, as in the engine (which settles no_fund visits without fund):
            # only a gate set to refuse stops the visit here.
            gates = scheme.gates if scheme is not None else None
            if policies.find_region(inst.admdvs) != policies.find_region(enrol.admdvs):
                if not inst.networked:
                    reasons.append(Reason("INSTITUTION_NOT_NETWORKED", f"{inst.name} 未开通异地就医直接结算"))
                if _offsite_filing(policies, visit.filings, inst.admdvs) is None and (
                    gates is None or gates.offsite_unfiled == "refuse"
                ):
                    reasons.append(Reason("OFFSITE_UNFILED", "异地就医未备案, 不能直接结算"))
            benefit = None
            if scheme is not None:
                benefit = next((b for b in scheme.benefits.values() if med_type in b.med_types), None)
            if benefit is None:
                reasons.append(Reason("MED_TYPE_NOT_COVERED", f"险种 {insutype} 无医疗类别 {med_type} 的待遇"))
            elif (
                benefit.requires_disease_filing
                and not any(f.kind == "disease" for f in visit.filings)
                and (gates is None or gates.disease_filing_missing == "refuse")
            ):
                reasons.append(Reason("DISEASE_NOT_FILED", f"{benefit.title}须先办理病种备案"))
        return reasons

    # -- building the engine request -------------------------------------------------------
    def _prepare(
        self, conn: Connection, cmd: SettleCommand, *, lock: bool, replay: str | None = None
    ) -> _Prepared | StoredReply:
        """Read everything for ``cmd`` in one round trip, check it, and build the engine request.

        With ``replay`` (the payload digest) the ``msgid`` record comes along: a message
        already done returns its stored reply, before any check can refuse it.
        """
        msgid = cmd.msgid if replay is not None else None
        now = self.clock()
        payload = dict(cmd.payload)
        try:
            begntime = payload.get("begntime")
            if begntime is None or (isinstance(begntime, str) and not begntime.strip()):
                raise RequestError("begntime", "缺少必填字段")
            date = _date_of(begntime)
            if date is None:
                shown = repr(begntime[:40]) if isinstance(begntime, str) else f"{type(begntime).__name__} 类型"
                raise RequestError("begntime", f"不是合法日期 (yyyy-MM-dd 或 yyyy-MM-dd HH:mm:ss): {shown}")
        except RequestError:
            stored = None if replay is None else self._replay(conn, cmd.fixmedins_code, cmd.msgid, replay)
            if stored is not None:
                return stored
            raise
        insutype = str(payload.get("insutype") or "")
        med_type = str(payload.get("med_type") or "")
        acct = str(payload.get("acct_used_flag") or "0") == "1"
        kind = CERT_TYPES.get(cmd.credential.cert_type)
        if kind is None:  # nobody to read for: only the msgid record, then the refusal
            stored = None if replay is None else self._replay(conn, cmd.fixmedins_code, cmd.msgid, replay)
            if stored is not None:
                return stored
            _psn, refused = judge_credential(cmd.credential, None, now)
            raise SettlementRefused(tuple(refused))
        start, visit, money = rows.read_for_settlement(
            conn, (kind, cmd.credential.number), cmd.fixmedins_code, insutype, date,
            accounts=acct, family=cmd.use_family, lock=lock, msgid=msgid,
        )  # fmt: skip
        if replay is not None:
            stored = self._replay_row(conn, start.message, replay)
            if stored is not None:
                return stored
        psn_no, reasons = judge_credential(cmd.credential, start.credential, now)
        if psn_no is None or reasons:
            raise SettlementRefused(tuple(reasons))
        gates = self._gates(visit, med_type, date)
        if gates:
            raise SettlementRefused(tuple(gates))
        holders: list[rows.Binding] = []
        if acct and cmd.use_family:
            seen = {psn_no}  # never the person themself, each relative once
            for binding in visit.bindings:
                # A holder missing from the balances was unbound while this unit of work read.
                if binding.holder_psn_no not in seen and binding.holder_psn_no in money.balances:
                    seen.add(binding.holder_psn_no)
                    holders.append(binding)
        person, enrol, inst, filed = visit.person, visit.enrolment, visit.institution, visit.filings
        assert person is not None and enrol is not None and inst is not None
        # The PIN is the platform's to check unless the institution's PIN pads verified it (pin_by_terminal)
        # and no pin was sent; a pin that is sent is always checked.
        terminal_checked = inst.pin_by_terminal and cmd.credential.pin is None
        if acct and cmd.credential.cert_type in ("02", "03") and not terminal_checked:
            security = self.engine.policies.resolve(enrol.admdvs, date).params.security
            pin_reasons = check_pin(conn, psn_no, cmd.credential.pin, security.max_pin_attempts, now)
            if pin_reasons:
                raise _PinRefused(tuple(pin_reasons))
        counters = scheme_counters(self.engine.policies.resolve(enrol.admdvs, date), insutype)
        counters_held = [key for key in money.accumulators if key in counters]
        filing = _offsite_filing(self.engine.policies, filed, inst.admdvs)
        offsite = filing.offsite_type if filing is not None else None
        current, historical = money.balances.get(psn_no, (0, 0))
        family = [
            {
                "psn_no": binding.holder_psn_no,
                "relation": _INVERSE.get(binding.relation, binding.relation),
                "insuplc_admdvs": binding.holder_admdvs,
                "current_year": money.balances[binding.holder_psn_no][0],
                "historical": money.balances[binding.holder_psn_no][1],
            }
            for binding in holders
        ]
        request = {
            **{k: v for k, v in payload.items() if k not in ("psn_idet_types", "accumulators", "accounts", "filings")},
            "psn_no": psn_no,
            "gend": person.gend,
            "age": _age(person.brdy, date),
            "psn_type": enrol.psn_type,
            "hosp_lv": inst.hosp_lv,
            "insuplc_admdvs": enrol.admdvs,
            "mdtrtarea_admvs": inst.admdvs,
            "psn_idet_types": sorted(visit.identities),
            "filings": {
                "offsite": offsite,
                "diseases": sorted(f.dise_codg for f in filed if f.kind == "disease" and f.dise_codg),
            },
            # Counters of rules the policy in force no longer has (an earlier version's) are not read.
            "accumulators": {"year": date.year, "values": {k: money.accumulators[k] for k in counters_held}},
            "accounts": {"current_year": current, "historical": historical, "family": family},
        }
        return _Prepared(psn_no, enrol.admdvs, _fen_to_json(request), money, _identity(cmd, visit, request["age"]))

    def _compute(self, prepared: _Prepared) -> SettlementResult:
        return self.engine.settle(parse_request(prepared.request))

    # -- 2206 / 2303 pre-settlement --------------------------------------------------------
    def presettle(self, cmd: SettleCommand) -> SettlementResult:
        """The same computation as :meth:`settle`; writes nothing (bar a failed-PIN count)."""
        return self.presettle_with(lambda _conn: cmd)

    def presettle_with(self, build: Callable[[Connection], SettleCommand]) -> SettlementResult:
        """:meth:`presettle` of the command ``build(conn)`` makes from rows read in the same unit of work."""

        def work(conn: Connection) -> SettlementResult | _PinRefused:
            cmd = build(conn)
            try:
                return _moving_money(self._compute(self._prepared(conn, cmd, lock=False)))
            except _PinRefused as refused:
                return refused  # commit the failed-attempt count, then refuse

        return _unwrap(transact(self.db, work))

    def presettle_body_with(self, build: Callable[[Connection], SettleCommand]) -> dict[str, Any]:
        """:meth:`presettle_with` answered as the national interface does: the result's JSON (no trace) with
        the person and clearing fields of its setlinfo."""

        def work(conn: Connection) -> dict[str, Any] | _PinRefused:
            cmd = build(conn)
            try:
                prepared = self._prepared(conn, cmd, lock=False)
                body = _moving_money(self._compute(prepared)).to_json(trace=False)
            except _PinRefused as refused:
                return refused  # commit the failed-attempt count, then refuse
            body["setlinfo"].update(prepared.identity)
            return body

        return _unwrap(transact(self.db, work))

    def identify_in(
        self, conn: Connection, credential: Credential, fixmedins_code: str, insutype: str, med_type: str,
        date: dt.date,
    ) -> tuple[str | None, list[Reason]]:  # fmt: skip
        """The person a credential names and every reason they may not get benefits for this visit
        (credential status, then the 2001 gates), in the caller's unit of work: one round trip."""
        kind = CERT_TYPES.get(credential.cert_type)
        if kind is None:
            return judge_credential(credential, None, self.clock())
        start, visit, _money = rows.read_for_settlement(
            conn, (kind, credential.number), fixmedins_code, insutype, date, accounts=False, family=False, lock=False
        )
        psn_no, reasons = judge_credential(credential, start.credential, self.clock())
        if psn_no is None or reasons:
            return psn_no, reasons
        return psn_no, self._gates(visit, med_type, date)

    def split_in(self, conn: Connection, cmd: SettleCommand) -> SettlementResult:
        """A pre-settlement without the personal account, inside the caller's unit of work: the
        per-line split (2204) and the fund shares. No PIN is involved, so nothing is written."""
        cmd = replace(cmd, payload={**cmd.payload, "acct_used_flag": "0"})
        return self._compute(self._prepared(conn, cmd, lock=False))

    def _prepared(self, conn: Connection, cmd: SettleCommand, *, lock: bool) -> _Prepared:
        prepared = self._prepare(conn, cmd, lock=lock)
        assert isinstance(prepared, _Prepared), "no replay without a digest"
        return prepared

    # -- 2207 / 2304 settlement ------------------------------------------------------------
    def settle(
        self, cmd: SettleCommand, *, then: Callable[[Connection, StoredReply], None] | None = None
    ) -> StoredReply:
        """Settle once per ``msgid``; ``then(conn, reply)`` runs in the same unit of work after a NEW
        settlement is stored (not on a replay) — e.g. closing the visit — and may refuse by raising."""
        return self.settle_with(lambda _conn: cmd, then=then)

    def settle_with(
        self,
        build: Callable[[Connection], SettleCommand],
        *,
        then: Callable[[Connection, StoredReply], None] | None = None,
    ) -> StoredReply:
        """:meth:`settle` of the command ``build(conn)`` makes from rows it reads in the same unit of
        work (the gateway's visit and fee lines): what is settled is what was read."""

        def work(conn: Connection) -> StoredReply | _PinRefused:
            cmd = build(conn)
            digest = cmd.digest("settle")
            try:
                prepared = self._prepare(conn, cmd, lock=True, replay=digest)
            except _PinRefused as refused:
                return refused  # nothing but the failed-attempt count was written: commit it
            if isinstance(prepared, StoredReply):
                return prepared
            result = _moving_money(self._compute(prepared))
            now = self.clock()
            setl_id = self.new_id()
            body = result.to_json()
            body["setlinfo"].update(prepared.identity, setl_id=setl_id, setl_time=now.strftime("%Y-%m-%d %H:%M:%S"))
            entry = ledger.settlement_entry(
                result, setl_id=setl_id, fixmedins_code=cmd.fixmedins_code, admdvs=prepared.admdvs
            )
            money = prepared.money
            rows.write_settlement(
                conn,
                entry_id=money.entry_id,
                entry=entry,
                account_ids=self._account_ids(conn, entry, money.account_ids),
                now=now,
                accumulator_deltas=result.accumulators_delta,
                settlement={
                    "setl_id": setl_id,
                    "msgid": cmd.msgid,
                    "kind": "settle",
                    "reverses_setl_id": None,
                    "psn_no": prepared.psn_no,
                    "fixmedins_code": cmd.fixmedins_code,
                    "mdtrt_id": result.mdtrt_id,
                    "insutype": result.insutype,
                    "med_type": result.med_type,
                    "year": result.year,
                    "setl_time": now,
                    "medfee_sumamt": result.medfee_sumamt,
                    "fund_pay_sumamt": result.fund_pay_sumamt,
                    "acct_pay": result.acct_pay,
                    "psn_cash_pay": result.psn_cash_pay,
                    "policy_version": result.policy_version,
                    "entry_id": money.entry_id,
                    "request_json": _json.dumps(prepared.request, sort_keys=True),
                    "result_json": _json.dumps(body),
                    "deltas_json": _json.dumps(dict(result.accumulators_delta), sort_keys=True),
                },
                # A settlement's reply is its stored result (read back on replay), so not kept twice.
                message=(cmd.fixmedins_code, cmd.msgid, "settle", digest, "", setl_id),
                # Nothing follows but the reply: the commit goes with the writes (transact's own
                # commit then finds the transaction ended).
                commit=then is None,
            )
            reply = StoredReply(cmd.msgid, "settle", body, setl_id)
            if then is not None:
                then(conn, reply)
            return reply

        return _unwrap(transact(self.db, work))

    def _account_ids(self, conn: Connection, entry: ledger.Entry, personal: Mapping[str, int]) -> dict[str, int]:
        """Ledger account ids of the entry's accounts: personal ones as read under lock, the
        fund and institution accounts from a per-process cache (accounts are never deleted)."""
        ids = {**personal}
        missing = []
        for posting in entry.postings:
            code = posting.account
            if code not in ids:
                known = self._known_accounts.get(code)
                if known is None:
                    missing.append(code)
                else:
                    ids[code] = known
        if missing:
            # Ids of rows created in this transaction are not cached: it may still roll back.
            existing = repo.account_ids(conn, missing, existing_only=True)
            self._known_accounts.update(existing)
            ids.update(existing)
            ids.update(repo.account_ids(conn, [c for c in missing if c not in existing]))
        return ids

    # -- 2208 / 2305 reversal --------------------------------------------------------------
    def reverse(self, setl_id: str, msgid: str, fixmedins_code: str, *, mdtrt_id: str | None = None) -> StoredReply:
        """A new negated settlement and compensating entry; accumulators lose exactly the deltas.

        ``mdtrt_id``, when the caller names the visit (2208), must be the settlement's own visit;
        another visit is refused and nothing changes. The reversed settlement's own outpatient
        visit, and only it, is open again afterwards (in the same unit of work).
        """
        return transact(self.db, lambda conn: self.reverse_in(conn, setl_id, msgid, fixmedins_code, mdtrt_id=mdtrt_id))

    def reverse_in(
        self, conn: Connection, setl_id: str, msgid: str, fixmedins_code: str, *, mdtrt_id: str | None = None
    ) -> StoredReply:
        """:meth:`reverse` inside the caller's unit of work (e.g. with an audit row of its own)."""
        named = f"|{mdtrt_id}" if mdtrt_id is not None else ""
        digest = hashlib.sha256(f"reverse|{setl_id}|{fixmedins_code}{named}".encode()).hexdigest()
        stored = self._replay(conn, fixmedins_code, msgid, digest)
        if stored is not None:
            return stored
        return self._reverse_in(conn, setl_id, msgid, fixmedins_code, digest, "reverse", mdtrt_id)

    def _reverse_in(
        self, conn: Connection, setl_id: str, msgid: str, fixmedins_code: str, digest: str, operation: str,
        mdtrt_id: str | None = None,
    ) -> StoredReply:  # fmt: skip
        original = repo.get_settlement(conn, setl_id)
        if original is None or original.fixmedins_code != fixmedins_code:
            # Another institution's settlement is not there to see: the same answer as a missing one.
            raise NotFound(f"结算 {setl_id} 不存在或不属于本机构")
        if mdtrt_id is not None and original.mdtrt_id != mdtrt_id:
            raise VisitMismatch(f"结算 {setl_id} 不属于就诊 {mdtrt_id}, 未作任何更改")
        if original.kind != "settle":
            # Undoing a reversal would re-charge accounts and deductibles long since moved on:
            # the institution settles again instead.
            raise Forbidden(f"{setl_id} 是冲销记录, 不能再冲销或冲正; 如需恢复请重新结算")
        entry_row = repo.entry_of(conn, original.entry_id)
        repo.lock_persons(conn, [original.psn_no, *(p for p in repo.entry_persons(conn, original.entry_id))])
        # Under the lock, a concurrent attempt of this very message may have finished first.
        stored = self._replay(conn, fixmedins_code, msgid, digest)
        if stored is not None:
            return stored
        done = repo.reversal_of(conn, setl_id)
        if done is not None:
            if operation == "undo":
                noop = {"undone": False, "setl_id": setl_id, "message": f"原交易已被冲销 ({done.setl_id}), 无需冲正"}
                return self._store_reply(conn, fixmedins_code, msgid, "undo", digest, noop, None, self.clock())
            raise Forbidden(f"结算 {setl_id} 已冲销, 不能重复冲销")
        now = self.clock()
        new_id = self.new_id()
        entry = ledger.negated(entry_row, kind="reversal", ref=new_id) if entry_row.postings else ledger.Entry(
            "reversal", new_id, f"reverses settlement {setl_id}", ()
        )  # fmt: skip
        entry_id = repo.post_entry(conn, entry, now)
        deltas = _json.loads(original.deltas_json)
        repo.add_accumulators(
            conn, original.psn_no, original.year, original.insutype, {k: -v for k, v in deltas.items()}
        )
        body = _negated_body(_json.loads(original.result_json), new_id, setl_id, now)
        body["setlinfo"]["balc"] = format_fen(sum(repo.balances(conn, original.psn_no)))
        conn.execute(
            insert(settlements).values(
                {
                    # The original row, amounts negated (domain.md §9), as a new settlement of its own.
                    **original._mapping,
                    **{
                        k: -original._mapping[k]
                        for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay")
                    },
                    "setl_id": new_id,
                    "msgid": msgid,
                    "kind": "reversal",
                    "reverses_setl_id": setl_id,
                    "setl_time": now,
                    "entry_id": entry_id,
                    "request_json": _json.dumps({"reverses": setl_id}),
                    "result_json": _json.dumps(body),
                    "deltas_json": _json.dumps({k: -v for k, v in deltas.items()}, sort_keys=True),
                }
            )
        )
        if original.mdtrt_id is not None and not is_inpatient(original.med_type):
            # The reversed settlement's own outpatient visit may be settled again; no other visit.
            # (An admission's state follows its own transactions: 2305, 2405.)
            visit_rows.reopen_visit(conn, original.mdtrt_id, fixmedins_code)
        return self._store_reply(conn, fixmedins_code, msgid, operation, digest, body, new_id, now)

    # -- 2601 冲正 --------------------------------------------------------------------------
    def undo(self, target_msgid: str, msgid: str, fixmedins_code: str) -> StoredReply:
        """Undo whatever ``target_msgid`` did; a clear no-op answer if it did nothing."""
        digest = hashlib.sha256(f"undo|{target_msgid}|{fixmedins_code}".encode()).hexdigest()

        def work(conn: Connection) -> StoredReply:
            stored = self._replay(conn, fixmedins_code, msgid, digest)
            if stored is not None:
                return stored
            now = self.clock()
            # Only the institution's own message: another's msgid is not there to see or undo.
            target = repo.get_message(conn, fixmedins_code, target_msgid)
            if target is None or target.setl_id is None:
                body = {"undone": False, "omsgid": target_msgid, "message": "原交易未处理或未产生结算, 无需冲正"}
                return self._store_reply(conn, fixmedins_code, msgid, "undo", digest, body, None, now)
            done = repo.reversal_of(conn, target.setl_id)
            if done is not None:
                body = {"undone": False, "omsgid": target_msgid, "setl_id": target.setl_id,
                        "message": f"原交易已被冲销 ({done.setl_id}), 无需冲正"}  # fmt: skip
                return self._store_reply(conn, fixmedins_code, msgid, "undo", digest, body, None, now)
            reply = self._reverse_in(conn, target.setl_id, msgid, fixmedins_code, digest, "undo")
            return reply

        return transact(self.db, work)

    # -- idempotency -----------------------------------------------------------------------
    def _replay(self, conn: Connection, caller: str, msgid: str, digest: str) -> StoredReply | None:
        return self._replay_row(conn, rows.read_message(conn, caller, msgid), digest)

    def _replay_row(self, conn: Connection, row: rows.MessageRow | None, digest: str) -> StoredReply | None:
        """The stored reply of a message already done (``row``), or None if it is new."""
        if row is None:
            return None
        if row.payload_hash != digest:
            raise IdempotencyConflict(f"msgid {row.msgid} 已用于内容不同的交易")
        if row.setl_id is not None:
            # The reply of a message that made a settlement is that settlement's stored result.
            settlement = repo.get_settlement(conn, row.setl_id)
            assert settlement is not None
            body = _json.loads(settlement.result_json)
        else:
            body = _json.loads(row.response_json)
        return StoredReply(row.msgid, row.operation, body, row.setl_id, replayed=True)

    def _store_reply(
        self, conn: Connection, caller: str, msgid: str, operation: str, digest: str, body: dict[str, Any],
        setl_id: str | None, now: dt.datetime,
    ) -> StoredReply:  # fmt: skip
        conn.execute(
            insert(messages).values(
                caller=caller,
                msgid=msgid,
                operation=operation,
                payload_hash=digest,
                # A settlement's reply is its stored result (read back on replay), so not kept twice.
                response_json="" if setl_id is not None else _json.dumps(body),
                setl_id=setl_id,
                created_at=now,
            )
        )
        return StoredReply(msgid, operation, body, setl_id)


class _PinRefused(SettlementRefused):
    """A wrong PIN refuses the settlement, yet its failure count must be committed."""


T = TypeVar("T")


def _unwrap(outcome: T | _PinRefused) -> T:
    if isinstance(outcome, _PinRefused):
        raise SettlementRefused(outcome.reasons)
    return outcome


def _moving_money(result: SettlementResult) -> SettlementResult:
    """A settlement moves money: a bill of 0 is refused (no entry, no counter), as is its pre-settlement."""
    if result.medfee_sumamt == 0:
        raise SettlementRefused(
            (Reason("ZERO_AMOUNT", "费用总额为 0, 无需结算: 零金额费用不产生结算, 也不计入就诊次数"),)
        )
    return result


def _date_of(begntime: object) -> dt.date | None:
    """The date part of ``begntime`` (``yyyy-MM-dd`` or ``yyyy-MM-dd HH:mm:ss``), None if it has none."""
    if not isinstance(begntime, str) or len(begntime) < 10:
        return None
    try:
        return dt.date.fromisoformat(begntime[:10])
    except ValueError:
        return None


def _fen_to_json(request: dict[str, Any]) -> dict[str, Any]:
    """Balances and accumulators come from the database in fen; the request wants yuan strings."""
    accounts = request["accounts"]
    accounts["current_year"] = format_fen(accounts["current_year"])
    accounts["historical"] = format_fen(accounts["historical"])
    for rel in accounts["family"]:
        rel["current_year"] = format_fen(rel["current_year"])
        rel["historical"] = format_fen(rel["historical"])
    values = request["accumulators"]["values"]
    request["accumulators"]["values"] = {k: (v if k.endswith("_cnt") else format_fen(v)) for k, v in values.items()}
    return request


def _negated_body(body: dict[str, Any], new_id: str, setl_id: str, now: dt.datetime) -> dict[str, Any]:
    """The reply of a reversal: the original amounts negated (domain.md §9)."""
    info = dict(body["setlinfo"])
    for key, value in list(info.items()):
        if isinstance(value, str) and key not in ("pool_prop_selfpay", "balc") and _is_amount(value):
            info[key] = _neg(value)
    info.update(setl_id=new_id, setl_time=now.strftime("%Y-%m-%d %H:%M:%S"), reverses_setl_id=setl_id)
    details = [
        {**d, "fund_payamt": _neg(d["fund_payamt"]), "inscp_scp_amt": _neg(d["inscp_scp_amt"])}
        for d in body.get("setldetail", [])
    ]
    return {"setlinfo": info, "setldetail": details}


def _is_amount(text: str) -> bool:
    head, _, tail = text.lstrip("-").partition(".")
    return head.isdigit() and len(tail) == 2 and tail.isdigit()


def _neg(text: str) -> str:
    if text.startswith("-"):
        return text[1:]
    return text if text.strip("0.") == "" else "-" + text
