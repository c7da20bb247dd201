"""Worked envelopes of every gateway transaction, taken from a real run: writes docs/gateway-envelopes.md.

    .venv/bin/python scripts/gateway_envelopes.py [--output docs/gateway-envelopes.md]

A fresh SQLite database in a temporary directory is migrated (``yibao.db.upgrade``) and seeded with the demo
region exactly as ``yibao db seed-demo`` does it (``yibao.seed.seed_demo``, 1,000 persons, then the demo
institutions' published keys of both schemes from ``service.apikeys.demo_key``). The gateway app
(``create_app``) is then driven in-process over httpx's ASGI transport by two HIS clients — a hospital
signing with its ``x-tif-*`` demo key and a pharmacy signing with its ``_api_*`` demo key — through the
outpatient, chronic-disease, inpatient, pharmacy, filing, rule-check, query, catalogue, reconciliation and
clearing flows. Every request is sent exactly as it is printed, and every answer is printed as it came back.

The run is deterministic: one clock (fixed start, advanced by the script and by 1 ms per read) serves the
seeding, the settlement service, the gateway and the signature window; msgids, nonces, settlement ids and
the server's process number are fixed. tests/storage/test_gateway_envelopes_doc.py regenerates the file and
compares it with the committed one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import httpx

from yibao.catalog import load_demo_catalog
from yibao.db import make_engine, upgrade
from yibao.engine import Engine as SettlementEngine
from yibao.gateway import create_app
from yibao.gateway.app import GATEWAY_PATH, HANDLERS
from yibao.gateway.signature import sign, signing_string, tif_sign
from yibao.policy import PolicyStore
from yibao.seed import DEMO_PIN, DemoPerson, DemoSummary, seed_demo
from yibao.service.apikeys import demo_key, issue_api_key
from yibao.service.settlement import SettlementService

__all__ = ["DEFAULT_OUTPUT", "TRANSACTIONS", "generate", "main", "render"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "gateway-envelopes.md"
#: When the run starts (Beijing time, as the platform's clock reads it); the demo region is seeded then.
START = dt.datetime(2026, 3, 2, 7, 0, 0)
#: The server's process number as inf_refmsgid carries it (its 4 digits after the time).
PROCESS_NUMBER = 1
#: Where `yibao serve` listens by default: the Host the requests name.
BASE_URL = "http://127.0.0.1:8000"
#: Persons the demo region seeds (the `yibao db seed-demo` default): the named demo persons' cards depend on it.
SEED_COUNT = 1000
HOSPITAL = "H21060200001"  # 丹东市中心医院, 三级甲等, x-tif-* key (as `yibao demo-curl`)
PHARMACY = "P21060200001"  # 国大药房丹东元宝店, _api_* key
_BEIJING = dt.timezone(dt.timedelta(hours=8))

#: Every transaction the gateway serves, in the order of the document: (infno, national name, what it does).
TRANSACTIONS: tuple[tuple[str, str, str], ...] = (
    ("9001", "签到", "Signs an operator in and returns the `sign_no` every later envelope carries."),
    ("9002", "签退", "Signs the operator out: the `sign_no` is refused from then on."),
    ("1101", "人员信息获取", "Identifies the person behind a credential (here the social security card) and "
     "returns the base data, the insurances with the personal-account balance and the special identities."),
    ("1201", "医药机构信息获取", "Lists the designated institutions of a type (1 hospitals, 2 pharmacies), "
     "optionally narrowed by a name fragment or a code."),
    ("1312", "医保目录信息查询", "Pages through the catalogue the settlement engine settles against."),
    ("1301", "西药中成药目录下载", "Not served: answered `infcode` -1 pointing to 1312 (see docs/gateway.md)."),
    ("9102", "文件下载", "Not served: answered `infcode` -1 pointing to 1312 (see docs/gateway.md)."),
    ("2001", "人员待遇享受检查", "Checks whether the person may receive benefits for the planned visit; "
     "every reason against it is listed in `trtinfo`."),
    ("2201", "门诊挂号", "Registers an outpatient visit for the person the credential names and returns its "
     "`mdtrt_id`."),
    ("2202", "门诊挂号撤销", "Cancels a registration that has no settlement."),
    ("2203", "门诊就诊信息上传", "Records the visit's medical type and main diagnosis."),
    ("2204", "门诊费用明细信息上传", "Uploads fee lines to the open visit and answers each line's split "
     "(full self-pay, over-limit, pre-self-pay, eligible amount)."),
    ("2205", "门诊费用明细信息撤销", "Revokes one uploaded line (or every line, `feedetl_sn` `0000`)."),
    ("2206", "门诊预结算", "Computes the settlement of the visit's lines without committing anything."),
    ("2207", "门诊结算", "Settles the visit's lines: fund, personal account and cash, booked in one unit of work."),
    ("2208", "门诊结算撤销", "Reverses an outpatient settlement (by `setl_id`); the visit is open again."),
    ("2601", "冲正交易", "Undoes an earlier message of the institution by its `omsgid` (here a 2207 whose answer "
     "the HIS never received)."),
    ("2401", "入院办理", "Admits the person (inpatient visit) and returns the admission's `mdtrt_id`."),
    ("2404", "入院办理撤销", "Cancels an admission that has no settlement and no active fee line."),
    ("2301", "住院费用明细上传", "Uploads inpatient fee lines and answers each line's split."),
    ("2302", "住院费用明细撤销", "Revokes inpatient fee lines not yet settled."),
    ("2303", "住院预结算", "Computes the settlement of the lines not yet settled, committing nothing."),
    ("2304", "住院结算", "Settles the lines not yet settled: `mid_setl_flag` 1 is an interim settlement "
     "(the admission stays open), 0 the final one."),
    ("2305", "住院结算撤销", "Reverses the admission's newest standing settlement; its lines become settleable "
     "again."),
    ("2402", "出院办理", "Discharges the person after the final settlement."),
    ("2405", "出院撤销", "Cancels the discharge once the final settlement has been reversed; the admission is "
     "open again."),
    ("2101", "药店预结算", "Computes a pharmacy purchase (`med_type` 41) without committing anything."),
    ("2102", "药店结算", "Settles a pharmacy purchase."),
    ("2103", "药店结算撤销", "Reverses a pharmacy settlement (by `setl_id`)."),
    ("2501", "异地就医备案", "Files an off-site care registration (就医地 `mdtrtarea_admdvs`, type, period) on the "
     "person's behalf."),
    ("2502", "异地就医备案撤销", "Cancels an off-site filing by its `trt_dcla_detl_sn`."),
    ("2503", "人员慢特病备案", "Files a chronic or special disease (`opsp_dise_code`) on the person's behalf."),
    ("2504", "人员慢特病备案撤销", "Cancels a disease filing by its `trt_dcla_detl_sn`."),
    ("3101", "明细审核事前事中分析服务", "Checks a visit's active fee lines against the catalogue's restrictions "
     "and price caps and lists every violation."),
    ("3201", "医药机构费用结算对总账", "Reconciles the institution's totals for a period against the platform's "
     "settlement and reversal rows."),
    ("3202", "医药机构费用结算对明细账", "Reconciles settlement by settlement and answers the rows that differ "
     "(here the HIS left a reversal out)."),
    ("3203", "清算申请", "Applies for the clearing of a period; the declared totals must equal the platform's."),
    ("3204", "清算申请撤销", "Revokes a clearing application the agency has not taken up."),
    ("3203A", "清算申请 (省级规范写法)", "The same as 3203 under the code some provincial specifications use."),
    ("3204A", "清算申请撤销 (省级规范写法)", "The same as 3204 under the code some provincial specifications use."),
    ("5201", "就诊信息查询", "Lists the institution's visits of a person that began in a period."),
    ("5202", "诊断信息查询", "Answers the diagnosis of one of the institution's visits."),
    ("5203", "结算信息查询", "Answers one of the institution's settlements as stored."),
    ("5204", "费用明细查询", "Answers the fee lines of one of the institution's settlements, as split."),
    ("5205", "人员慢特病用药记录查询", "Lists the drug lines of the person's chronic-disease settlements at any "
     "institution in a period."),
    ("5206", "人员累计信息查询", "Answers the person's year-to-date accumulators (deductible paid, fund paid, "
     "visits …)."),
    ("5301", "人员慢特病备案查询", "Lists the person's chronic or special disease filings."),
    ("5302", "人员定点信息查询", "Lists the person's designated institutions for a business type (always empty: "
     "the platform records no such filing)."),
    ("5303", "在院信息查询", "Lists the person's open admissions wherever they are."),
)  # fmt: skip


# -- the clock -----------------------------------------------------------------------------------------
class Clock:
    """One clock for everything: the script moves it; every read advances it by one millisecond, so that
    the answers' times are distinct and ordered as in a real run, yet the same in every run."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        now = self.now
        self.now += dt.timedelta(milliseconds=1)
        return now

    def peek(self) -> dt.datetime:
        return self.now

    def set(self, when: dt.datetime) -> None:
        assert when >= self.now, (when, self.now)
        self.now = when

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)

    def epoch_ms(self) -> int:
        """The clock's time (Beijing) as Unix milliseconds, whatever the local time zone is."""
        return int(self.now.replace(tzinfo=_BEIJING).timestamp() * 1000)


