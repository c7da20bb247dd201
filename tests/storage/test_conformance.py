"""Conformance: two public HIS clients, ported unchanged (conformance_clients.py), run the outpatient,
inpatient and pharmacy flows against the platform over real HTTP, on both databases.

* :class:`OpenHisClient` — newtouch-cloud/openhis (C#): ``x-tif-*`` key, indented Newtonsoft bodies with
  amounts as JSON numbers and ``null`` for every unset field, ISO ``T`` date-times, ``application/json``
  without charset, the single configured URL (and, in one test, its per-transaction path table).
* :class:`SdkClient` — hzg19700304/medical-insurance-interface-SDK (Python): ``_api_*`` HMAC-SHA1 key,
  ``/callService/{infno}``, ``text/plain; charset=utf-8``, UUID msgids, the string ``"null"``.

A step the platform refuses although the real client sends it is recorded and the flow goes on where it can;
the test then fails naming every such refusal (client, transaction, err_msg), so a flow is never weakened
to pass. Transactions still being added (:data:`PENDING`) have their own tests, which skip while the
platform answers ``不支持的交易编号`` and run as soon as it does not.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, NamedTuple

import pytest
from sqlalchemy import Connection, Engine

from storage import builders as b
from storage.conformance_clients import CALL_SERVICE, OPENHIS_PATHS, Answer, OpenHisClient, SdkClient
from storage.invariants import assert_invariants
from storage.test_gateway_e2e import start_server
from storage.test_smoke_settlement import ENGINE
from yibao.db import repository as repo
from yibao.gateway import create_app
from yibao.service.apikeys import issue_api_key
from yibao.service.registry import set_pin_by_terminal
from yibao.service.settlement import SettlementService
from yibao.service.uow import transact

HOSPITAL, PHARMACY = "H21060000001", "P21060000001"
PSN, CARD_NO, CARD_SN, INSUTYPE = "P1", "CP1", "SNP1", "310"
BALANCE_FEN = 80000
#: 住院诊查费 (甲类), 套间病房床位费 (丙类), 普通病房床位费(双人间) (甲类); a syrup of the pharmacy catalogue.
CONSULT, SUITE, BED, SYRUP = "001102000050000", "001109000010500", "001109000010200", "ZA06BBX0439010100465"
#: Transactions being added to the platform: their steps are separate tests, switched on by the platform itself.
PENDING = ("5201", "5202", "5205", "5302", "1201", "1301", "1312", "3203", "3204")
#: The setlinfo fields openhis binds and stores (Output_2207.cs ``setlinfo2207``).
OPENHIS_SETLINFO = (
    "mdtrt_id",
    "setl_id",
    "psn_no",
    "psn_name",
    "psn_cert_type",
    "certno",
    "gend",
    "naty",
    "brdy",
    "age",
    "insutype",
    "psn_type",
    "cvlserv_flag",
    "setl_time",
    "mdtrt_cert_type",
    "med_type",
    "medfee_sumamt",
    "fulamt_ownpay_amt",
    "overlmt_selfpay",
    "preselfpay_amt",
    "inscp_scp_amt",
    "act_pay_dedc",
    "hifp_pay",
    "pool_prop_selfpay",
    "cvlserv_pay",
    "hifes_pay",
    "hifmi_pay",
    "hifob_pay",
    "maf_pay",
    "oth_pay",
    "fund_pay_sumamt",
    "psn_part_amt",
    "acct_pay",
    "psn_cash_pay",
    "hosp_part_amt",
    "balc",
    "acct_mulaid_pay",
    "medins_setl_id",
    "clr_optins",
    "clr_way",
    "clr_type",
)
_DIGITS = re.compile(r"^\d+$", re.ASCII)
_MONEY = re.compile(r"^-?\d+\.\d{2}$", re.ASCII)


class Platform(NamedTuple):
    base: str
    db: Engine


@pytest.fixture
def platform(db: Engine) -> Iterator[Platform]:
    """The gateway on a loopback port: a hospital and a pharmacy (PIN pads verify the card password, as with
    openhis, which sends it encrypted in ``cainfo`` instead of a ``pin``) and one insured retiree."""

    def setup(conn: Connection) -> None:
        b.institution(conn, HOSPITAL)
        b.institution(conn, PHARMACY, kind="pharmacy")
        b.person(conn, PSN, balance_fen=BALANCE_FEN)

    transact(db, setup)
    for code in (HOSPITAL, PHARMACY):
        set_pin_by_terminal(db, fixmedins_code=code, enabled=True)
    base, stop = start_server(create_app(db, SettlementService(db, ENGINE, clock=dt.datetime.now)))
    yield Platform(base, db)
    stop()


def openhis(platform: Platform, code: str = HOSPITAL, **kw: Any) -> OpenHisClient:
    paasid, token = issue_api_key(platform.db, code, clock=dt.datetime.now, scheme="tif")
    return OpenHisClient(platform.base, paasid, token, code, **kw)


def sdk(platform: Platform, code: str = HOSPITAL) -> SdkClient:
    key, secret = issue_api_key(platform.db, code, clock=dt.datetime.now, scheme="api")
    return SdkClient(platform.base, key, secret, code)


# -- what every answer must be, as the clients read it ---------------------------------------------------
def check_envelope(answer: Answer) -> None:
    """The national answer: its fields and their types and formats."""
    for field in ("infcode", "inf_refmsgid", "refmsg_time", "respond_time", "err_msg", "output"):
        assert field in answer, (field, answer)
    assert isinstance(answer["infcode"], int) and not isinstance(answer["infcode"], bool), answer
    ref = answer["inf_refmsgid"]
    assert isinstance(ref, str) and len(ref) == 30 and _DIGITS.match(ref), ref
    for field in ("refmsg_time", "respond_time"):
        text = answer[field]
        assert isinstance(text, str) and len(text) == 17 and _DIGITS.match(text), (field, text)
        dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S")
    assert answer["respond_time"] >= answer["refmsg_time"]
    assert isinstance(answer["err_msg"], str)


class Run:
    """One client's flow: each answer checked; a refusal of what the real client sends is recorded (and the
    flow goes on where it can); :meth:`finish` fails naming them all."""

    def __init__(self, name: str, succeeded: Callable[[Answer], bool]) -> None:
        self.name, self.succeeded = name, succeeded
        self.refusals: list[str] = []

    def answer(self, infno: str, answer: Answer, *, required: bool = True) -> dict[str, Any] | None:
        check_envelope(answer)
        if self.succeeded(answer) and answer["infcode"] == 0:
            output = answer["output"]
            assert isinstance(output, dict), answer
            return output
        refusal = f"{self.name} {infno}: infcode {answer['infcode']} err_msg {answer['err_msg']!r}"
        if required:
            pytest.fail(f"{refusal}; earlier: {self.refusals}")
        self.refusals.append(refusal)
        return None

    def ok(self, infno: str, answer: Answer) -> dict[str, Any]:
        output = self.answer(infno, answer)
        assert output is not None
        return output

    def finish(self) -> None:
        assert not self.refusals, "\n".join(self.refusals)


def money(value: Any) -> Decimal:
    """An amount of an answer: a decimal string with two places (clients bind it to a string or decimal)."""
    assert isinstance(value, str) and _MONEY.match(value), value
    return Decimal(value)


def check_setlinfo(info: dict[str, Any], *, reversal: bool = False) -> None:
    """The split adds up; the time and identifiers are as a HIS stores them."""
    total, fund, own = money(info["medfee_sumamt"]), money(info["fund_pay_sumamt"]), money(info["psn_part_amt"])
    assert fund + own == total, info
    assert money(info["acct_pay"]) + money(info["psn_cash_pay"]) == own, info
    assert (total < 0) if reversal else (total > 0), info
    dt.datetime.strptime(info["setl_time"], "%Y-%m-%d %H:%M:%S")
    assert info["setl_id"] and len(info["setl_id"]) <= 30 and info["psn_no"] == PSN, info


def missing_fields(info: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    return [field for field in fields if field not in info]


def balances(db: Engine) -> tuple[int, int]:
    current, historical = transact(db, lambda conn: repo.balances(conn, PSN), readonly=True)
    return int(current), int(historical)


def pending(answer: Answer, infno: str) -> None:
    """Skip while the platform does not serve ``infno`` yet (the test runs once it does)."""
    if answer.get("infcode") != 0 and f"不支持的交易编号 infno={infno}" in str(answer.get("err_msg")):
        pytest.skip(f"{infno} is not served by the platform yet: {answer['err_msg']}")


def now_text(delta: dt.timedelta = dt.timedelta()) -> str:
    return f"{dt.datetime.now() + delta:%Y-%m-%d %H:%M:%S}"


# ======================================================================================================
# openhis
# ======================================================================================================
def openhis_outpatient_until_settled(his: OpenHisClient, run: Run) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """9001 → 1101 → 2201 → 2204 → 2206 → 2207: (mdtrt_id, the 2206 setlinfo, the 2207 answer's output)."""
    signed = run.ok("9001", his.sign_in())
    assert his.sign_no and signed["signinoutb"]["sign_no"] == his.sign_no
    dt.datetime.strptime(signed["signinoutb"]["sign_time"], "%Y-%m-%d %H:%M:%S")

    person = run.ok("1101", his.call("1101", his.input_1101("03", CARD_NO, CARD_SN)))
    assert person["baseinfo"]["psn_no"] == PSN
    insu = next(row for row in person["insuinfo"] if row["insutype"] == INSUTYPE)
    assert money(insu["balc"]) == Decimal(BALANCE_FEN) / 100
    his.insuplc_admdvs = insu["insuplc_admdvs"]  # what openhis passes as post.insuplc_admdvs from here on
    assert his.insuplc_admdvs == "210600"

    reg = run.ok(
        "2201",
        his.call("2201", his.input_2201(PSN, INSUTYPE, dt.datetime.now(), "03", CARD_NO, "MZ0001"), insutype=INSUTYPE),
    )
    mdtrt_id = reg["data"]["mdtrt_id"]
    assert reg["data"]["psn_no"] == PSN and reg["data"]["ipt_otp_no"] == "MZ0001" and len(mdtrt_id) <= 30

    when = now_text()
    lines = [
        his.feedetail_2204("1", mdtrt_id, PSN, CONSULT, 1.0, 1000.0, 1000.0, when),
        his.feedetail_2204("2", mdtrt_id, PSN, SUITE, 1.0, 75.7, 75.7, when),
    ]
    split = {row["feedetl_sn"]: row for row in run.ok("2204", his.call("2204", {"feedetail": lines}))["result"]}
    assert set(split) == {"1", "2"} and split["2"]["fulamt_ownpay_amt"] == "75.70"  # 丙类
    assert money(split["1"]["det_item_fee_sumamt"]) == Decimal("1000.00")

    pre_in = his.input_2206(PSN, "03", CARD_NO, 1075.7, mdtrt_id, "1", INSUTYPE)
    pre = run.ok("2206", his.call("2206", pre_in, insutype=INSUTYPE))["setlinfo"]
    assert (pre["medfee_sumamt"], pre["hifp_pay"]) == ("1075.70", "455.00"), pre  # (1000 − 300) × 65 %
    settled = run.ok(
        "2207", his.call("2207", his.input_2207(pre, PSN, "03", CARD_NO, mdtrt_id, "1", INSUTYPE), insutype=INSUTYPE)
    )
    return mdtrt_id, pre, settled


def test_openhis_outpatient_flow(platform: Platform) -> None:
    his = openhis(platform)
    run = Run("openhis", his.succeeded)
    mdtrt_id, pre, settled = openhis_outpatient_until_settled(his, run)
    sent = json.loads(his.sent[-1][2])
    assert isinstance(sent["input"]["data"]["medfee_sumamt"], float) and sent["sign_no"] == his.sign_no
    assert his.sent[-1][2].startswith(b'{\n  "infno": "2207"')  # the indented Newtonsoft body went out as such
    info = settled["setlinfo"]
    check_setlinfo(info)
    assert (info["hifp_pay"], info["acct_pay"], info["psn_cash_pay"]) == ("455.00", "620.70", "0.00"), info
    assert info["mdtrt_id"] == mdtrt_id and info["medfee_sumamt"] == pre["medfee_sumamt"]
    assert info["clr_type"] == "11" and info["insutype"] == INSUTYPE
    assert sum(money(row["fund_payamt"]) for row in settled["setldetail"]) >= money(info["fund_pay_sumamt"])
    assert balances(platform.db) == (BALANCE_FEN - 62070, 0)
    missing = missing_fields(info, OPENHIS_SETLINFO)
    if missing:
        run.refusals.append(f"openhis 2207: setlinfo lacks fields Output_2207 binds: {missing}")

    # 5203 / 5204 / 5206 as openhis sends them.
    got = run.answer("5203", his.call("5203", his.input_5203(PSN, info["setl_id"], mdtrt_id)), required=False)
    if got is not None:
        assert got["setlinfo"]["setl_id"] == info["setl_id"] and got["setlinfo"]["refd_setl_flag"] == "0"
        check_setlinfo(got["setlinfo"])
    fees = run.answer("5204", his.call("5204", his.input_5204(PSN, info["setl_id"], mdtrt_id)), required=False)
    if fees is not None:
        assert sorted(row["feedetl_sn"] for row in fees["feedetail"]) == ["1", "2"]
        assert sum(money(row["det_item_fee_sumamt"]) for row in fees["feedetail"]) == money(info["medfee_sumamt"])
    year = run.answer("5206", his.call("5206", his.input_5206(PSN, f"{dt.date.today():%Y%m}")), required=False)
    if year is not None:
        assert year["cuminfo"], year

    # 2208, then the visit is settled again, the HIS loses the answer and sends 2601 冲正 of that 2207.
    rev = run.ok("2208", his.call("2208", his.input_2208(info["setl_id"], mdtrt_id, PSN), insutype=INSUTYPE))
    check_setlinfo(rev["setlinfo"], reversal=True)
    assert (rev["setlinfo"]["hifp_pay"], rev["setlinfo"]["acct_pay"]) == ("-455.00", "-620.70")
    assert balances(platform.db) == (BALANCE_FEN, 0)
    pre = run.ok("2206", his.call("2206", his.input_2206(PSN, "03", CARD_NO, 1075.7, mdtrt_id, "1", INSUTYPE)))
    again = run.ok(
        "2207", his.call("2207", his.input_2207(pre["setlinfo"], PSN, "03", CARD_NO, mdtrt_id, "1", INSUTYPE))
    )
    lost = his.last_msgid
    assert balances(platform.db) == (BALANCE_FEN - 62070, 0)
    undone = run.ok("2601", his.call("2601", his.input_2601(PSN, lost, "2207")))["data"]
    assert undone["omsgid"] == lost and undone["oinfno"] == "2207", undone
    assert undone["setl_id"] != again["setlinfo"]["setl_id"] and money(undone["medfee_sumamt"]) == Decimal("-1075.70")
    assert balances(platform.db) == (BALANCE_FEN, 0)
    assert_invariants(platform.db)
    run.finish()


def test_openhis_inpatient_flow(platform: Platform) -> None:
    his = openhis(platform)
    run = Run("openhis", his.succeeded)
    run.ok("9001", his.sign_in())
    his.insuplc_admdvs = "210600"
    admitted = now_text(-dt.timedelta(days=3))
    adm = run.ok(
        "2401",
        his.call("2401", his.input_2401(PSN, INSUTYPE, admitted, "03", CARD_NO, "ZY0001", "I63.9"), insutype=INSUTYPE),
    )["result"]
    mdtrt_id = adm["mdtrt_id"]
    assert (adm["psn_no"], adm["ipt_otp_no"]) == (PSN, "ZY0001")
    lines = [
        his.feedetail_2301("XM1", mdtrt_id, PSN, CONSULT, "3", "100.000000", "300.00", admitted),
        his.feedetail_2301("XM2", mdtrt_id, PSN, BED, "10.0000", "100.000000", "1000.00", now_text()),
    ]
    split = run.ok("2301", his.call("2301", {"feedetail": lines}))["result"]
    assert sorted(row["feedetl_sn"] for row in split) == ["XM1", "XM2"]
    assert all(row["mdtrt_id"] == mdtrt_id for row in split)
    pre = run.ok(
        "2303",
        his.call(
            "2303", his.input_2303(PSN, "03", CARD_NO, "1300.00", mdtrt_id, "1", INSUTYPE, "0"), insutype=INSUTYPE
        ),
    )["setlinfo"]
    assert pre["medfee_sumamt"] == "1300.00"
    done = run.ok(
        "2304",
        his.call("2304", his.input_2304(pre, PSN, "03", CARD_NO, mdtrt_id, "1", INSUTYPE, "0"), insutype=INSUTYPE),
    )
    info = done["setlinfo"]
    check_setlinfo(info)
    assert info["medfee_sumamt"] == "1300.00" and info["clr_type"] == "21" and info["mdtrt_id"] == mdtrt_id
    assert (info["fund_pay_sumamt"], info["acct_pay"]) == (pre["fund_pay_sumamt"], pre["acct_pay"])
    acct_fen = int(money(info["acct_pay"]) * 100)
    assert balances(platform.db) == (BALANCE_FEN - acct_fen, 0)
    run.ok("2402", his.call("2402", his.input_2402(mdtrt_id, PSN, INSUTYPE, now_text(), "I63.9"), insutype=INSUTYPE))
    back = run.ok("2305", his.call("2305", his.input_2305(mdtrt_id, info["setl_id"], PSN)))["setlinfo"]
    check_setlinfo(back, reversal=True)
    assert money(back["medfee_sumamt"]) == -money(info["medfee_sumamt"])
    assert balances(platform.db) == (BALANCE_FEN, 0)
    assert_invariants(platform.db)
    run.finish()


def test_openhis_pharmacy_flow(platform: Platform) -> None:
    shop = openhis(platform, PHARMACY, fixmedins_name="测试药店")
    run = Run("openhis", shop.succeeded)
    run.ok("9001", shop.sign_in())
    shop.insuplc_admdvs = "210600"
    basket = [shop.drug_line("1", SYRUP, 2.0, 71.8)]
    purchase = shop.input_2101("03", CARD_NO, CARD_SN, PSN, INSUTYPE, 143.6, "1", basket)
    pre = run.ok("2101", shop.call("2101", purchase))
    check_setlinfo({**pre["setlinfo"], "setl_time": now_text(), "setl_id": "-"})
    assert pre["setlinfo"]["medfee_sumamt"] == "143.60"
    sold = run.ok("2102", shop.call("2102", purchase))
    info = sold["setlinfo"]
    check_setlinfo(info)
    assert (info["medfee_sumamt"], info["clr_type"]) == ("143.60", "41")
    assert (
        info["acct_pay"] == pre["setlinfo"]["acct_pay"]
        and info["fund_pay_sumamt"] == pre["setlinfo"]["fund_pay_sumamt"]
    )
    acct_fen = int(money(info["acct_pay"]) * 100)
    assert balances(platform.db) == (BALANCE_FEN - acct_fen, 0)
    back = run.ok("2103", shop.call("2103", {"data": {"setl_id": info["setl_id"], "psn_no": PSN}}))["setlinfo"]
    check_setlinfo(back, reversal=True)
    assert money(back["acct_pay"]) == -money(info["acct_pay"])
    assert balances(platform.db) == (BALANCE_FEN, 0)
    assert_invariants(platform.db)
    run.finish()


def test_openhis_service_paths(platform: Platform) -> None:
    """With its path table on (``GetPubWay``), openhis posts each transaction to its own service path: every
    one of this suite's transactions is routed (not ``未知的服务路径``) to the transaction it names."""
    his = openhis(platform, path_table=True)
    unknown = []
    for infno, path in OPENHIS_PATHS.items():
        answer = his.call(infno, {"data": {}})
        check_envelope(answer)
        if "未知的服务路径" in answer["err_msg"]:
            unknown.append(f"openhis {infno} {path}: {answer['err_msg']}")
    assert not unknown, "\n".join(unknown)


def test_openhis_settlement_without_terminal_pin(platform: Platform) -> None:
    """openhis sends the card password RSA-encrypted in ``cainfo`` and no ``pin``. The platform does not decrypt
    ``cainfo`` (docs/gateway.md, 密码校验): at an institution whose PIN pads do not verify the password, account
    payment is refused with PIN_REQUIRED and nothing is settled; the region switches pin_by_terminal on for such
    institutions (the main openhis flows above)."""
    set_pin_by_terminal(platform.db, fixmedins_code=HOSPITAL, enabled=False)
    his = openhis(platform)
    run = Run("openhis (PIN not by terminal)", his.succeeded)
    with pytest.raises(BaseException, match="PIN_REQUIRED"):
        openhis_outpatient_until_settled(his, run)
    assert_invariants(platform.db)


# ======================================================================================================
# medical-insurance-interface-SDK
# ======================================================================================================
def sdk_signed_in(client: SdkClient, run: Run) -> None:
    signed = run.ok(
        "9001",
        client.call(
            "9001", {"signIn": {"opter_no": client.fixmedins_code, "mac": "00:1c:42:5e:7a:02", "ip": "10.0.0.9"}}
        ),
    )
    # The organisation config now carries the sign_no (DataHelper.build_standard_request reads org_config['sign_no']).
    client.sign_no = signed["signinoutb"]["sign_no"]


def sdk_card() -> dict[str, Any]:
    return {"mdtrt_cert_type": "03", "mdtrt_cert_no": CARD_NO, "card_sn": CARD_SN}


def test_sdk_outpatient_flow(platform: Platform) -> None:
    client = sdk(platform)
    run = Run("sdk", client.succeeded)
    sdk_signed_in(client, run)
    assert client.sent[-1][0] == f"{CALL_SERVICE}/9001" and client.sent[-1][1]["Content-Type"].startswith("text/plain")
    person = run.ok(
        "1101", client.call("1101", {"data": {**sdk_card(), "psn_cert_type": "", "certno": "", "psn_name": ""}})
    )
    assert person["baseinfo"]["psn_no"] == PSN and isinstance(person["baseinfo"]["age"], int)
    reg = run.ok(
        "2201",
        client.call(
            "2201",
            {
                "data": {
                    **sdk_card(),
                    "psn_no": PSN,
                    "insutype": INSUTYPE,
                    "begntime": now_text(),
                    "ipt_otp_no": "MZ0002",
                    "atddr_no": "D001",
                    "dr_name": "王医生",
                    "dept_code": "A03",
                    "dept_name": "内科",
                    "caty": "A03",
                }
            },
        ),
    )
    mdtrt_id = reg["data"]["mdtrt_id"]
    lines = [
        {
            "feedetl_sn": "1",
            "mdtrt_id": mdtrt_id,
            "psn_no": PSN,
            "med_list_codg": CONSULT,
            "cnt": 1,
            "pric": 1000.0,
            "det_item_fee_sumamt": 1000.0,
            "fee_ocur_time": now_text(),
            "rx_circ_flag": "0",
        },
        {
            "feedetl_sn": "2",
            "mdtrt_id": mdtrt_id,
            "psn_no": PSN,
            "med_list_codg": SUITE,
            "cnt": 1,
            "pric": 75.70,
            "det_item_fee_sumamt": 75.70,
            "fee_ocur_time": now_text(),
            "rx_circ_flag": "0",
        },
    ]
    split = run.ok("2204", client.call("2204", {"feedetail": lines}))["result"]
    assert sorted(row["feedetl_sn"] for row in split) == ["1", "2"]
    settle = {
        "data": {
            "psn_no": PSN,
            "mdtrt_id": mdtrt_id,
            "mdtrt_cert_type": "03",
            "mdtrt_cert_no": CARD_NO,
            "med_type": "11",
            "medfee_sumamt": "1075.70",
            "psn_setlway": "01",
            "acct_used_flag": "0",
            "insutype": INSUTYPE,
        }
    }
    pre = run.ok("2206", client.call("2206", settle))["setlinfo"]
    assert (pre["hifp_pay"], pre["acct_pay"], pre["psn_cash_pay"]) == ("455.00", "0.00", "620.70"), pre
    settled = run.ok("2207", client.call("2207", settle))
    info = settled["setlinfo"]
    check_setlinfo(info)
    assert (info["hifp_pay"], info["psn_cash_pay"]) == ("455.00", "620.70") and balances(platform.db) == (
        BALANCE_FEN,
        0,
    )

    got = run.answer("5203", client.call("5203", {"data": {"psn_no": PSN, "setl_id": info["setl_id"]}}), required=False)
    if got is not None:
        assert got["setlinfo"]["medfee_sumamt"] == "1075.70"
    fees = run.answer(
        "5204",
        client.call("5204", {"data": {"psn_no": PSN, "setl_id": info["setl_id"], "mdtrt_id": mdtrt_id}}),
        required=False,
    )
    if fees is not None:
        assert len(fees["feedetail"]) == 2
    year = run.answer(
        "5206", client.call("5206", {"data": {"psn_no": PSN, "cum_ym": f"{dt.date.today():%Y%m}"}}), required=False
    )
    if year is not None:
        assert year["cuminfo"], year

    rev = run.ok(
        "2208", client.call("2208", {"data": {"psn_no": PSN, "mdtrt_id": mdtrt_id, "setl_id": info["setl_id"]}})
    )
    check_setlinfo(rev["setlinfo"], reversal=True)
    again = run.ok("2207", client.call("2207", settle))["setlinfo"]
    lost = client.last_msgid
    undone = run.ok("2601", client.call("2601", {"data": {"psn_no": PSN, "omsgid": lost, "oinfno": "2207"}}))["data"]
    assert undone["omsgid"] == lost and money(undone["medfee_sumamt"]) == -money(again["medfee_sumamt"])
    assert_invariants(platform.db)
    run.finish()


def test_sdk_inpatient_flow(platform: Platform) -> None:
    client = sdk(platform)
    run = Run("sdk", client.succeeded)
    sdk_signed_in(client, run)
    admitted = now_text(-dt.timedelta(days=2))
    adm = run.ok(
        "2401",
        client.call(
            "2401",
            {
                "mdtrtinfo": {
                    **sdk_card(),
                    "psn_no": PSN,
                    "insutype": INSUTYPE,
                    "med_type": "21",
                    "begntime": admitted,
                    "ipt_no": "ZY0002",
                    "atddr_no": "D002",
                    "chfpdr_name": "李医生",
                    "adm_diag_dscr": "脑梗死",
                    "adm_dept_codg": "A03.06",
                    "adm_dept_name": "神经内科",
                    "adm_bed": "3",
                    "dscg_maindiag_code": "I63.9",
                    "dscg_maindiag_name": "脑梗死",
                },
                "diseinfo": [
                    {
                        "psn_no": PSN,
                        "diag_type": "1",
                        "maindiag_flag": "1",
                        "diag_srt_no": 1,
                        "diag_code": "I63.9",
                        "diag_name": "脑梗死",
                        "diag_dept": "神经内科",
                        "dise_dor_no": "D002",
                        "dise_dor_name": "李医生",
                        "diag_time": admitted,
                    }
                ],
            },
        ),
    )["result"]
    mdtrt_id = adm["mdtrt_id"]
    lines = [
        {
            "feedetl_sn": "1",
            "mdtrt_id": mdtrt_id,
            "psn_no": PSN,
            "med_type": "21",
            "fee_ocur_time": admitted,
            "med_list_codg": CONSULT,
            "medins_list_codg": "ZC01",
            "det_item_fee_sumamt": 300.0,
            "cnt": 3,
            "pric": 100.0,
        },
        {
            "feedetl_sn": "2",
            "mdtrt_id": mdtrt_id,
            "psn_no": PSN,
            "med_type": "21",
            "fee_ocur_time": now_text(),
            "med_list_codg": BED,
            "medins_list_codg": "CW02",
            "det_item_fee_sumamt": 862.0,
            "cnt": 10,
            "pric": 86.2,
        },
    ]
    run.ok("2301", client.call("2301", {"feedetail": lines}))
    pay = {
        "psn_no": PSN,
        "mdtrt_id": mdtrt_id,
        "mdtrt_cert_type": "03",
        "mdtrt_cert_no": CARD_NO,
        "medfee_sumamt": "1162.00",
        "psn_setlway": "01",
        "acct_used_flag": "0",
        "insutype": INSUTYPE,
        "mid_setl_flag": "0",
    }
    pre = run.ok("2303", client.call("2303", {"data": pay}))["setlinfo"]
    done = run.ok("2304", client.call("2304", {"data": pay}))["setlinfo"]
    check_setlinfo(done)
    assert done["medfee_sumamt"] == pre["medfee_sumamt"] == "1162.00" and done["acct_pay"] == "0.00"
    run.ok(
        "2402",
        client.call(
            "2402",
            {
                "dscginfo": {
                    "mdtrt_id": mdtrt_id,
                    "psn_no": PSN,
                    "insutype": INSUTYPE,
                    "endtime": now_text(),
                    "dscg_way": "1",
                }
            },
        ),
    )
    back = run.ok(
        "2305", client.call("2305", {"data": {"mdtrt_id": mdtrt_id, "setl_id": done["setl_id"], "psn_no": PSN}})
    )["setlinfo"]
    check_setlinfo(back, reversal=True)
    assert_invariants(platform.db)
    run.finish()


def test_sdk_pharmacy_flow(platform: Platform) -> None:
    client = sdk(platform, PHARMACY)
    run = Run("sdk", client.succeeded)
    sdk_signed_in(client, run)
    purchase = {
        "data": {
            **sdk_card(),
            "psn_no": PSN,
            "insutype": INSUTYPE,
            "med_type": "41",
            "medfee_sumamt": 143.6,
            "acct_used_flag": "0",
            "psn_setlway": "01",
        },
        "feedetail": [
            {"feedetl_sn": "1", "med_list_codg": SYRUP, "cnt": 2, "pric": 71.8, "det_item_fee_sumamt": 143.6}
        ],
    }
    pre = run.ok("2101", client.call("2101", purchase))["setlinfo"]
    sold = run.ok("2102", client.call("2102", purchase))["setlinfo"]
    check_setlinfo(sold)
    assert sold["medfee_sumamt"] == pre["medfee_sumamt"] == "143.60" and sold["psn_cash_pay"] == pre["psn_cash_pay"]
    back = run.ok("2103", client.call("2103", {"data": {"setl_id": sold["setl_id"], "psn_no": PSN}}))["setlinfo"]
    check_setlinfo(back, reversal=True)
    assert balances(platform.db) == (BALANCE_FEN, 0)
    assert_invariants(platform.db)
    run.finish()


def test_sdk_call_path_sends_no_sign_no(platform: Platform) -> None:
    """``SDK.call`` never forwards a sign_no: every envelope carries the string ``"null"``. The national rules
    (``sign_no_required``) refuse such a business call by name; 9001 itself passes."""
    client = sdk(platform)
    run = Run('sdk (SDK.call, sign_no "null")', client.succeeded)
    run.ok("9001", client.call("9001", {"signIn": {"opter_no": client.fixmedins_code, "mac": "-", "ip": "-"}}))
    answer = client.call("1101", {"data": sdk_card()})
    check_envelope(answer)
    assert json.loads(client.sent[-1][2])["sign_no"] == "null"
    assert answer["infcode"] == -1 and "sign_no" in answer["err_msg"] and "9001" in answer["err_msg"], answer


# ======================================================================================================
# Transactions being added (PENDING): each skips while the platform answers 不支持的交易编号.
# ======================================================================================================
@pytest.mark.parametrize("infno", ["5201", "5202", "5205", "5302"])
def test_openhis_pending_queries(platform: Platform, infno: str) -> None:
    his = openhis(platform)
    run = Run("openhis", his.succeeded)
    mdtrt_id, _, _settled = openhis_outpatient_until_settled(his, run)
    today = dt.date.today()
    inputs = {
        "5201": his.input_5201(PSN, f"{today} 00:00:00", f"{today} 23:59:59", mdtrt_id),
        "5202": his.input_5202(mdtrt_id, PSN),
        "5205": his.input_5205(PSN, f"{today - dt.timedelta(days=30)} 00:00:00", f"{today} 23:59:59"),
        "5302": his.input_5302(PSN, "03"),
    }
    answer = his.call(infno, inputs[infno])
    pending(answer, infno)
    output = run.ok(infno, answer)
    if infno == "5201":
        rows = output.get("mdtrtinfo") or output.get("data") or []
        assert any(row.get("mdtrt_id") == mdtrt_id for row in rows), output
    run.finish()


@pytest.mark.parametrize("kind", ["openhis", "sdk"])
def test_catalogue_and_clearing(platform: Platform, kind: str) -> None:
    """1201, 1312 and 3203/3204 as each client sends them (openhis: Input_1201/1312/3203/3204 models, ``page_num``
    and ``page_size`` strings, 3203 amounts and ``psntime`` as decimals)."""
    if kind == "openhis":
        his: OpenHisClient | SdkClient = openhis(platform)
        run = Run(kind, his.succeeded)
        run.ok("9001", his.sign_in())  # type: ignore[union-attr]
    else:
        his = sdk(platform)
        run = Run(kind, his.succeeded)
        sdk_signed_in(his, run)
    found = his.call(
        "1201", {"medinsinfo": {"fixmedins_type": "1", "fixmedins_code": HOSPITAL, "fixmedins_name": None}}
    )
    pending(found, "1201")
    rows = run.ok("1201", found)["medinsinfo"]
    assert [row["fixmedins_code"] for row in rows] == [HOSPITAL]
    query: dict[str, Any] = {
        "query_date": f"{dt.date.today()}",
        "hilist_code": CONSULT,
        "insu_admdvs": "210600",
        "begndate": None,
        "hilist_name": None,
        "wubi": None,
        "pinyin": None,
        "med_chrgitm_type": None,
        "chrgitm_lv": None,
        "lmt_used_flag": None,
        "list_type": None,
        "med_use_flag": None,
        "matn_used_flag": None,
        "hilist_use_type": None,
        "lmt_cpnd_type": None,
        "vali_flag": None,
        "updt_time": f"{dt.date.today()}",
        "page_num": "1",
        "page_size": "10",
    }
    if kind == "sdk":
        query = {k: v for k, v in query.items() if v is not None} | {"page_num": 1, "page_size": 10}
    listed = his.call("1312", {"data": query})
    pending(listed, "1312")
    catalogue = run.ok("1312", listed)
    assert catalogue["data"] and all(row["hilist_code"] == CONSULT for row in catalogue["data"])
    assert catalogue["recordCounts"] >= 1
    # A settlement to clear (cash only), then 3203 / 3204.
    if kind == "openhis":
        assert isinstance(his, OpenHisClient)
        his.insuplc_admdvs = "210600"
        reg = run.ok("2201", his.call("2201", his.input_2201(PSN, INSUTYPE, dt.datetime.now(), "03", CARD_NO, "MZ9")))
        mdtrt_id = reg["data"]["mdtrt_id"]
        run.ok(
            "2204",
            his.call(
                "2204", {"feedetail": [his.feedetail_2204("1", mdtrt_id, PSN, CONSULT, 1.0, 100.0, 100.0, now_text())]}
            ),
        )
        pre = run.ok("2206", his.call("2206", his.input_2206(PSN, "03", CARD_NO, 100.0, mdtrt_id, "0", INSUTYPE)))
        info = run.ok(
            "2207", his.call("2207", his.input_2207(pre["setlinfo"], PSN, "03", CARD_NO, mdtrt_id, "0", INSUTYPE))
        )["setlinfo"]
    else:
        reg = run.ok(
            "2201",
            his.call("2201", {"data": {**sdk_card(), "psn_no": PSN, "insutype": INSUTYPE, "begntime": now_text()}}),
        )
        mdtrt_id = reg["data"]["mdtrt_id"]
        run.ok(
            "2204",
            his.call(
                "2204",
                {
                    "feedetail": [
                        {
                            "feedetl_sn": "1",
                            "mdtrt_id": mdtrt_id,
                            "psn_no": PSN,
                            "med_list_codg": CONSULT,
                            "cnt": 1,
                            "pric": 100.0,
                            "det_item_fee_sumamt": 100.0,
                        }
                    ]
                },
            ),
        )
        info = run.ok(
            "2207",
            his.call(
                "2207",
                {
                    "data": {
                        "psn_no": PSN,
                        "mdtrt_id": mdtrt_id,
                        "medfee_sumamt": "100.00",
                        "acct_used_flag": "0",
                        "insutype": INSUTYPE,
                    }
                },
            ),
        )["setlinfo"]
    today = f"{dt.date.today()}"
    amounts = {
        "medfee_sumamt": info["medfee_sumamt"],
        "med_sumfee": info["inscp_scp_amt"],
        "fund_appy_sum": info["fund_pay_sumamt"],
        "cash_payamt": info["psn_cash_pay"],
        "acct_pay": info["acct_pay"],
    }
    if kind == "openhis":  # data3203: decimals (JSON numbers), psntime a decimal too
        clearing: dict[str, Any] = {
            "clr_type": "11",
            "clr_way": "1",
            "setlym": f"{dt.date.today():%Y%m}",
            "psntime": 1.0,
            **{k: float(v) for k, v in amounts.items()},
            "begndate": today,
            "enddate": today,
        }
    else:
        clearing = {
            "clr_type": "11",
            "clr_way": "1",
            "setlym": f"{dt.date.today():%Y%m}",
            "psntime": "1",
            **amounts,
            "begndate": today,
            "enddate": today,
        }
    applied = his.call("3203", {"data": clearing})
    pending(applied, "3203")
    event = run.ok("3203", applied)["result"]["clr_appy_evt_id"]
    assert isinstance(event, str) and len(event) == 30
    revoked = his.call("3204", {"data": {"clr_appy_evt_id": event}})
    pending(revoked, "3204")
    run.ok("3204", revoked)
    run.finish()
