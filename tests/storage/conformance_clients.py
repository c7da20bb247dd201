"""Two public HIS clients of the national interface, ported to Python request for request.

Each port rebuilds, field for field, what its client puts on the wire: the envelope (which fields, their
JSON types, how ``msgid``, ``inf_time``, ``sign_no``, ``cainfo``, ``infver`` … are made), the ``input``
of each transaction as the client's models serialise it, the signature headers, the URL, the
Content-Type and the body's bytes; and reads the answer as the client does. The code is written here
from reading the sources cited in each class docstring; none of it is copied. Quirks are kept on
purpose (JSON numbers for amounts, ``null`` and the string ``"null"``, ISO ``T`` date-times, indented
bodies, ``text/plain``): the suite proves the platform accepts real clients unchanged.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["CALL_SERVICE", "OPENHIS_PATHS", "Answer", "OpenHisClient", "SdkClient"]

CALL_SERVICE = "/fsi/api/rsfComIfsService/callService"

Answer = dict[str, Any]


class _Port:
    """What both ports share: one httpx client, the institution, the sign_no and a log of what was sent."""

    def __init__(
        self, base: str, access_key: str, secret: str, fixmedins_code: str, fixmedins_name: str, admdvs: str
    ) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)
        self.access_key, self.secret = access_key, secret
        self.fixmedins_code, self.fixmedins_name, self.admdvs = fixmedins_code, fixmedins_name, admdvs
        self.sent: list[tuple[str, dict[str, str], bytes]] = []  # (path, headers, body) of every request
        self.last_msgid = ""

    def post(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        self.sent.append((path, headers, body))
        response = self.http.post(path, content=body, headers=headers)
        assert response.status_code == 200, (response.status_code, response.text)
        answer: Answer = json.loads(response.content.decode("utf-8"))
        return answer

    def close(self) -> None:
        self.http.close()


# --------------------------------------------------------------------------------------------------
# newtouch-cloud/openhis (C#, .NET Framework, Newtonsoft.Json)
# --------------------------------------------------------------------------------------------------

#: The per-transaction service paths of ``ClassHelper.GetPubWay`` (the switch kept there, commented out, in
#: the stored commit; appended to the configured ``qqurl`` when enabled). Only those of this suite's flows.
OPENHIS_PATHS: dict[str, str] = {
    "9001": "/fsi/api/signInSignOutService/signIn",
    "1101": "/fsi/api/fsiPsnInfoService/queryPsnInfo",
    "1201": "/fsi/api/fsiFixMedInsService/queryFixMedIns",
    "1301": "/fsi/api/catalogdownservice/downCatalog1301",
    "1312": "/fsi/api/catalogqueryservice/queryHilist",
    "2001": "/fsi/api/fsiPsnPriorityInfoService/queryPsnPriorityInfo",
    "2201": "/fsi/api/outpatientDocInfoService/outpatientRregistration",
    "2204": "/fsi/api/outpatientDocInfoService/outpatientFeeListUp",
    "2206": "/fsi/api/outpatientSettleService/preSettletment",
    "2207": "/fsi/api/outpatientSettleService/saveSettletmentV2",
    "2208": "/fsi/api/outpatientSettleService/cancleSettletment",
    "2301": "/fsi/api/hospFeeDtlService/feeDtlUp",
    "2303": "/fsi/api/hospSettService/preSett",
    "2304": "/fsi/api/hospSettService/settV2",
    "2305": "/fsi/api/hospSettService/settCl",
    "2401": "/fsi/api/hospitalRegisterService/hospitalRegisterSave",
    "2402": "/fsi/api/dscgService/dischargeProcess",
    "2601": "/fsi/api/reverseService/revsMethod",
    "5203": "/fsi/api/fsiIntegratedQueryService/querySetlInfo",
    "5204": "/fsi/api/fsiIntegratedQueryService/queryFeeList",
    "5206": "/fsi/api/fsiIntegratedQueryService/queryFixmedinsPracPsnSum",
}

#: The transactions whose password openhis sends RSA-encrypted in ``cainfo`` (``SettingsBase``).
_OPENHIS_CAINFO_TRANSACTIONS = frozenset({"2207", "2304", "2102"})


def net_datetime(moment: dt.datetime) -> str:
    """A local ``DateTime`` (``DateTime.Now``, Kind Local) as Newtonsoft writes it: ISO with 7 fraction digits and
    the China offset, e.g. ``2026-12-04T09:30:00.1234560+08:00``."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0+08:00"