def _ids() -> Callable[[], str]:
    """Settlement ids as SettlementService hands them out (24 hex digits), from a counter."""
    count = iter(range(1, 1_000_000))
    return lambda: hashlib.sha256(f"yibao-envelopes|{next(count)}".encode()).hexdigest()[:24]


# -- one exchange ----------------------------------------------------------------------------------------
class Exchange(NamedTuple):
    step: int
    infno: str
    note: str  # what this call is, in the run
    shown: bool  # printed in full under its transaction
    headers: dict[str, str]
    body: bytes
    status: int
    answer: dict[str, Any]


class His:
    """A HIS of one institution: builds the national envelope, signs it with its demo key, sends it."""

    def __init__(self, run: Run, fixmedins_code: str, fixmedins_name: str, scheme: str, opter: str,
                 opter_name: str) -> None:  # fmt: skip
        self.run, self.code, self.name, self.scheme = run, fixmedins_code, fixmedins_name, scheme
        self.opter, self.opter_name = opter, opter_name
        self.access_key, self.secret = demo_key(fixmedins_code, scheme)
        self.sign_no = ""
        self.sequence = 0

    def headers(self, msgid: str) -> dict[str, str]:
        clock = self.run.clock
        if self.scheme == "tif":
            timestamp = str(clock.epoch_ms() // 1000)
            nonce = str(uuid.uuid5(uuid.NAMESPACE_URL, f"yibao-envelopes/{msgid}"))
            return {"Content-Type": "application/json; charset=utf-8", "x-tif-paasid": self.access_key,
                    "x-tif-timestamp": timestamp, "x-tif-nonce": nonce,
                    "x-tif-signature": tif_sign(self.secret, timestamp, nonce)}  # fmt: skip
        fields = {"_api_name": "hssServives", "_api_version": "1.0.0", "_api_timestamp": str(clock.epoch_ms()),
                  "_api_access_key": self.access_key}  # fmt: skip
        signature = sign(self.secret, fields)
        return {"Content-Type": "application/json; charset=utf-8", **fields, "_api_signature": signature}

    def call(self, infno: str, data: Mapping[str, Any], note: str, *, insuplc: str = "210600", show: bool = False,
             pause: float = 5.0) -> dict[str, Any]:  # fmt: skip
        """Send one transaction; returns the answer. ``insuplc``: the person's insured region ("" when the
        message concerns no person)."""
        clock = self.run.clock
        clock.advance(pause)
        self.sequence += 1
        now = clock.peek()
        msgid = f"{self.code}{now:%Y%m%d%H%M%S}{self.sequence:04d}"
        envelope = {
            "infno": infno, "msgid": msgid, "mdtrtarea_admvs": "210600", "insuplc_admdvs": insuplc,
            "recer_sys_code": "YBXT", "dev_no": "", "dev_safe_info": "", "cainfo": "", "signtype": "", "infver": "V1.0",
            "opter_type": "1", "opter": self.opter, "opter_name": self.opter_name,
            "inf_time": f"{now:%Y-%m-%d %H:%M:%S}", "fixmedins_code": self.code, "fixmedins_name": self.name,
            "sign_no": self.sign_no, "input": data,
        }  # fmt: skip
        body = json.dumps(envelope, ensure_ascii=False, indent=2).encode()
        headers = self.headers(msgid)
        response = self.run.post(headers, body)
        answer: dict[str, Any] = json.loads(response.content)
        self.run.record(infno, note, show, headers, body, response.status_code, answer)
        if response.status_code != 200 or (answer.get("infcode") != 0 and infno not in _REFUSED):
            raise RuntimeError(f"step {len(self.run.exchanges)} {infno} ({note}) answered {answer}")
        return answer

    @property
    def last_msgid(self) -> str:
        return str(json.loads(self.run.exchanges[-1].body)["msgid"])


#: Transactions answered infcode -1 on purpose (not served).
_REFUSED = frozenset({"1301", "9102"})


class Run:
    """The platform (database, service, app) and the exchanges made with it."""

    def __init__(self, workdir: Path) -> None:
        self.clock = Clock(START)
        self.db = make_engine(f"sqlite:///{workdir / 'yibao.db'}", pool_size=2)
        upgrade(self.db)
        policies = PolicyStore.load_dir(Path(str(resources.files("yibao").joinpath("data/policies"))))
        self.summary = seed_demo(self.db, policies, clock=self.clock, count=SEED_COUNT)
        for scheme in ("api", "tif"):  # as `yibao db seed-demo` issues them
            for inst in self.summary.institutions:
                access_key, secret = demo_key(inst.fixmedins_code, scheme)
                issue_api_key(self.db, inst.fixmedins_code, clock=self.clock, access_key=access_key, secret=secret,
                              scheme=scheme)  # fmt: skip
        service = SettlementService(self.db, SettlementEngine(policies, load_demo_catalog()), clock=self.clock,
                                    new_id=_ids())  # fmt: skip
        # inf_refmsgid carries the server process's number (its pid): fixed here for a reproducible document.
        with mock.patch("os.getpid", return_value=PROCESS_NUMBER):
            app = create_app(self.db, service, clock=self.clock, ms_clock=self.clock.epoch_ms)
        self.loop = asyncio.Runner()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
        self.exchanges: list[Exchange] = []

    def post(self, headers: dict[str, str], body: bytes) -> httpx.Response:
        return self.loop.run(self.http.post(GATEWAY_PATH, content=body, headers=headers))

    def record(self, infno: str, note: str, shown: bool, headers: dict[str, str], body: bytes, status: int,
               answer: dict[str, Any]) -> None:  # fmt: skip
        self.exchanges.append(Exchange(len(self.exchanges) + 1, infno, note, shown, headers, body, status, answer))

    def close(self) -> None:
        self.loop.run(self.http.aclose())
        self.loop.close()
        self.db.dispose()

    def person(self, name: str) -> DemoPerson:
        return next(p for p in self.summary.persons if p.name == name)

    def institution_name(self, code: str) -> str:
        return next(i.name for i in self.summary.institutions if i.fixmedins_code == code)


# -- the HIS's own records, for reconciliation and clearing -----------------------------------------
class Booked(NamedTuple):
    """One settlement or reversal as the HIS stored it from the answer."""

    setl_id: str
    clr_type: str
    amounts: dict[str, str]
    reversal: bool


_BOOKED_FIELDS = ("medfee_sumamt", "inscp_scp_amt", "fund_pay_sumamt", "psn_cash_pay", "acct_pay")


def _book(ledger: list[Booked], setlinfo: Mapping[str, Any], *, reversal: bool = False) -> None:
    ledger.append(Booked(str(setlinfo["setl_id"]), str(setlinfo["clr_type"]),
                         {key: str(setlinfo[key]) for key in _BOOKED_FIELDS}, reversal))  # fmt: skip


def _total(rows: list[Booked], key: str) -> str:
    return f"{sum((Decimal(r.amounts[key]) for r in rows), Decimal('0.00')):.2f}"


# -- the flows ---------------------------------------------------------------------------------------
def _card(person: DemoPerson) -> dict[str, str]:
    return {"mdtrt_cert_type": "03", "mdtrt_cert_no": person.card_no, "card_sn": person.card_sn}


def _fee(sn: str, mdtrt_id: str, psn_no: str, code: str, local: str, name: str, cnt: str, pric: str,
         when: str, **extra: str) -> dict[str, Any]:  # fmt: skip
    amount = f"{Decimal(cnt) * Decimal(pric):.2f}"
    return {
        "feedetl_sn": sn, "mdtrt_id": mdtrt_id, "psn_no": psn_no, "chrg_bchno": "0", "dise_codg": "",
        "rxno": "", "rx_circ_flag": "0", "fee_ocur_time": when, "med_list_codg": code, "medins_list_codg": local,
        "medins_list_name": name, "det_item_fee_sumamt": amount, "cnt": cnt, "pric": pric, "sin_dos_dscr": "",
        "used_frqu_dscr": "", "prd_days": "", "medc_way_dscr": "", "bilg_dept_codg": "0301",
        "bilg_dept_name": "内科", "bilg_dr_codg": "D0017", "bilg_dr_name": "刘医生", "hosp_appr_flag": "1",
        **extra,
    }  # fmt: skip


def _flows(run: Run) -> None:
    clock = run.clock
    inst = run.institution_name
    his = His(run, HOSPITAL, inst(HOSPITAL), "tif", "S0012", "收费员张红")
    shop = His(run, PHARMACY, inst(PHARMACY), "api", "Y003", "药师王梅")
    retiree, employee, chronic = run.person("李秀英"), run.person("张伟"), run.person("孙强")
    holder, spouse, child, resident = (run.person(n) for n in ("王建国", "刘丽", "王子涵", "陈晨"))
    ledger: list[Booked] = []
    day = START.date()

    def at(days: int, hh: int, mm: int) -> None:
        clock.set(dt.datetime.combine(day + dt.timedelta(days=days), dt.time(hh, mm)))

    def stamp() -> str:
        return f"{clock.peek():%Y-%m-%d %H:%M:%S}"

    # Morning: both institutions sign in; the hospital reads the institution list and the catalogue.
    at(0, 7, 58)
    signed = his.call("9001", {"signIn": {"opter": his.opter, "mac": "00-1A-2B-3C-4D-5E", "ip": "10.21.6.15"}},
                      f"{his.name} signs in", insuplc="", show=True)  # fmt: skip
    his.sign_no = signed["output"]["signinoutb"]["sign_no"]
    signed = shop.call("9001", {"signIn": {"opter": shop.opter, "mac": "00-1A-2B-3C-9F-01", "ip": "10.21.8.3"}},
                       f"{shop.name} signs in (`_api_*` key)", insuplc="", show=True)  # fmt: skip
    shop.sign_no = signed["output"]["signinoutb"]["sign_no"]
    his.call("1201", {"medinsinfo": {"fixmedins_type": "1", "fixmedins_name": "丹东市"}},
             "the hospitals whose name contains 丹东市", insuplc="", show=True)
    his.call("1312", {"data": {"hilist_code": "002503020030000", "insu_admdvs": "210600",
                               "query_date": f"{day}", "page_num": 1, "page_size": 10}},
             "the catalogue row of 糖化血红蛋白测定 in force today", insuplc="", show=True)  # fmt: skip
    his.call("1301", {"data": {"ver": "0"}}, "the drug catalogue file (not served)", insuplc="", show=True)
    his.call("9102", {"fsDownloadIn": {"file_qury_no": "0", "filename": "1301.zip", "fixmedins_code": his.code}},
             "a file download (not served)", insuplc="", show=True)  # fmt: skip

    # Outpatient: 李秀英 (retiree) sees a doctor; account payment with her card and PIN.
    at(0, 8, 30)
    card = _card(retiree)
    his.call("1101", {"data": {**card, "psn_name": retiree.name}}, f"{retiree.name} shows her card", insuplc="",
             show=True)  # fmt: skip
    his.call("2001", {"data": {"psn_no": retiree.psn_no, "insutype": "310", "med_type": "11", "begntime": f"{day}",
                               "fixmedins_code": his.code}},
             f"may {retiree.name} be treated as an outpatient today?", show=True)  # fmt: skip
    reg = his.call("2201", {"data": {"psn_no": retiree.psn_no, "insutype": "310", "begntime": stamp(),
                                     "mdtrt_cert_type": "03", "mdtrt_cert_no": retiree.card_no,
                                     "ipt_otp_no": "MZ202603020031", "atddr_no": "D0017", "dr_name": "刘医生",
                                     "dept_code": "0301", "dept_name": "内科", "caty": "03"}},
                   f"registration of {retiree.name}", show=True)  # fmt: skip
    visit = reg["output"]["data"]["mdtrt_id"]
    his.call("2203", {"mdtrtinfo": {"mdtrt_id": visit, "psn_no": retiree.psn_no, "med_type": "11",
                                    "begntime": stamp(), "main_cond_dscr": "口渴多饮三月", "dise_codg": "E11.900",
                                    "dise_name": "2型糖尿病"},
                      "diseinfo": [{"diag_type": "1", "diag_srt_no": "1", "diag_code": "E11.900",
                                    "diag_name": "2型糖尿病", "diag_dept": "内科", "dise_dor_no": "D0017",
                                    "dise_dor_name": "刘医生", "diag_time": stamp(), "vali_flag": "1"}]},
             "the visit's type and diagnosis", show=True)  # fmt: skip
    when = stamp()
    lines = [
        _fee("1", visit, retiree.psn_no, "002503020010000", "JY0101", "葡萄糖测定", "1", "9.00", when),
        _fee("2", visit, retiree.psn_no, "002503020030000", "JY0208", "糖化血红蛋白测定", "1", "60.00", when),
        _fee("3", visit, retiree.psn_no, "001309000010000", "ZL0901", "健康咨询", "1", "20.00", when),
        _fee("4", visit, retiree.psn_no, "XA10BJD332B002010178403", "YP8403", "度拉糖肽注射液", "1", "434.20", when,
             rx_drord_no="RX202603020031"),
        _fee("5", visit, retiree.psn_no, "002501030010000", "JY0003", "粪便常规", "1", "5.00", when),
    ]
    his.call("2204", {"feedetail": lines}, "five fee lines", show=True)
    his.call("2205", {"data": {"mdtrt_id": visit, "psn_no": retiree.psn_no, "feedetl_sn": "5", "chrg_bchno": "0"}},
             "the stool test was not done: line 5 revoked", show=True)  # fmt: skip
    his.call("3101", {"data": {"mdtrt_id": visit, "psn_no": retiree.psn_no}}, "rule check of the visit's lines",
             show=True)  # fmt: skip
    settle = {"psn_no": retiree.psn_no, "mdtrt_cert_type": "03", "mdtrt_cert_no": retiree.card_no, "med_type": "11",
              "medfee_sumamt": "523.20", "psn_setlway": "01", "mdtrt_id": visit, "chrg_bchno": "0",
              "insutype": "310", "acct_used_flag": "1", "pin": DEMO_PIN}  # fmt: skip
    his.call("2206", {"data": settle}, "pre-settlement", show=True)
    done = his.call("2207", {"data": settle}, "settlement", show=True)
    _book(ledger, done["output"]["setlinfo"])
    setl_id = done["output"]["setlinfo"]["setl_id"]
    his.call("5203", {"data": {"setl_id": setl_id, "psn_no": retiree.psn_no, "mdtrt_id": visit}},
             "the settlement as stored", show=True)  # fmt: skip
    his.call("5204", {"data": {"setl_id": setl_id, "psn_no": retiree.psn_no, "mdtrt_id": visit}},
             "its fee lines", show=True)  # fmt: skip
    his.call("5206", {"data": {"psn_no": retiree.psn_no, "cum_ym": f"{day:%Y%m}", **card}},
             f"{retiree.name}'s year-to-date accumulators", show=True)  # fmt: skip
    his.call("5302", {"data": {"psn_no": retiree.psn_no, "biz_appy_type": "03", **card}},
             f"{retiree.name}'s designated institutions", show=True)  # fmt: skip
    filed = his.call("2503", {"data": {"psn_no": retiree.psn_no, **card, "opsp_dise_code": "E11.900",
                                       "opsp_dise_name": "2型糖尿病", "begndate": f"{day}", "enddate": "",
                                       "hosp_dise_code": "E11.900", "memo": "门诊慢特病备案"}},
                      f"disease filing for {retiree.name} (2型糖尿病)", show=True)  # fmt: skip
    his.call("2504", {"data": {"psn_no": retiree.psn_no, **card,
                               "trt_dcla_detl_sn": filed["output"]["result"]["trt_dcla_detl_sn"],
                               "memo": "重复备案"}},
             "the filing withdrawn", show=True)  # fmt: skip

    # 张伟 (employee): settled, then reversed (2208); settled again, the answer lost and undone (2601).
    at(0, 9, 40)
    card = _card(employee)
    his.call("1101", {"data": card}, f"{employee.name} shows his card", insuplc="")
    reg = his.call("2201", {"data": {"psn_no": employee.psn_no, "insutype": "310", "begntime": stamp(),
                                     "mdtrt_cert_type": "03", "mdtrt_cert_no": employee.card_no,
                                     "ipt_otp_no": "MZ202603020058", "atddr_no": "D0021", "dr_name": "陈医生",
                                     "dept_code": "0501", "dept_name": "急诊科", "caty": "05"}},
                   f"registration of {employee.name} (emergency)")  # fmt: skip
    visit = reg["output"]["data"]["mdtrt_id"]
    his.call("2203", {"mdtrtinfo": {"mdtrt_id": visit, "psn_no": employee.psn_no, "med_type": "11",
                                    "dise_codg": "J06.900", "dise_name": "急性上呼吸道感染"}},
             "the visit's diagnosis")  # fmt: skip
    when = stamp()
    his.call("2204", {"feedetail": [
        _fee("1", visit, employee.psn_no, "001102000030000", "ZC0002", "急诊诊查费", "1", "19.00", when),
        _fee("2", visit, employee.psn_no, "002503040020000", "JY0311", "钠测定", "1", "8.00", when),
    ]}, "two fee lines")  # fmt: skip
    settle = {"psn_no": employee.psn_no, "mdtrt_cert_type": "03", "mdtrt_cert_no": employee.card_no,
              "med_type": "11", "medfee_sumamt": "27.00", "psn_setlway": "01", "mdtrt_id": visit,
              "chrg_bchno": "0", "insutype": "310", "acct_used_flag": "1", "pin": DEMO_PIN}  # fmt: skip
    done = his.call("2207", {"data": settle}, "settlement")
    _book(ledger, done["output"]["setlinfo"])
    undone = his.call("2208", {"data": {"psn_no": employee.psn_no, "mdtrt_id": visit,
                                        "setl_id": done["output"]["setlinfo"]["setl_id"]}},
                      "the cashier settled the wrong bill: settlement reversed", show=True)  # fmt: skip
    _book(ledger, undone["output"]["setlinfo"], reversal=True)
    forgotten = undone["output"]["setlinfo"]["setl_id"]
    done = his.call("2207", {"data": settle}, "settled again (the HIS then times out waiting for the answer)")
    _book(ledger, done["output"]["setlinfo"])
    omsgid = his.last_msgid
    undone = his.call("2601", {"data": {"psn_no": employee.psn_no, "omsgid": omsgid, "oinfno": "2207"}},
                      "冲正 of the settlement whose answer was lost", show=True)  # fmt: skip
    _book(ledger, undone["output"]["data"], reversal=True)

    # 陈晨 registers at the wrong department; the registration is cancelled.
    at(0, 10, 5)
    reg = his.call("2201", {"data": {"psn_no": resident.psn_no, "insutype": "390", "begntime": stamp(),
                                     "mdtrt_cert_type": "02", "mdtrt_cert_no": resident.certno,
                                     "ipt_otp_no": "MZ202603020102", "dept_code": "0801", "dept_name": "眼科"}},
                   f"registration of {resident.name} by ID number")  # fmt: skip
    his.call("2202", {"data": {"psn_no": resident.psn_no, "mdtrt_id": reg["output"]["data"]["mdtrt_id"],
                               "ipt_otp_no": "MZ202603020102"}},
             "wrong department: the registration is cancelled", show=True)  # fmt: skip

    # 孙强: chronic-disease outpatient visit (高血压, filed by the seed).
    at(0, 10, 30)
    card = _card(chronic)
    his.call("5301", {"data": {"psn_no": chronic.psn_no, **card}}, f"{chronic.name}'s disease filings", show=True)
    reg = his.call("2201", {"data": {"psn_no": chronic.psn_no, "insutype": "310", "begntime": stamp(),
                                     "mdtrt_cert_type": "03", "mdtrt_cert_no": chronic.card_no,
                                     "med_type": "140104", "ipt_otp_no": "MT202603020007", "dept_code": "0302",
                                     "dept_name": "心内科"}},
                   f"registration of {chronic.name}: 门诊慢特病")  # fmt: skip
    visit = reg["output"]["data"]["mdtrt_id"]
    his.call("2203", {"mdtrtinfo": {"mdtrt_id": visit, "psn_no": chronic.psn_no, "med_type": "140104",
                                    "dise_codg": "I10.x00", "dise_name": "特发性（原发性）高血压"}},
             "the visit's diagnosis")  # fmt: skip
    when = stamp()
    his.call("2204", {"feedetail": [
        _fee("1", visit, chronic.psn_no, "XC01EBG072B002010100151", "YP0151", "葛根素注射液", "2", "31.39", when,
             rx_drord_no="RX202603020007"),
        _fee("2", visit, chronic.psn_no, "002503040020000", "JY0311", "钠测定", "1", "8.00", when),
    ]}, "a drug line and a test")  # fmt: skip
    done = his.call("2207", {"data": {"psn_no": chronic.psn_no, "mdtrt_cert_type": "03",
                                      "mdtrt_cert_no": chronic.card_no, "med_type": "140104",
                                      "medfee_sumamt": "70.78", "mdtrt_id": visit, "insutype": "310",
                                      "acct_used_flag": "1", "pin": DEMO_PIN}},
                    "settlement")  # fmt: skip
    _book(ledger, done["output"]["setlinfo"])
    his.call("5205", {"data": {"psn_no": chronic.psn_no, **card, "begntime": f"{day} 00:00:00",
                               "endtime": f"{day} 23:59:59"}},
             f"{chronic.name}'s chronic-disease drugs today", show=True)  # fmt: skip
    his.call("5201", {"data": {"psn_no": chronic.psn_no, "begntime": f"{day} 00:00:00",
                               "endtime": f"{day} 23:59:59", "med_type": "140104"}},
             f"{chronic.name}'s chronic-disease visits today", show=True)  # fmt: skip
    his.call("5202", {"data": {"psn_no": chronic.psn_no, "mdtrt_id": visit}}, "the visit's diagnosis", show=True)

    # 张伟 will winter in 天津: off-site filing, then withdrawn.
    at(0, 11, 0)
    card = _card(employee)
    filed = his.call("2501", {"data": {"psn_no": employee.psn_no, **card, "offsite_type": "temporary",
                                       "mdtrtarea_admdvs": "120000", "begndate": f"{day + dt.timedelta(days=7)}",
                                       "enddate": f"{day + dt.timedelta(days=97)}", "tel": "13904150000",
                                       "addr": "天津市南开区", "memo": "临时外出就医"}},
                     f"off-site filing for {employee.name} (天津)", show=True)  # fmt: skip
    his.call("2502", {"data": {"psn_no": employee.psn_no, **card,
                               "trt_dcla_detl_sn": filed["output"]["result"]["trt_dcla_detl_sn"],
                               "memo": "行程取消"}},
             "the trip is off: filing withdrawn", show=True)  # fmt: skip

    # Pharmacy: 王子涵 (pupil, resident) buys cough syrup; the first sale is reversed and rung up again.
    at(0, 11, 30)
    sale = {"data": {**_card(child), "psn_no": child.psn_no, "insutype": "390", "med_type": "41",
                     "begntime": stamp(), "medfee_sumamt": "107.70", "acct_used_flag": "0", "psn_setlway": "01"},
            "feedetail": [
                {"feedetl_sn": "1", "med_list_codg": "ZA06BBX0439010100465", "medins_list_codg": "4006537",
                 "medins_list_name": "小儿咳嗽糖浆 100ml", "cnt": "1", "pric": "71.80", "det_item_fee_sumamt": "71.80",
                 "fee_ocur_time": stamp()},
                {"feedetl_sn": "2", "med_list_codg": "ZA01BAX0378020100169", "medins_list_codg": "4002210",
                 "medins_list_name": "小儿感冒口服液 10ml×6支", "cnt": "1", "pric": "35.90",
                 "det_item_fee_sumamt": "35.90", "fee_ocur_time": stamp()},
            ]}  # fmt: skip
    shop.call("2101", sale, f"pre-settlement of {child.name}'s purchase", show=True)
    sold = shop.call("2102", sale, "settlement", show=True)
    shop.call("2103", {"data": {"psn_no": child.psn_no, "setl_id": sold["output"]["setlinfo"]["setl_id"]}},
              "the wrong item was rung up: sale reversed", show=True)  # fmt: skip
    sold = shop.call("2102", sale, "rung up again")

    # Inpatient: 王建国 is admitted (脑梗死), settled at mid-stay and at discharge.
    at(0, 14, 10)
    card = _card(holder)
    his.call("1101", {"data": card}, f"{holder.name} shows his card", insuplc="")
    admitted = his.call("2401", {
        "mdtrtinfo": {"psn_no": holder.psn_no, "insutype": "310", "coner_name": spouse.name, "tel": "13904151234",
                      "begntime": stamp(), "mdtrt_cert_type": "03", "mdtrt_cert_no": holder.card_no,
                      "med_type": "21", "ipt_no": "ZY20260302014", "medrcdno": "BA0013487", "atddr_no": "D0102",
                      "chfpdr_name": "赵主任", "adm_diag_dscr": "急性脑梗死", "adm_dept_codg": "0401",
                      "adm_dept_name": "神经内科", "adm_bed": "12", "dscg_maindiag_code": "I63.900",
                      "dscg_maindiag_name": "脑梗死", "main_cond_dscr": "右侧肢体无力6小时", "dise_codg": "I63.900",
                      "dise_name": "脑梗死", "oprn_oprt_code": "", "oprn_oprt_name": "", "fpsc_no": "",
                      "matn_type": "", "birctrl_type": "", "latechb_flag": "", "geso_val": "", "fetts": "",
                      "fetus_cnt": "", "pret_flag": "", "birctrl_matn_date": "", "dise_type_code": ""},
        "diseinfo": [{"psn_no": holder.psn_no, "diag_type": "1", "maindiag_flag": "1", "diag_srt_no": "1",
                      "diag_code": "I63.900", "diag_name": "脑梗死", "adm_cond": "急", "diag_dept": "神经内科",
                      "dise_dor_no": "D0102", "dise_dor_name": "赵主任", "diag_time": stamp(),
                      "inout_diag_type": "1"}],
    }, f"admission of {holder.name}", show=True)  # fmt: skip
    stay = admitted["output"]["result"]["mdtrt_id"]
    his.call("5303", {"data": {"psn_no": holder.psn_no, **card}}, f"is {holder.name} in hospital anywhere?",
             show=True)  # fmt: skip

    def inpatient_days(first: int, last: int, sn: int) -> list[dict[str, Any]]:
        rows = []
        for offset in range(first, last + 1):
            when = f"{day + dt.timedelta(days=offset)} 08:00:00"
            rows.append(_fee(str(sn), stay, holder.psn_no, "001109000010200", "CW0002", "普通病房床位费(双人间)",
                             "1", "40.00", when, bilg_dept_codg="0401", bilg_dept_name="神经内科"))
            rows.append(_fee(str(sn + 1), stay, holder.psn_no, "001102000050000", "ZC0003", "住院诊查费", "1",
                             "12.00", when, bilg_dept_codg="0401", bilg_dept_name="神经内科"))
            sn += 2
        return rows

    first = [
        *inpatient_days(0, 6, 1),
        _fee("15", stay, holder.psn_no, "XB01AXA223B001010100269", "YP0269", "注射用奥扎格雷钠", "7", "361.60",
             f"{day} 15:00:00", bilg_dept_codg="0401", bilg_dept_name="神经内科", rx_drord_no="YZ2026030201"),
        _fee("16", stay, holder.psn_no, "001109000010500", "CW0009", "套间病房床位费", "1", "180.00",
             f"{day} 15:00:00", bilg_dept_codg="0401", bilg_dept_name="神经内科"),
    ]  # fmt: skip
    his.call("2301", {"feedetail": first}, "the first week's fee lines", show=True)
    his.call("2302", {"data": [{"feedetl_sn": "16", "mdtrt_id": stay, "psn_no": holder.psn_no}]},
             "the suite was charged by mistake: line 16 revoked", show=True)  # fmt: skip
    at(7, 9, 0)
    interim = {"psn_no": holder.psn_no, "mdtrt_cert_type": "03", "mdtrt_cert_no": holder.card_no,
               "medfee_sumamt": "2895.20", "psn_setlway": "01", "mdtrt_id": stay, "insutype": "310",
               "acct_used_flag": "0", "mid_setl_flag": "1"}  # fmt: skip
    his.call("2303", {"data": interim}, "pre-settlement of the first week (interim)", show=True)
    done = his.call("2304", {"data": interim}, "interim settlement (中途结算) of the first week", show=True)
    _book(ledger, done["output"]["setlinfo"])
    at(10, 9, 0)
    his.call("2301", {"feedetail": inpatient_days(7, 9, 17)}, "the last three days' fee lines")
    final = {**interim, "medfee_sumamt": "156.00", "mid_setl_flag": "0"}
    done = his.call("2304", {"data": final}, "final settlement at discharge", show=True)
    _book(ledger, done["output"]["setlinfo"])
    final_id = done["output"]["setlinfo"]["setl_id"]
    discharge = {"mdtrt_id": stay, "psn_no": holder.psn_no, "insutype": "310", "endtime": stamp(),
                 "dise_codg": "I63.900", "dise_name": "脑梗死", "dscg_way": "1", "dscg_dept_codg": "0401",
                 "dscg_dept_name": "神经内科"}  # fmt: skip
    his.call("2402", {"dscginfo": discharge, "diseinfo": []}, "discharge", show=True)
    at(10, 11, 0)
    undone = his.call("2305", {"data": {"psn_no": holder.psn_no, "mdtrt_id": stay, "setl_id": final_id}},
                      "a charge was missing: the final settlement is reversed", show=True)  # fmt: skip
    _book(ledger, undone["output"]["setlinfo"], reversal=True)
    his.call("2405", {"data": {"psn_no": holder.psn_no, "mdtrt_id": stay}}, "and the discharge cancelled", show=True)
    his.call("2301", {"feedetail": [
        _fee("23", stay, holder.psn_no, "001201000030000", "HL0001", "Ⅰ级护理", "10", "8.00", f"{day} 14:30:00",
             bilg_dept_codg="0401", bilg_dept_name="神经内科"),
    ]}, "the missing nursing line")  # fmt: skip
    done = his.call("2304", {"data": {**final, "medfee_sumamt": "236.00"}}, "final settlement again")
    _book(ledger, done["output"]["setlinfo"])
    his.call("2402", {"dscginfo": {**discharge, "endtime": stamp()}, "diseinfo": []}, "discharge again")

    # 刘丽 is admitted by mistake (a day-surgery patient): the admission is cancelled.
    at(10, 14, 0)
    admitted = his.call("2401", {"mdtrtinfo": {"psn_no": spouse.psn_no, "insutype": "310", "begntime": stamp(),
                                               "mdtrt_cert_type": "03", "mdtrt_cert_no": spouse.card_no,
                                               "med_type": "21", "ipt_no": "ZY20260312003", "dise_codg": "K80.200",
                                               "adm_dept_codg": "0601", "adm_dept_name": "普外科"}},
                        f"admission of {spouse.name}")  # fmt: skip
    his.call("2404", {"data": {"psn_no": spouse.psn_no, "mdtrt_id": admitted["output"]["result"]["mdtrt_id"]}},
             "admitted by mistake: the admission is cancelled", show=True)  # fmt: skip

    # Reconciliation and clearing of the period, as the HIS booked it.
    at(11, 16, 0)
    begn, end = f"{day}", f"{day + dt.timedelta(days=10)}"
    his.call("3201", {"data": {"insutype": "", "clr_type": "", "setl_optins": "", "stmt_begndate": begn,
                               "stmt_enddate": end, "medfee_sumamt": _total(ledger, "medfee_sumamt"),
                               "fund_pay_sumamt": _total(ledger, "fund_pay_sumamt"),
                               "acct_pay": _total(ledger, "acct_pay"), "fixmedins_setl_cnt": str(len(ledger))}},
             "totals of the period", insuplc="", show=True)  # fmt: skip
    detail = [{"setl_id": b.setl_id, "medfee_sumamt": b.amounts["medfee_sumamt"],
               "fund_pay_sumamt": b.amounts["fund_pay_sumamt"], "acct_pay": b.amounts["acct_pay"]}
              for b in ledger if b.setl_id != forgotten]  # fmt: skip
    his.call("3202", {"data": {"stmt_begndate": begn, "stmt_enddate": end, "setl_optins": ""}, "detail": detail},
             "settlement by settlement (the HIS lost the 2208 reversal)", insuplc="", show=True)  # fmt: skip
    outpatient = [b for b in ledger if b.clr_type == "11"]
    net_count = sum(-1 if b.reversal else 1 for b in outpatient)  # 清算人次: settlements less reversals
    clearing = {"clr_type": "11", "clr_way": "1", "setlym": f"{day:%Y%m}", "psntime": str(net_count),
                "medfee_sumamt": _total(outpatient, "medfee_sumamt"), "med_sumfee": _total(outpatient, "inscp_scp_amt"),
                "fund_appy_sum": _total(outpatient, "fund_pay_sumamt"),
                "cash_payamt": _total(outpatient, "psn_cash_pay"), "acct_pay": _total(outpatient, "acct_pay"),
                "begndate": begn, "enddate": end}  # fmt: skip
    applied = his.call("3203", {"data": clearing}, "clearing application for the outpatient settlements",
                       insuplc="", show=True)  # fmt: skip
    his.call("3204", {"data": {"clr_appy_evt_id": applied["output"]["result"]["clr_appy_evt_id"]}},
             "withdrawn", insuplc="", show=True)  # fmt: skip
    applied = his.call("3203A", {"data": clearing}, "applied again", insuplc="", show=True)
    his.call("3204A", {"data": {"clr_appy_evt_id": applied["output"]["result"]["clr_appy_evt_id"]}},
             "withdrawn again", insuplc="", show=True)  # fmt: skip

    # Evening: both sign out.
    at(11, 17, 30)
    his.call("9002", {"signOut": {"sign_no": his.sign_no, "opter_no": his.opter}}, f"{his.name} signs out",
             insuplc="", show=True)  # fmt: skip
    shop.call("9002", {"signOut": {"sign_no": shop.sign_no, "opter_no": shop.opter}}, f"{shop.name} signs out",
              insuplc="")  # fmt: skip


# -- the document ------------------------------------------------------------------------------------
def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def _request_text(exchange: Exchange) -> str:
    head = [f"POST {GATEWAY_PATH} HTTP/1.1", f"Host: {BASE_URL.removeprefix('http://')}"]
    head += [f"{name}: {value}" for name, value in exchange.headers.items()]
    return "\n".join(head) + "\n\n" + exchange.body.decode()


def _answer_text(exchange: Exchange) -> str:
    return f"HTTP/1.1 {exchange.status}\ncontent-type: application/json\n\n{_pretty(exchange.answer)}"


def _header(run: Run, exchanges: list[Exchange]) -> Iterator[str]:
    summary: DemoSummary = run.summary
    first = {scheme: next(e for e in exchanges if (("x-tif-paasid" in e.headers) == (scheme == "tif")))
             for scheme in ("tif", "api")}  # fmt: skip
    tif, api = first["tif"].headers, first["api"].headers
    tif_token = demo_key(HOSPITAL, "tif")[1]
    api_secret = demo_key(PHARMACY, "api")[1]
    api_fields = {k: v for k, v in api.items() if k.startswith("_api_") and k != "_api_signature"}
    yield "# Gateway envelopes: every transaction, worked"
    yield ""
    yield ("<!-- Generated by scripts/gateway_envelopes.py from a real run; do not edit by hand. "
           "tests/storage/test_gateway_envelopes_doc.py fails when this file and the code disagree. -->")  # fmt: skip
    yield ""
    yield ("Every request below was sent, byte for byte as printed, to the gateway "
           f"(`POST {GATEWAY_PATH}`, docs/gateway.md), and every answer is the one it returned. "
           "`scripts/gateway_envelopes.py` makes them: it migrates a fresh SQLite database, seeds the demo region "
           "as `yibao db seed-demo` does (1,000 insured persons, the demo institutions and their published demo "
           "keys), runs the gateway app in-process and plays a day and a half of two institutions' HIS traffic:")
    yield ""
    yield (f"* **{run.institution_name(HOSPITAL)}** (`{HOSPITAL}`, 三级甲等) signs with its `x-tif-*` demo key "
           f"(`x-tif-paasid` `{demo_key(HOSPITAL, 'tif')[0]}`, the key `yibao demo-curl` uses);")
    yield (f"* **{run.institution_name(PHARMACY)}** (`{PHARMACY}`) signs with its `_api_*` demo key "
           f"(`_api_access_key` `{demo_key(PHARMACY, 'api')[0]}`).")
    yield ""
    yield ("Both keys are the published demo values of `service.apikeys.demo_key` (never production keys); "
           "`yibao db seed-demo` prints them. The demo persons of the run (their cards and PIN as the seed makes "
           "them; the cards are drawn from the seed's fixed random seed, so `yibao db seed-demo` issues the same "
           "ones):")
    yield ""
    yield "| psn_no | name | insutype / psn_type | card (`mdtrt_cert_no`) | `card_sn` | PIN |"
    yield "|---|---|---|---|---|---|"
    used = {"李秀英", "张伟", "孙强", "王建国", "刘丽", "王子涵", "陈晨"}
    for p in summary.persons:
        if p.name in used:
            yield (f"| {p.psn_no} | {p.name} | {p.insutype} / {p.psn_type} | {p.card_no} | {p.card_sn} | "
                   f"{p.pin}{' (initial)' if p.pin_must_change else ''} |")  # fmt: skip
    yield ""
    yield "## How to read it"
    yield ""
    yield ("* One section per transaction the gateway serves (`HANDLERS` in `src/yibao/gateway/app.py`), with its "
           "national name and what it does, then one or more worked exchanges: the HTTP request (method, path, "
           "headers, the JSON body exactly as sent: UTF-8, indented, Chinese unescaped) and the answer (HTTP "
           "status, the JSON body). The gateway writes its answer compactly on one line; it is shown indented "
           "here, with its fields in the order sent.")
    yield ("* Every exchange carries its step number in the run; [the run](#the-run) lists all steps in order, "
           "including those not printed in full (repeated transactions), so each identifier (`mdtrt_id`, "
           "`setl_id`, `trt_dcla_detl_sn`, `clr_appy_evt_id`) can be traced to where it was handed out.")
    yield ("* All requests go to the one national endpoint. The same envelopes are accepted at "
           "`/fsi/api/rsfComIfsService/callService/{infno}` and at the per-transaction service paths of "
           "docs/gateway.md (Paths).")
    yield ("* The envelope fields the platform does not read (`dev_no`, `dev_safe_info`, `cainfo`, `signtype`, "
           "and input fields such as `dept_name` or `bilg_dr_name`) are sent as a HIS sends them and ignored. "
           "Account payment by card needs the card password: sent here as `pin` (docs/gateway.md, Transactions).")
    yield ""
    yield "### The signatures, worked"
    yield ""
    yield (f"Step {first['tif'].step}, `x-tif-*`: `x-tif-signature` = lower-case hex SHA-256 of "
           "timestamp + token + nonce + timestamp, the token being the key's secret "
           f"(`{tif_token}` for `{tif['x-tif-paasid']}`):")
    yield ""
    yield "```text"
    yield f"sha256(\"{tif['x-tif-timestamp']}{tif_token}{tif['x-tif-nonce']}{tif['x-tif-timestamp']}\")"
    yield f"  = {tif['x-tif-signature']}"
    yield "```"
    yield ""
    yield (f"Step {first['api'].step}, `_api_*`: `_api_signature` = Base64(HMAC-SHA1(secret, the four `_api_*` "
           f"fields sorted by name and joined as `k=v&k=v`)), the secret being `{api_secret}`:")
    yield ""
    yield "```text"
    yield f"base64(hmac_sha1(\"{api_secret}\", \"{signing_string(api_fields)}\"))"
    yield f"  = {api['_api_signature']}"
    yield "```"
    yield ""
    yield ("Each signature is accepted once and its timestamp must be within 5 minutes of the server's clock, so "
           "these exact requests are refused if replayed against a running server: sign every request afresh.")
    yield ""
    yield "### What is fixed so that the file is reproducible"
    yield ""
    yield (f"The run is reproducible byte for byte: one clock, starting at {START:%Y-%m-%d %H:%M} (Beijing time), "
           "serves the seeding, the settlement service, the gateway (`clock`, and `ms_clock` for the signature "
           "window) and the signature timestamps; the script moves it between steps, and each reading advances it "
           "by 1 ms, which is why `refmsg_time` and `respond_time` differ by a few milliseconds. Otherwise "
           "fixed: the `msgid`s (institution code + time + the HIS's own sequence number), the `x-tif-nonce`s "
           "(UUID 5 of the msgid, where a HIS sends a random GUID), the `setl_id`s (the settlement service's "
           "`new_id`, here a counter hashed to 24 hex digits, where a server uses random UUIDs) and the server "
           f"process number in `inf_refmsgid` (characters 21–24, the process id modulo 10,000 on a server; "
           f"`{PROCESS_NUMBER:04d}` here). Identifiers the platform derives from the msgid (`sign_no`, "
           "`mdtrt_id`, `clr_appy_evt_id`) and database sequence numbers (`trt_dcla_detl_sn`) follow from these. "
           "Against a real server all of these, and the times, will differ; the demo persons' ID numbers depend on "
           "the year of seeding. Nothing else varies.")
    yield ""


def _run_table(exchanges: list[Exchange]) -> Iterator[str]:
    yield "## The run"
    yield ""
    yield "| step | time | institution | infno | what | infcode |"
    yield "|---|---|---|---|---|---|"
    for e in exchanges:
        envelope = json.loads(e.body)
        link = f"[{e.infno}](#{_anchor(e.infno)})"
        yield (f"| {e.step} | {envelope['inf_time']} | {envelope['fixmedins_code']} | {link} | {e.note} | "
               f"{e.answer.get('infcode')} |")  # fmt: skip
    yield ""


_NAMES = {infno: name for infno, name, _ in TRANSACTIONS}


def _anchor(infno: str) -> str:
    return f"{infno.lower()}-{_NAMES[infno]}".replace(" ", "-").replace("(", "").replace(")", "")


def render(run: Run) -> str:
    exchanges = run.exchanges
    out = list(_header(run, exchanges))
    out.append("## Contents")
    out.append("")
    out.append(" · ".join(f"[{infno} {name}](#{_anchor(infno)})" for infno, name, _ in TRANSACTIONS))
    out.append("")
    out += _run_table(exchanges)
    for infno, name, what in TRANSACTIONS:
        out.append(f"## {infno} {name}")
        out.append("")
        out.append(what)
        for e in (e for e in exchanges if e.infno == infno and e.shown):
            out.append("")
            envelope = json.loads(e.body)
            stop = "" if e.note.endswith(("?", ".")) else "."
            out.append(f"**Step {e.step}** ({envelope['fixmedins_code']}, {envelope['inf_time']}): {e.note}{stop}")
            out.append("")
            out.append("Request:")
            out.append("")
            out.append("```http")
            out.append(_request_text(e))
            out.append("```")
            out.append("")
            out.append("Answer:")
            out.append("")
            out.append("```http")
            out.append(_answer_text(e))
            out.append("```")
        out.append("")
    return "\n".join(out)


def _check_coverage(exchanges: list[Exchange]) -> None:
    documented = [infno for infno, _, _ in TRANSACTIONS]
    missing = sorted(set(HANDLERS) - set(documented))
    stale = sorted(set(documented) - set(HANDLERS))
    unshown = [infno for infno in documented if not any(e.infno == infno and e.shown for e in exchanges)]
    if missing or stale or unshown or len(documented) != len(set(documented)):
        raise RuntimeError(f"transactions served but not documented: {missing}; documented but not served: "
                           f"{stale}; without a worked exchange: {unshown}")  # fmt: skip


def generate(output: Path) -> None:
    """Run the flows against a fresh platform and write the document to ``output``."""
    with tempfile.TemporaryDirectory(prefix="yibao-envelopes-") as workdir:
        run = Run(Path(workdir))
        try:
            _flows(run)
            _check_coverage(run.exchanges)
            text = render(run)
        finally:
            run.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    generate(args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
