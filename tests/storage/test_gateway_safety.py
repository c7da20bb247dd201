"""Money and access safety at the gateway, as a hostile institution or a careless HIS would try it.

Each test drives the national envelope over real HTTP (uvicorn on loopback) on SQLite and
PostgreSQL, and names the defect it closes: a reversal that reopened another visit (double
payment), a yearly visit counter that locked people out, a signature replayed with other
bodies, msgids shared between institutions, work done before authentication, year-to-date
accumulators read without a relationship to the person, and policy gates the gateway ignored.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, Engine, func, insert, select

from storage import builders as b
from storage.invariants import assert_invariants
from storage.test_gateway_e2e import Client, start_server
from storage.test_smoke_settlement import ENGINE
from yibao import Engine as SettlementEngine
from yibao import PolicyStore, load_demo_catalog
from yibao.db import repository as repo
from yibao.db import schema as S
from yibao.gateway import GATEWAY_PATH, create_app
from yibao.gateway.app import INTERNAL_ERROR
from yibao.service import signatures
from yibao.service.apikeys import issue_api_key
from yibao.service.queries import RECENT_VISIT_DAYS
from yibao.service.settlement import SettlementService
from yibao.service.uow import transact

INST = "H21060000001"
OTHER = "H21060000002"
FAR = "H53290000001"  # an institution in 大理 (532900): off-site for a 丹东 person
CONSULT = "001102000050000"  # a catalogue item the demo catalogue pays (诊查费)
TODAY = dt.date.today().isoformat()


class Servers:
    """uvicorn servers on loopback ports over one database (each as a separate server process would be)."""

    def __init__(self, db: Engine) -> None:
        self.db = db
        self._stops: list[Callable[[], None]] = []

    def start(self, engine: SettlementEngine = ENGINE) -> str:
        base, stop = start_server(create_app(self.db, SettlementService(self.db, engine, clock=dt.datetime.now)))
        self._stops.append(stop)
        return base

    def stop(self) -> None:
        for stop in self._stops:
            stop()


@pytest.fixture
def servers(db: Engine) -> Iterator[Servers]:
    def setup(conn: Connection) -> None:
        b.institution(conn, INST)
        b.institution(conn, OTHER)
        b.institution(conn, FAR, admdvs="532900")
        b.person(conn, "P1", balance_fen=80000)
        b.person(conn, "P2", balance_fen=80000)

    transact(db, setup)
    running = Servers(db)
    yield running
    running.stop()


def _signed_in(db: Engine, base: str, code: str = INST) -> Client:
    key, secret = issue_api_key(db, code, clock=dt.datetime.now)
    his = Client(base, key, secret, code)
    answer = his.call("9001", {"signIn": {"opter": "001"}})
    assert answer["infcode"] == 0, answer["err_msg"]
    his.sign_no = answer["output"]["signinoutb"]["sign_no"]
    return his


def _cred(psn_no: str) -> dict[str, str]:
    return {"mdtrt_cert_type": "03", "mdtrt_cert_no": f"C{psn_no}", "card_sn": f"SN{psn_no}"}


def _visit(his: Client, psn_no: str = "P1", amount: str = "200.00", code: str = CONSULT) -> str:
    """2201 + 2204: an open outpatient visit with one fee line of ``amount``."""
    reg = his.call("2201", {"data": {**_cred(psn_no), "psn_no": psn_no, "insutype": "310", "med_type": "11",
                                     "begntime": f"{TODAY} 09:00:00"}})  # fmt: skip
    assert reg["infcode"] == 0, reg
    mdtrt_id: str = reg["output"]["data"]["mdtrt_id"]
    line = {"feedetl_sn": "1", "mdtrt_id": mdtrt_id, "psn_no": psn_no, "med_list_codg": code, "cnt": "1",
            "pric": amount, "det_item_fee_sumamt": amount}  # fmt: skip
    upload = his.call("2204", {"feedetail": [line]})
    assert upload["infcode"] == 0, upload
    return mdtrt_id


def _settle(his: Client, mdtrt_id: str, psn_no: str = "P1", **kw: Any) -> dict[str, Any]:
    return his.call("2207", {"data": {"psn_no": psn_no, "mdtrt_id": mdtrt_id, "acct_used_flag": "0",
                                      "insutype": "310"}}, **kw)  # fmt: skip


def _count(db: Engine, table: Any) -> int:
    return int(transact(db, lambda c: c.execute(select(func.count()).select_from(table)).scalar_one()))


# -- 1. a reversal touches only its own settlement's visit ----------------------------------------
def test_a_reversal_naming_another_visit_is_refused_and_changes_nothing(servers: Servers) -> None:
    db = servers.db
    his = _signed_in(db, servers.start())
    visit_a, visit_b = _visit(his), _visit(his)
    setl_a = _settle(his, visit_a)["output"]["setlinfo"]["setl_id"]
    settled_b = _settle(his, visit_b)
    assert settled_b["infcode"] == 0, settled_b
    before = _count(db, S.settlements)

    crossed = his.call("2208", {"data": {"psn_no": "P1", "mdtrt_id": visit_b, "setl_id": setl_a}})
    assert crossed["infcode"] == -1 and f"不属于就诊 {visit_b}" in crossed["err_msg"], crossed
    assert _count(db, S.settlements) == before  # A is not reversed
    again_b = _settle(his, visit_b)  # B stays settled: no second payment for it
    assert again_b["infcode"] == -1 and "不能结算" in again_b["err_msg"], again_b

    # Reversing A (naming A, or naming no visit) reopens A and only A.
    done = his.call("2208", {"data": {"psn_no": "P1", "mdtrt_id": visit_a, "setl_id": setl_a}})
    assert done["infcode"] == 0, done
    assert _settle(his, visit_a)["infcode"] == 0
    assert _settle(his, visit_b)["infcode"] == -1
    assert_invariants(db)


# -- 2. no lockout by counters; a settlement that moves no money is refused -----------------------
def test_a_person_past_366_visits_in_a_year_still_settles(servers: Servers) -> None:
    db = servers.db
    year = dt.date.today().year

    def many_visits(conn: Connection) -> None:
        conn.execute(insert(S.accumulators).values(psn_no="P1", year=year, insutype="310",
                                                   key="outpatient_pooling.visit_cnt", value=400))  # fmt: skip

    transact(db, many_visits)
    his = _signed_in(db, servers.start())
    done = _settle(his, _visit(his))
    assert done["infcode"] == 0, done
    acc = transact(db, lambda c: repo.get_accumulators(c, "P1", year, "310"))
    assert acc["outpatient_pooling.visit_cnt"] == 401


def test_a_zero_amount_settlement_is_refused_and_counts_nothing(servers: Servers) -> None:
    db = servers.db
    his = _signed_in(db, servers.start())
    mdtrt_id = _visit(his, amount="0.00")
    entries = _count(db, S.journal_entries)
    refused = _settle(his, mdtrt_id)
    assert refused["infcode"] == -1 and "费用总额为 0" in refused["err_msg"], refused
    assert _count(db, S.journal_entries) == entries and _count(db, S.accumulators) == 0
    assert _count(db, S.settlements) == 0
    # The visit stays open: a real fee line can still be added and settled.
    line = {"feedetl_sn": "2", "mdtrt_id": mdtrt_id, "psn_no": "P1", "med_list_codg": CONSULT, "cnt": "1",
            "pric": "30.00", "det_item_fee_sumamt": "30.00"}  # fmt: skip
    assert his.call("2204", {"feedetail": [line]})["infcode"] == 0
    assert _settle(his, mdtrt_id)["infcode"] == 0


def test_a_zero_amount_pharmacy_purchase_is_refused(servers: Servers) -> None:
    db = servers.db
    transact(db, lambda c: b.institution(c, "P21060000009", kind="pharmacy"))
    his = _signed_in(db, servers.start(), "P21060000009")
    purchase = {"data": {**_cred("P1"), "psn_no": "P1", "insutype": "310", "med_type": "41", "acct_used_flag": "0",
                         "begntime": f"{TODAY} 10:00:00"},
                "feedetail": [{"feedetl_sn": "1", "med_list_codg": CONSULT, "cnt": "1", "pric": "0",
                               "det_item_fee_sumamt": "0"}]}  # fmt: skip
    refused = his.call("2102", purchase)
    assert refused["infcode"] == -1 and "费用总额为 0" in refused["err_msg"], refused
    assert _count(db, S.settlements) == 0 and _count(db, S.accumulators) == 0


# -- 3. each signature is accepted once, in every server process ----------------------------------
def test_a_signature_is_accepted_once_across_servers(servers: Servers) -> None:
    db = servers.db
    first, second = servers.start(), servers.start()
    his = _signed_in(db, first)
    headers = his.headers()
    ok = his.call("1101", {"data": _cred("P1")}, headers=headers)
    assert ok["infcode"] == 0, ok
    for base in (first, second):  # the same signed headers with other bodies, on either server
        replay = Client(base, his.access_key, his.secret, INST)
        replay.sign_no = his.sign_no
        for body in ({"data": _cred("P2")}, {"data": _cred("P1")}):
            refused = replay.call("1101", body, headers=headers)
            assert refused["infcode"] == -1 and "签名已使用" in refused["err_msg"], refused
    # A fresh signature is accepted as ever.
    assert his.call("1101", {"data": _cred("P2")})["infcode"] == 0


def test_expired_signatures_are_forgotten(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signatures, "PURGE_EVERY_S", 0.0)
    db = servers.db
    his = _signed_in(db, servers.start())
    for _ in range(3):
        assert his.call("1101", {"data": _cred("P1")})["infcode"] == 0

    def age(conn: Connection) -> None:
        conn.execute(S.gateway_signatures.update().values(expires_at=dt.datetime(2000, 1, 1)))

    transact(db, age)
    assert his.call("1101", {"data": _cred("P1")})["infcode"] == 0
    assert _count(db, S.gateway_signatures) == 1  # the stale ones went with the next acceptance


# -- 4. msgid belongs to its institution ---------------------------------------------------------
def test_another_institution_cannot_take_block_or_undo_a_msgid(servers: Servers) -> None:
    db = servers.db
    base = servers.start()
    his, rival = _signed_in(db, base), _signed_in(db, base, OTHER)
    msgid = f"{INST}{dt.datetime.now():%Y%m%d%H%M%S}0042"
    # The rival settles its own patient first, under a msgid in the hospital's format ...
    squatted = _settle(rival, _visit(rival, "P2"), "P2", msgid=msgid)
    assert squatted["infcode"] == 0, squatted
    # ... and the hospital's real message with that msgid still settles.
    visit = _visit(his)
    mine = _settle(his, visit, msgid=msgid)
    assert mine["infcode"] == 0, mine
    setl_id = mine["output"]["setlinfo"]["setl_id"]
    assert setl_id != squatted["output"]["setlinfo"]["setl_id"]
    # Each one's retry replays its own reply, not the other's.
    assert _settle(his, visit, msgid=msgid)["output"] == mine["output"]
    assert _settle(rival, squatted["output"]["setlinfo"]["mdtrt_id"], "P2", msgid=msgid)["output"] == squatted["output"]
    # The rival's 冲正 of the hospital's msgid undoes its own message, never the hospital's, and shows nothing of it.
    other_msgid = f"{INST}{dt.datetime.now():%Y%m%d%H%M%S}0043"
    hers = _settle(his, _visit(his), msgid=other_msgid)
    assert hers["infcode"] == 0
    undo = rival.call("2601", {"data": {"omsgid": other_msgid, "oinfno": "2207"}})
    assert undo["infcode"] == 0 and undo["output"]["data"]["undone"] is False, undo
    assert hers["output"]["setlinfo"]["setl_id"] not in json.dumps(undo, ensure_ascii=False)
    assert transact(db, lambda c: repo.reversal_of(c, hers["output"]["setlinfo"]["setl_id"])) is None
    assert_invariants(db)


# -- 5. authenticate before parsing; bounded, specific refusals; no internal error ----------------
def _raw(base: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    response = httpx.post(base + GATEWAY_PATH, content=body, headers={"content-type": "application/json", **headers},
                          timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["err_msg"] != INTERNAL_ERROR, answer
    return answer


def test_an_unsigned_body_is_refused_before_it_is_read(servers: Servers) -> None:
    base = servers.start()
    # Not JSON at all: the missing signature is what the caller hears about, so it was checked first.
    answer = _raw(base, b"\x00not json" * 1000, {})
    assert answer["infcode"] == -1 and "鉴权失败" in answer["err_msg"], answer
    key, _secret = issue_api_key(servers.db, INST, clock=dt.datetime.now)
    wrong = Client(base, key, "not-the-secret", INST).headers()
    answer = _raw(base, b"{" * 100_000, wrong)
    assert answer["infcode"] == -1 and "签名不符" in answer["err_msg"], answer


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda env: {**env, "input": {"data": _nested(50)}}, "嵌套"),
        (lambda env: {**env, "sign_no": "S\x00x"}, "sign_no"),
        (lambda env: {**env, "msgid": "M\u0000"}, "msgid"),
        (lambda env: {**env, "infno": "2204", "input": {"feedetail": [
            {"feedetl_sn": "1", "mdtrt_id": "V", "pric": 10**20, "cnt": 1, "det_item_fee_sumamt": 10**20}]}},
         "pric"),
        (lambda env: {**env, "input": {"data": {**_cred("P1"), "mdtrt_cert_no": "Ｃ１"}}}, "mdtrt_cert_no"),
        (lambda env: {**env, "infno": "5206", "input": {"data": {**_cred("P1"), "cum_ym": "２０２５"}}}, "cum_ym"),
        (lambda env: {**env, "input": {"data": {**_cred("P1"), "card_sn": "\ud800"}}}, "card_sn"),
        (lambda env: {**env, "input": {"data": {**_cred("P1"), "card_sn": 1.5e400}}}, "不是有效的数值"),
        (lambda env: {**env, "input": "x" * 5}, "input"),
        (lambda env: {**env, "infno": {"a": 1}}, "infno"),
    ],
)
def test_hostile_envelopes_get_specific_refusals(
    servers: Servers, mutate: Callable[[dict[str, Any]], dict[str, Any]], expected: str
) -> None:
    his = _signed_in(servers.db, servers.start())
    envelope = mutate(his.envelope("1101", {"data": _cred("P1")}))
    answer = _raw(str(his.http.base_url).rstrip("/"), json.dumps(envelope).encode(), his.headers())
    assert answer["infcode"] == -1 and expected in answer["err_msg"], answer


def test_nesting_past_the_parser_s_own_limit_is_refused(servers: Servers) -> None:
    his = _signed_in(servers.db, servers.start())
    head = json.dumps(his.envelope("1101", {}))[:-len('{}}')].encode()  # '..."input": '
    for depth in (2_000, 200_000):
        body = head + b"[" * depth + b"]" * depth + b"}"
        answer = _raw(str(his.http.base_url).rstrip("/"), body, his.headers())
        assert answer["infcode"] == -1 and "嵌套层数过多" in answer["err_msg"], answer


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_full_width_and_absurd_amounts_are_refused_by_name(servers: Servers) -> None:
    db = servers.db
    his = _signed_in(db, servers.start())
    mdtrt_id = _visit(his)
    hostile: tuple[tuple[Any, str], ...] = (
        ("１００.００", "pric"), ("1e3", "pric"), ("99999999999.99", "pric"), ("-5.00", "pric"), (10**20, "pric"),
        (-(10**19), "pric"),
    )
    for pric, field in hostile:
        line = {"feedetl_sn": "9", "mdtrt_id": mdtrt_id, "psn_no": "P1", "med_list_codg": CONSULT, "cnt": "1",
                "pric": pric, "det_item_fee_sumamt": "100.00"}  # fmt: skip
        answer = his.call("2204", {"feedetail": [line]})
        assert answer["infcode"] == -1 and field in answer["err_msg"], (pric, answer)
    huge_cnt = {"feedetl_sn": "9", "mdtrt_id": mdtrt_id, "psn_no": "P1", "med_list_codg": CONSULT,
                "cnt": "100000000", "pric": "1.00", "det_item_fee_sumamt": "100000000.00"}  # fmt: skip
    answer = his.call("2204", {"feedetail": [huge_cnt]})
    assert answer["infcode"] == -1 and "cnt" in answer["err_msg"], answer


# -- 6a. year-to-date accumulators only for the caller's own patient -----------------------------
def test_accumulators_need_a_credential_or_a_visit_at_the_caller(servers: Servers) -> None:
    db = servers.db
    base = servers.start()
    his, stranger = _signed_in(db, base), _signed_in(db, base, OTHER)
    _settle(his, _visit(his))
    year = str(dt.date.today().year)
    probed = stranger.call("5206", {"data": {"psn_no": "P1", "cum_ym": year}})
    assert probed["infcode"] == -1 and "无权查询" in probed["err_msg"], probed
    nobody = stranger.call("5206", {"data": {"psn_no": "P404", "cum_ym": year}})
    assert nobody["err_msg"] == probed["err_msg"].replace("P1", "P404")  # existence is not revealed either
    # A visit settled within RECENT_VISIT_DAYS still gives the hospital standing (HIS clients query 5206 with
    # the psn_no alone while printing the settlement); one registered earlier does not; a new, open one does.
    assert his.call("5206", {"data": {"psn_no": "P1", "cum_ym": year}})["infcode"] == 0
    long_ago = dt.datetime.now() - dt.timedelta(days=RECENT_VISIT_DAYS + 1)
    transact(db, lambda conn: conn.execute(S.visits.update().values(created_at=long_ago)))
    stale = his.call("5206", {"data": {"psn_no": "P1", "cum_ym": year}})
    assert stale["infcode"] == -1 and "无权查询" in stale["err_msg"], stale
    _visit(his)
    own = his.call("5206", {"data": {"psn_no": "P1", "cum_ym": year}})
    assert own["infcode"] == 0 and own["output"]["cuminfo"], own
    carded = stranger.call("5206", {"data": {"psn_no": "P1", "cum_ym": year, **_cred("P1")}})
    assert carded["infcode"] == 0 and carded["output"]["cuminfo"] == own["output"]["cuminfo"], carded
    forged = stranger.call("5206", {"data": {"psn_no": "P1", "cum_ym": year, **_cred("P2")}})
    assert forged["infcode"] == -1, forged


# -- 7. the policy's gates, the same on every path -----------------------------------------------
@pytest.fixture(scope="module")
def no_fund_engine(tmp_path_factory: pytest.TempPathFactory) -> SettlementEngine:
    """The bundled policies, with unfiled off-site care settled without fund (offsite_unfiled: no_fund)."""
    target = tmp_path_factory.mktemp("policies")
    for path in Path("src/yibao/data/policies").glob("*.yaml"):
        text = path.read_text(encoding="utf-8").replace("offsite_unfiled: refuse", "offsite_unfiled: no_fund")
        (target / path.name).write_text(text, encoding="utf-8")
    shutil.copystat("src/yibao/data/policies", target)
    return SettlementEngine(PolicyStore.load_dir(target), load_demo_catalog())


def test_the_gateway_honours_a_no_fund_gate(servers: Servers, no_fund_engine: SettlementEngine) -> None:
    db = servers.db
    far = _signed_in(db, servers.start(no_fund_engine), FAR)
    done = _settle(far, _visit(far))
    assert done["infcode"] == 0, done
    info = done["output"]["setlinfo"]
    assert info["fund_pay_sumamt"] == "0.00" and info["psn_cash_pay"] == "200.00", info
    # Under the bundled policy (refuse) the same visit is refused at registration, as before.
    strict = _signed_in(db, servers.start(), FAR)
    reg = strict.call("2201", {"data": {**_cred("P2"), "psn_no": "P2", "insutype": "310", "med_type": "11",
                                        "begntime": f"{TODAY} 09:00:00"}})  # fmt: skip
    assert reg["infcode"] == -1 and "未备案" in reg["err_msg"], reg


# -- amounts as JSON numbers, read exactly (issue 11, item 2) -------------------------------------
def test_amounts_sent_as_json_numbers_settle_exactly(servers: Servers) -> None:
    """C#/Newtonsoft and Java clients write decimals as JSON numbers (19.0, 114.3, 100, 1075.700): each is
    read as its exact decimal text, never a binary float, and totals are compared as money."""
    his = _signed_in(servers.db, servers.start())
    reg = his.call("2201", {"data": {**_cred("P1"), "psn_no": "P1", "insutype": "310", "med_type": "11",
                                     "begntime": f"{TODAY} 09:00:00"}})  # fmt: skip
    mdtrt_id = reg["output"]["data"]["mdtrt_id"]
    base = str(his.http.base_url).rstrip("/")
    lines = (f'[{{"feedetl_sn":"1","mdtrt_id":"{mdtrt_id}","psn_no":"P1","med_list_codg":"{CONSULT}",'
             f'"cnt":1,"pric":1000.0,"det_item_fee_sumamt":1000.0}},'
             f'{{"feedetl_sn":"2","mdtrt_id":"{mdtrt_id}","psn_no":"P1","med_list_codg":"{CONSULT}",'
             f'"cnt":3,"pric":25.1,"det_item_fee_sumamt":75.30}}]')  # fmt: skip
    upload = _numbers(base, his, "2204", '{"feedetail":' + lines + "}")
    assert upload["infcode"] == 0, upload
    body = f'{{"data":{{"psn_no":"P1","mdtrt_id":"{mdtrt_id}","acct_used_flag":"0","medfee_sumamt":1075.300}}}}'
    pre = _numbers(base, his, "2206", body)
    assert pre["infcode"] == 0 and pre["output"]["setlinfo"]["medfee_sumamt"] == "1075.30", pre
    wrong = _numbers(base, his, "2206", body.replace("1075.300", "1075.31"))
    assert wrong["infcode"] == -1 and "medfee_sumamt" in wrong["err_msg"], wrong
    inexact = _numbers(base, his, "2206", body.replace("1075.300", "1075.305"))
    assert inexact["infcode"] == -1 and "medfee_sumamt" in inexact["err_msg"], inexact


def _numbers(base: str, his: Client, infno: str, input_json: str) -> dict[str, Any]:
    envelope = json.dumps(his.envelope(infno, {}))
    raw = envelope[: envelope.rindex('"input": {}')] + '"input": ' + input_json + "}"
    return _raw(base, raw.encode(), his.headers())


def test_a_registration_needs_no_card_sn_and_a_wrong_one_is_refused(servers: Servers) -> None:
    """2201 carries no card_sn in the national interface: the card number counts as an ID number does."""
    his = _signed_in(servers.db, servers.start())
    plain = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "CP1", "psn_no": "P1", "insutype": "310", "med_type": "11",
             "begntime": f"{TODAY} 09:00:00"}  # fmt: skip
    reg = his.call("2201", {"data": plain})
    assert reg["infcode"] == 0, reg
    wrong = his.call("2201", {"data": {**plain, "card_sn": "SN-OTHER"}})
    assert wrong["infcode"] == -1 and "card_sn" in wrong["err_msg"], wrong
    mdtrt_id = reg["output"]["data"]["mdtrt_id"]
    line = {"feedetl_sn": "1", "mdtrt_id": mdtrt_id, "psn_no": "P1", "med_list_codg": CONSULT, "cnt": "1",
            "pric": "50.00", "det_item_fee_sumamt": "50.00"}  # fmt: skip
    assert his.call("2204", {"feedetail": [line]})["infcode"] == 0
    # Paying from the account still needs the PIN.
    no_pin = his.call("2207", {"data": {"psn_no": "P1", "mdtrt_id": mdtrt_id, "acct_used_flag": "1"}})
    assert no_pin["infcode"] == -1 and "PIN_REQUIRED" in no_pin["err_msg"], no_pin
    paid = his.call("2207", {"data": {"psn_no": "P1", "mdtrt_id": mdtrt_id, "acct_used_flag": "1", "pin": b.PIN}})
    assert paid["infcode"] == 0, paid


def test_an_institution_whose_pin_pads_verify_the_pin_settles_without_a_pin_field(servers: Servers) -> None:
    """2206/2207 carry no pin where the terminal verified it (institutions.pin_by_terminal); elsewhere the
    platform checks it, and a pin that is sent is checked everywhere."""
    db = servers.db
    his = _signed_in(db, servers.start())
    settle = {"psn_no": "P1", "acct_used_flag": "1", "insutype": "310"}
    refused = his.call("2207", {"data": {**settle, "mdtrt_id": _visit(his)}})
    assert refused["infcode"] == -1 and "PIN_REQUIRED" in refused["err_msg"], refused
    from typer.testing import CliRunner

    from yibao.cli import app

    switched = CliRunner().invoke(app, ["institutions", "pin-by-terminal", INST, "--on", "--database-url",
                                        db.url.render_as_string(hide_password=False)])  # fmt: skip
    assert switched.exit_code == 0 and "pin_by_terminal=on" in switched.output, switched.output
    paid = his.call("2207", {"data": {**settle, "mdtrt_id": _visit(his)}})
    assert paid["infcode"] == 0 and paid["output"]["setlinfo"]["acct_pay"] != "0.00", paid
    wrong = his.call("2207", {"data": {**settle, "mdtrt_id": _visit(his), "pin": "000000"}})
    assert wrong["infcode"] == -1 and "PIN" in wrong["err_msg"], wrong


def test_what_real_clients_send_is_tolerated(servers: Servers) -> None:
    """A GBK body (by its Content-Type), input as a JSON string, "null" for nothing and ISO 'T' date-times."""
    his = _signed_in(servers.db, servers.start())
    base = str(his.http.base_url).rstrip("/")
    data = {"data": {**_cred("P1"), "psn_no": "P1", "insutype": "310", "med_type": "11", "ipt_otp_no": "null",
                     "begntime": f"{TODAY}T09:30:00.000", "dr_name": "张医生"}}  # fmt: skip
    envelope = {**his.envelope("2201", {}), "input": json.dumps(data, ensure_ascii=False), "fixmedins_name": "测试医院"}
    body = json.dumps(envelope, ensure_ascii=False).encode("gbk")
    response = httpx.post(base + GATEWAY_PATH, content=body, timeout=30,
                          headers={**his.headers(), "content-type": "application/json; charset=GBK"})  # fmt: skip
    answer = response.json()
    assert answer["infcode"] == 0, answer
    mdtrt_id = answer["output"]["data"]["mdtrt_id"]
    assert answer["output"]["data"]["ipt_otp_no"] == mdtrt_id  # "null" was no value: the platform's number
    visit = transact(servers.db, lambda c: c.execute(select(S.visits).where(S.visits.c.mdtrt_id == mdtrt_id)).one())
    assert visit.begntime == f"{TODAY} 09:30:00"
    # The same GBK bytes read as UTF-8 (no charset named) are refused by name, not garbled into storage.
    garbled = _raw(base, body, his.headers())
    assert garbled["infcode"] == -1 and "UTF-8" in garbled["err_msg"], garbled