class OpenHisClient(_Port):
    """newtouch-cloud/openhis ``WinServiceAPI/YiBaoInterface/ClassHelper.cs`` (commit ffa7e660), with the input
    models of ``WinServiceAPI/YiBaoInterface/Models/Input/Input_*.cs`` and the envelope ``InputPost1.cs``.

    * Envelope (``SettingsBase``), in ``InputPost1`` property order: ``infno``; ``msgid`` = the configured
      fixmedins_code + ``yyyyMMddHHmmss`` + ``new Random().Next(1, 9999)`` padded to 4 (30 characters; the draw
      is random, so this port draws without repeating within one second, as a human-paced HIS does);
      ``mdtrtarea_admvs`` from config; ``insuplc_admdvs`` as the caller passes it (``""`` for 9001 and 1101,
      then the 1101 ``insuplc_admdvs``); ``recer_sys_code`` ``YBXT`` (``LXXT`` for insutype 340);
      ``dev_no``/``dev_safe_info`` from config (absent keys: JSON ``null``); ``cainfo`` ``""`` except for
      2207/2304/2102, where it is the card password + token RSA-encrypted with the platform's public key
      and Base64-encoded (an opaque 172-character text here); ``signtype``, ``infver`` ``V1.0``,
      ``opter_type`` ``"1"``, ``opter``, ``opter_name``, ``inf_time`` ``yyyy-MM-dd HH:mm:ss``,
      ``fixmedins_code``, ``fixmedins_name``, ``sign_no`` (``null`` until 9001 answered) and ``input``.
    * Serialisation: ``JsonConvert.SerializeObject`` then ``JObject.Parse`` and ``ToString()``: the body is
      *indented*; every unset string property is written as ``null``; ``decimal`` properties become
      doubles in the ``JObject`` round trip, so amounts go out as JSON numbers ``1000.0``, ``75.7``, ``0.0``
      (an unset decimal is ``0.0``); ``DateTime`` properties (2201 ``begntime``) as ISO ``T`` date-times
      with fraction and offset; some models type amounts as strings (2301, 2303, 2304 ``medfee_sumamt``).
    * HTTP (``SaveToInterface1``/``YBHttpRequest``): ``POST`` to the configured URL (``GetPubWay`` returns
      ``qqurl``; with ``path_table`` the per-transaction path of :data:`OPENHIS_PATHS` instead),
      ``Content-Type: application/json`` without charset, the body's UTF-8 bytes, a browser User-Agent, an
      ``apikey`` header and the ``x-tif-*`` headers: ``x-tif-paasid``, ``x-tif-timestamp`` (Unix seconds),
      ``x-tif-nonce`` (a GUID, lower case with hyphens) and ``x-tif-signature`` = lower-case hex SHA-256 of
      timestamp + token + nonce + timestamp.
    * Answer: ``OutputReturn`` (``infcode`` read as a string and compared with ``"0"``; ``output`` an object
      bound to the ``Output_*`` models, whose money fields are strings).
    """

    def __init__(
        self,
        base: str,
        paasid: str,
        token: str,
        fixmedins_code: str,
        *,
        fixmedins_name: str = "测试医院",
        admdvs: str = "210600",
        opter: str = "001",
        opter_name: str = "收费员",
        path_table: bool = False,
        signtype: str = "SM2",
    ) -> None:
        super().__init__(base, paasid, token, fixmedins_code, fixmedins_name, admdvs)
        self.opter, self.opter_name, self.path_table, self.signtype = opter, opter_name, path_table, signtype
        self.sign_no: str | None = None  # YiBaoInitHelper.sign_no: null until 9001 answered
        self.insuplc_admdvs = ""
        self._drawn: dict[str, set[int]] = {}
        self._rng = random.Random(fixmedins_code)

    # -- envelope -----------------------------------------------------------------------------------
    def _msgid(self, now: dt.datetime) -> str:
        second = f"{now:%Y%m%d%H%M%S}"
        drawn = self._drawn.setdefault(second, set())
        number = self._rng.randint(1, 9998)  # Random.Next(1, 9999): 1 … 9998
        while number in drawn:
            number = self._rng.randint(1, 9998)
        drawn.add(number)
        return f"{self.fixmedins_code}{second}{number:04d}"

    def envelope(self, infno: str, data: Mapping[str, Any], *, insutype: str | None = None) -> dict[str, Any]:
        now = dt.datetime.now()
        self.last_msgid = msgid = self._msgid(now)
        cainfo = ""
        if infno in _OPENHIS_CAINFO_TRANSACTIONS and self.signtype != "MOCK":
            cainfo = base64.b64encode(hashlib.sha512(f"123456{self.secret}{msgid}".encode()).digest() * 2).decode()
        return {
            "infno": infno,
            "msgid": msgid,
            "mdtrtarea_admvs": self.admdvs,
            "insuplc_admdvs": "" if infno in ("9001", "1101") else self.insuplc_admdvs,
            "recer_sys_code": "LXXT" if insutype == "340" else "YBXT",
            "dev_no": None,
            "dev_safe_info": None,
            "cainfo": cainfo,
            "signtype": self.signtype,
            "infver": "V1.0",
            "opter_type": "1",
            "opter": self.opter,
            "opter_name": self.opter_name,
            "inf_time": f"{now:%Y-%m-%d %H:%M:%S}",
            "fixmedins_code": self.fixmedins_code,
            "fixmedins_name": self.fixmedins_name,
            "sign_no": self.sign_no,
            "input": dict(data),
        }

    def headers(self) -> dict[str, str]:
        times = str(int(time.time()))
        nonce = str(uuid.uuid4())
        signature = hashlib.sha256(f"{times}{self.secret}{nonce}{times}".encode()).hexdigest()
        return {
            "Content-Type": "application/json",
            "User-Agent": "Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/45.0.2454.101 Safari/537.36",
            "x-tif-paasid": self.access_key,
            "x-tif-signature": signature,
            "x-tif-timestamp": times,
            "x-tif-nonce": nonce,
            "apikey": "123456",
        }

    @staticmethod
    def body(envelope: Mapping[str, Any]) -> bytes:
        """JObject.ToString(): indented by two spaces, non-ASCII unescaped, UTF-8 (``Encoding.UTF8.GetBytes``)."""
        return json.dumps(envelope, ensure_ascii=False, indent=2).encode("utf-8")

    def path(self, infno: str) -> str:
        return OPENHIS_PATHS.get(infno, CALL_SERVICE) if self.path_table else CALL_SERVICE

    def call(self, infno: str, data: Mapping[str, Any], *, insutype: str | None = None) -> Answer:
        envelope = self.envelope(infno, data, insutype=insutype)
        return self.post(self.path(infno), self.headers(), self.body(envelope))

    @staticmethod
    def succeeded(answer: Answer) -> bool:
        """``code = outputJson.infcode`` (a string property) then ``code == "0"``."""
        return str(answer.get("infcode")) == "0"

    # -- inputs, as the Input_*.cs models serialise ----------------------------------------------------
    def sign_in(self) -> Answer:
        answer = self.call("9001", {"signIn": {"opter_no": self.opter, "mac": "00-1C-42-5E-7A-01", "ip": "10.0.0.8"}})
        if self.succeeded(answer) and answer["output"]["signinoutb"]["sign_no"] != "":
            self.sign_no = answer["output"]["signinoutb"]["sign_no"]
        return answer

    @staticmethod
    def input_1101(cert_type: str, cert_no: str, card_sn: str | None) -> dict[str, Any]:
        return {
            "data": {
                "mdtrt_cert_type": cert_type,
                "mdtrt_cert_no": cert_no,
                "card_sn": card_sn,
                "begntime": None,
                "psn_cert_type": None,
                "certno": None,
                "psn_name": None,
            }
        }

    @staticmethod
    def input_2201(
        psn_no: str, insutype: str, begntime: dt.datetime, cert_type: str, cert_no: str, ipt_otp_no: str
    ) -> dict[str, Any]:
        return {
            "data": {
                "psn_no": psn_no,
                "insutype": insutype,
                "begntime": net_datetime(begntime),
                "mdtrt_cert_type": cert_type,
                "mdtrt_cert_no": cert_no,
                "ipt_otp_no": ipt_otp_no,
                "atddr_no": "D001",
                "dr_name": "王医生",
                "dept_code": "A03",
                "dept_name": "内科",
                "caty": "A03",
            }
        }

    @staticmethod
    def feedetail_2204(
        sn: str, mdtrt_id: str, psn_no: str, code: str, cnt: float, pric: float, amount: float, fee_ocur_time: str
    ) -> dict[str, Any]:
        """feedetail2204: amounts and counts are ``decimal`` (JSON numbers), ``exp_content`` left out when null."""
        return {
            "feedetl_sn": sn,
            "mdtrt_id": mdtrt_id,
            "psn_no": psn_no,
            "chrg_bchno": "B0001",
            "dise_codg": None,
            "rxno": None,
            "rx_circ_flag": "0",
            "fee_ocur_time": fee_ocur_time,
            "med_list_codg": code,
            "medins_list_codg": f"HIS-{code}",
            "det_item_fee_sumamt": amount,
            "cnt": cnt,
            "pric": pric,
            "sin_dos_dscr": None,
            "used_frqu_dscr": None,
            "prd_days": 0.0,
            "medc_way_dscr": None,
            "bilg_dept_codg": "A03",
            "bilg_dept_name": "内科",
            "bilg_dr_codg": "D001",
            "bilg_dr_name": "王医生",
            "acord_dept_codg": None,
            "acord_dept_name": None,
            "orders_dr_code": None,
            "orders_dr_name": None,
            "hosp_appr_flag": "1",
            "tcmdrug_used_way": None,
            "etip_flag": None,
            "etip_hosp_code": None,
            "dscg_tkdrug_flag": None,
            "matn_fee_flag": None,
        }

    @staticmethod
    def input_2206(
        psn_no: str,
        cert_type: str,
        cert_no: str,
        medfee_sumamt: float,
        mdtrt_id: str,
        acct_used_flag: str,
        insutype: str,
    ) -> dict[str, Any]:
        return {
            "data": {
                "psn_no": psn_no,
                "mdtrt_cert_type": cert_type,
                "mdtrt_cert_no": cert_no,
                "med_type": "11",
                "medfee_sumamt": medfee_sumamt,
                "psn_setlway": "01",
                "mdtrt_id": mdtrt_id,
                "chrg_bchno": "B0001",
                "acct_used_flag": acct_used_flag,
                "insutype": insutype,
            }
        }

    @staticmethod
    def input_2207(
        pre: Mapping[str, Any],
        psn_no: str,
        cert_type: str,
        cert_no: str,
        mdtrt_id: str,
        acct_used_flag: str,
        insutype: str,
    ) -> dict[str, Any]:
        """data2207: the decimals from the 2206 answer (strings there) as the HIS binds them, then JSON numbers."""
        return {
            "data": {
                "psn_no": psn_no,
                "mdtrt_cert_type": cert_type,
                "mdtrt_cert_no": cert_no,
                "med_type": "11",
                "medfee_sumamt": float(pre["medfee_sumamt"]),
                "psn_setlway": "01",
                "mdtrt_id": mdtrt_id,
                "chrg_bchno": "B0001",
                "insutype": insutype,
                "acct_used_flag": acct_used_flag,
                "invono": None,
                "fulamt_ownpay_amt": float(pre["fulamt_ownpay_amt"]),
                "overlmt_selfpay": float(pre["overlmt_selfpay"]),
                "preselfpay_amt": float(pre["preselfpay_amt"]),
                "inscp_scp_amt": float(pre["inscp_scp_amt"]),
            }
        }

    @staticmethod
    def input_2208(setl_id: str, mdtrt_id: str, psn_no: str) -> dict[str, Any]:
        return {"data": {"setl_id": setl_id, "mdtrt_id": mdtrt_id, "psn_no": psn_no}}

    @staticmethod
    def input_2601(psn_no: str, omsgid: str, oinfno: str) -> dict[str, Any]:
        return {"data": {"psn_no": psn_no, "omsgid": omsgid, "oinfno": oinfno}}

    @staticmethod
    def input_5203(psn_no: str, setl_id: str, mdtrt_id: str | None) -> dict[str, Any]:
        return {"data": {"psn_no": psn_no, "setl_id": setl_id, "mdtrt_id": mdtrt_id}}

    @staticmethod
    def input_5204(psn_no: str, setl_id: str, mdtrt_id: str) -> dict[str, Any]:
        """openhis has no Input_5204 model: the national 5204 fields, serialised as its other models are."""
        return {"data": {"setl_id": setl_id, "mdtrt_id": mdtrt_id, "psn_no": psn_no}}

    @staticmethod
    def input_5206(psn_no: str, cum_ym: str) -> dict[str, Any]:
        return {"data": {"psn_no": psn_no, "cum_ym": cum_ym}}

    @staticmethod
    def input_5201(psn_no: str, begntime: str, endtime: str, mdtrt_id: str | None) -> dict[str, Any]:
        return {
            "data": {"psn_no": psn_no, "begntime": begntime, "endtime": endtime, "med_type": None, "mdtrt_id": mdtrt_id}
        }

    @staticmethod
    def input_5202(mdtrt_id: str, psn_no: str) -> dict[str, Any]:
        return {"data": {"mdtrt_id": mdtrt_id, "psn_no": psn_no}}

    @staticmethod
    def input_5205(psn_no: str, begntime: str, endtime: str) -> dict[str, Any]:
        return {"data": {"psn_no": psn_no, "begntime": begntime, "endtime": endtime}}

    @staticmethod
    def input_5302(psn_no: str, biz_appy_type: str) -> dict[str, Any]:
        return {"data": {"psn_no": psn_no, "biz_appy_type": biz_appy_type}}

    @staticmethod
    def input_2401(
        psn_no: str, insutype: str, begntime: str, cert_type: str, cert_no: str, ipt_no: str, diag_code: str
    ) -> dict[str, Any]:
        """Input_2401: ``mdtrtinfo`` (a public field, serialised all the same) every property a string or null;
        ``diseinfo`` rows omit null properties except ``diag_srt_no``."""
        mdtrtinfo = {
            "psn_no": psn_no,
            "insutype": insutype,
            "coner_name": None,
            "tel": None,
            "begntime": begntime,
            "mdtrt_cert_type": cert_type,
            "mdtrt_cert_no": cert_no,
            "med_type": "21",
            "ipt_no": ipt_no,
            "medrcdno": ipt_no,
            "atddr_no": "D002",
            "chfpdr_name": "李医生",
            "adm_diag_dscr": "脑梗死",
            "adm_dept_codg": "A03.06",
            "adm_dept_name": "神经内科",
            "adm_bed": "12",
            "dscg_maindiag_code": diag_code,
            "dscg_maindiag_name": "脑梗死",
            "main_cond_dscr": None,
            "dise_codg": None,
            "dise_name": None,
            "oprn_oprt_code": None,
            "oprn_oprt_name": None,
            "fpsc_no": None,
            "matn_type": None,
            "birctrl_type": None,
            "latechb_flag": None,
            "geso_val": None,
            "fetts": None,
            "fetus_cnt": None,
            "pret_flag": None,
            "birctrl_matn_date": None,
            "dise_type_code": None,
            "exp_content": None,
        }
        diseinfo = [
            {
                "psn_no": psn_no,
                "diag_type": "1",
                "maindiag_flag": "1",
                "diag_srt_no": "1",
                "diag_code": diag_code,
                "diag_name": "脑梗死",
                "diag_dept": "神经内科",
                "dise_dor_no": "D002",
                "dise_dor_name": "李医生",
                "diag_time": begntime,
            }
        ]
        return {"mdtrtinfo": mdtrtinfo, "diseinfo": diseinfo}

    @staticmethod
    def feedetail_2301(
        sn: str, mdtrt_id: str, psn_no: str, code: str, cnt: str, pric: str, amount: str, fee_ocur_time: str
    ) -> dict[str, Any]:
        """feedetail2301: here the model types amounts, counts and prices as strings."""
        return {
            "feedetl_sn": sn,
            "init_feedetl_sn": None,
            "mdtrt_id": mdtrt_id,
            "drord_no": None,
            "psn_no": psn_no,
            "med_type": "21",
            "fee_ocur_time": fee_ocur_time,
            "med_list_codg": code,
            "medins_list_codg": f"HIS-{code}",
            "det_item_fee_sumamt": amount,
            "cnt": cnt,
            "pric": pric,
            "bilg_dept_codg": "A03.06",
            "bilg_dept_name": "神经内科",
            "bilg_dr_codg": "D002",
            "bilg_dr_name": "李医生",
            "acord_dept_codg": None,
            "acord_dept_name": None,
            "orders_dr_code": None,
            "orders_dr_name": None,
            "hosp_appr_flag": "1",
            "tcmdrug_used_way": None,
            "etip_flag": None,
            "etip_hosp_code": None,
            "dscg_tkdrug_flag": None,
            "matn_fee_flag": None,
            "memo": None,
        }

    @staticmethod
    def input_2303(
        psn_no: str,
        cert_type: str,
        cert_no: str,
        medfee_sumamt: str,
        mdtrt_id: str,
        acct_used_flag: str,
        insutype: str,
        mid_setl_flag: str,
    ) -> dict[str, Any]:
        """data2303: every amount a string; the unset ones null."""
        return {
            "data": {
                "psn_no": psn_no,
                "mdtrt_cert_type": cert_type,
                "mdtrt_cert_no": cert_no,
                "medfee_sumamt": medfee_sumamt,
                "psn_setlway": "01",
                "mdtrt_id": mdtrt_id,
                "acct_used_flag": acct_used_flag,
                "insutype": insutype,
                "invono": None,
                "mid_setl_flag": mid_setl_flag,
                "fulamt_ownpay_amt": None,
                "overlmt_selfpay": None,
                "preselfpay_amt": None,
                "inscp_scp_amt": None,
                "dscgTime": None,
            }
        }

    @staticmethod
    def input_2304(
        pre: Mapping[str, Any],
        psn_no: str,
        cert_type: str,
        cert_no: str,
        mdtrt_id: str,
        acct_used_flag: str,
        insutype: str,
        mid_setl_flag: str,
    ) -> dict[str, Any]:
        """data2304: ``medfee_sumamt`` a string, the four split amounts decimals (JSON numbers),
        ``exp_content`` null."""
        return {
            "data": {
                "psn_no": psn_no,
                "mdtrt_cert_type": cert_type,
                "mdtrt_cert_no": cert_no,
                "medfee_sumamt": pre["medfee_sumamt"],
                "psn_setlway": "01",
                "mdtrt_id": mdtrt_id,
                "insutype": insutype,
                "acct_used_flag": acct_used_flag,
                "invono": None,
                "mid_setl_flag": mid_setl_flag,
                "fulamt_ownpay_amt": float(pre["fulamt_ownpay_amt"]),
                "overlmt_selfpay": float(pre["overlmt_selfpay"]),
                "preselfpay_amt": float(pre["preselfpay_amt"]),
                "inscp_scp_amt": float(pre["inscp_scp_amt"]),
                "dscgTime": None,
                "exp_content": None,
            }
        }

    @staticmethod
    def input_2305(mdtrt_id: str, setl_id: str, psn_no: str) -> dict[str, Any]:
        return {"data": {"mdtrt_id": mdtrt_id, "setl_id": setl_id, "psn_no": psn_no, "exp_content": None}}

    @staticmethod
    def input_2402(mdtrt_id: str, psn_no: str, insutype: str, endtime: str, diag_code: str) -> dict[str, Any]:
        dscginfo = {
            "mdtrt_id": mdtrt_id,
            "psn_no": psn_no,
            "insutype": insutype,
            "endtime": endtime,
            "dise_codg": None,
            "dise_name": None,
            "oprn_oprt_code": None,
            "oprn_oprt_name": None,
            "fpsc_no": None,
            "matn_type": None,
            "birctrl_type": None,
            "latechb_flag": None,
            "geso_val": None,
            "fetts": None,
            "fetus_cnt": None,
            "pret_flag": None,
            "birctrl_matn_date": None,
            "cop_flag": None,
            "dscg_dept_codg": "A03.06",
            "dscg_dept_name": "神经内科",
            "dscg_bed": "12",
            "dscg_way": "1",
            "die_date": None,
        }
        diseinfo = [
            {
                "psn_no": psn_no,
                "diag_type": "1",
                "maindiag_flag": "1",
                "diag_srt_no": "1",
                "diag_code": diag_code,
                "diag_name": "脑梗死",
                "diag_dept": "神经内科",
                "dise_dor_no": "D002",
                "dise_dor_name": "李医生",
                "diag_time": endtime,
                "mdtrt_id": mdtrt_id,
            }
        ]
        return {"dscginfo": dscginfo, "diseinfo": diseinfo}

    @staticmethod
    def input_2101(
        cert_type: str,
        cert_no: str,
        card_sn: str | None,
        psn_no: str,
        insutype: str,
        medfee_sumamt: float,
        acct_used_flag: str,
        lines: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """openhis has no 2101/2102 models (a hospital HIS): the national 2101/2102 fields, serialised as its models
        serialise (decimals as JSON numbers, unset strings null)."""
        return {
            "data": {
                "mdtrt_cert_type": cert_type,
                "mdtrt_cert_no": cert_no,
                "card_sn": card_sn,
                "begntime": None,
                "psn_no": psn_no,
                "insutype": insutype,
                "med_type": "41",
                "medfee_sumamt": medfee_sumamt,
                "psn_setlway": "01",
                "acct_used_flag": acct_used_flag,
                "psn_cert_type": None,
                "certno": None,
                "psn_name": None,
                "chrg_bchno": "B0002",
                "invono": None,
                "fulamt_ownpay_amt": 0.0,
                "overlmt_selfpay": 0.0,
                "preselfpay_amt": 0.0,
                "inscp_scp_amt": 0.0,
            },
            "feedetail": lines,
        }

    @staticmethod
    def drug_line(sn: str, code: str, cnt: float, pric: float) -> dict[str, Any]:
        return {
            "feedetl_sn": sn,
            "rxno": None,
            "rx_circ_flag": "0",
            "fee_ocur_time": f"{dt.datetime.now():%Y-%m-%d %H:%M:%S}",
            "med_list_codg": code,
            "medins_list_codg": f"HIS-{code}",
            "det_item_fee_sumamt": round(cnt * pric, 2),
            "cnt": cnt,
            "pric": pric,
            "sin_dos_dscr": None,
            "used_frqu_dscr": None,
            "prd_days": 0.0,
            "medc_way_dscr": None,
            "bilg_dr_codg": None,
            "bilg_dr_name": None,
            "tcmdrug_used_way": None,
        }


# --------------------------------------------------------------------------------------------------
# hzg19700304/medical-insurance-interface-SDK (Python, requests)
# --------------------------------------------------------------------------------------------------


class SdkClient(_Port):
    """hzg19700304/medical-insurance-interface-SDK ``medical_insurance_sdk/core/protocol_processor.py``
    (``build_request``, ``build_gateway_headers``), ``medical_insurance_sdk/core/gateway_auth.py``
    (``GatewayHeaders``), ``medical_insurance_sdk/core/http_client.py`` (``call_medical_api``),
    ``medical_insurance_sdk/models/request.py`` and ``medical_insurance_sdk/sdk.py`` (``call``), commit ee13b12.

    * Envelope (``MedicalInsuranceRequest.to_dict`` order): ``infno``; ``msgid`` = the first 30 characters of an
      upper-case UUID4 without hyphens (no institution code, no time); ``mdtrtarea_admvs`` and
      ``insuplc_admdvs`` both the organisation's region; ``recer_sys_code`` ``"99"``; ``dev_no``,
      ``dev_safe_info`` and ``cainfo`` the *string* ``"null"``; ``signtype`` from the organisation config;
      ``infver`` ``"1.0.0"``; ``opter_type`` ``"1"``; ``opter`` = the organisation code and ``opter_name`` its
      name; ``inf_time`` ``yyyy-MM-dd HH:mm:ss``; ``fixmedins_code``, ``fixmedins_name``; ``sign_no`` the
      string ``"null"`` unless the organisation config carries one (``DataHelper.build_standard_request``
      reads ``org_config['sign_no']``; ``SDK.call`` passes none); ``input`` the HIS's dict as given.
    * Headers: ``Content-Type: text/plain; charset=utf-8``, ``User-Agent: MedicalInsuranceSDK/1.0``,
      ``_api_name`` = ``api_`` + infno, ``_api_version`` ``"1.0"``, ``_api_timestamp`` (13-digit ms),
      ``_api_access_key`` and ``_api_signature`` = Base64(HMAC-SHA1(secret, the four sorted ``k=v`` joined
      by ``&``)).
    * URL: ``base_url + "/" + infno``, i.e. ``/fsi/api/rsfComIfsService/callService/{infno}``.
    * Body: ``json.dumps(ensure_ascii=False, separators=(",", ":"))`` handed to requests as text. (requests
      would encode a ``str`` body as Latin-1 and fail on Chinese text; the port sends the UTF-8 the
      Content-Type declares.)
    * Answer: ``response.json()`` when the Content-Type starts with ``application/json``;
      ``MedicalInsuranceResponse.from_dict`` keeps ``infcode`` and tests ``infcode == 0`` (an integer).
    """

    def __init__(
        self,
        base: str,
        access_key: str,
        secret: str,
        fixmedins_code: str,
        *,
        fixmedins_name: str = "某某医院",
        admdvs: str = "210600",
        signtype: str = "SM2",
    ) -> None:
        super().__init__(base, access_key, secret, fixmedins_code, fixmedins_name, admdvs)
        self.signtype = signtype
        self.sign_no = "null"  # org_config.get('sign_no', 'null')
        self.last_ms = 0

    def envelope(self, infno: str, data: Mapping[str, Any]) -> dict[str, Any]:
        self.last_msgid = msgid = uuid.uuid4().hex.upper()[:30]
        return {
            "infno": infno,
            "msgid": msgid,
            "mdtrtarea_admvs": self.admdvs,
            "insuplc_admdvs": self.admdvs,
            "recer_sys_code": "99",
            "dev_no": "null",
            "dev_safe_info": "null",
            "cainfo": "null",
            "signtype": self.signtype,
            "infver": "1.0.0",
            "opter_type": "1",
            "opter": self.fixmedins_code,
            "opter_name": self.fixmedins_name,
            "inf_time": f"{dt.datetime.now():%Y-%m-%d %H:%M:%S}",
            "fixmedins_code": self.fixmedins_code,
            "fixmedins_name": self.fixmedins_name,
            "sign_no": self.sign_no,
            "input": dict(data),
        }

    def headers(self, infno: str) -> dict[str, str]:
        # int(time.time() * 1000); a fresh GatewayHeaders per call. (Two calls of one infno within one millisecond
        # would carry the same signature; sequential HTTP calls never do.)
        stamp = max(int(time.time() * 1000), self.last_ms + 1)
        self.last_ms = stamp
        fields = {
            "_api_access_key": self.access_key,
            "_api_name": f"api_{infno}",
            "_api_timestamp": str(stamp),
            "_api_version": "1.0",
        }
        signing = "&".join(f"{key}={value}" for key, value in sorted(fields.items()))
        signature = base64.b64encode(hmac.new(self.secret.encode(), signing.encode(), hashlib.sha1).digest()).decode()
        return {
            "Content-Type": "text/plain; charset=utf-8",
            "_api_name": fields["_api_name"],
            "_api_version": "1.0",
            "_api_timestamp": fields["_api_timestamp"],
            "_api_access_key": self.access_key,
            "_api_signature": signature,
            "User-Agent": "MedicalInsuranceSDK/1.0",
        }

    @staticmethod
    def body(envelope: Mapping[str, Any]) -> bytes:
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def call(self, infno: str, data: Mapping[str, Any]) -> Answer:
        return self.post(f"{CALL_SERVICE}/{infno}", self.headers(infno), self.body(self.envelope(infno, data)))

    @staticmethod
    def succeeded(answer: Answer) -> bool:
        return bool(answer.get("infcode", -1) == 0)
