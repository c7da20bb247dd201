"""A bounded fuzzer of gateway envelopes: whatever a HIS sends, it gets an envelope back.

Envelopes for every known transaction (and unknown ones) with inputs whose fields
are strings, numbers, empty strings, nulls, lists or objects — signed and signed in,
so they reach the business code. Every answer must be HTTP 200 with the national
envelope, and none may be the internal-error answer.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, insert

from storage import builders as b
from storage.test_gateway_e2e import INST, Client
from storage.test_smoke_settlement import ENGINE
from yibao.db import schema as S
from yibao.gateway import GATEWAY_PATH, create_app
from yibao.gateway.app import HANDLERS, INTERNAL_ERROR
from yibao.service.apikeys import issue_api_key
from yibao.service.settlement import SettlementService
from yibao.service.uow import transact

KEYS = [
    "psn_no", "mdtrt_cert_type", "mdtrt_cert_no", "card_sn", "insutype", "med_type", "begntime", "mdtrt_id",
    "feedetl_sn", "setl_id", "omsgid", "acct_used_flag", "medfee_sumamt", "pin", "cnt", "pric",
    "det_item_fee_sumamt", "med_list_codg", "dise_codg", "ipt_otp_no", "opter", "cum_ym",
]  # fmt: skip
#: Shapes adversarial testing found answered with an internal error: huge integers, NUL and other control
#: characters, full-width digits, unpaired surrogates, NaN and Infinity (written by some encoders).
hostile = st.one_of(
    st.integers(-(10**30), 10**30), st.sampled_from([10**20, -(10**19), 2**63, 2**64 + 1, float("inf"), float("nan")]),
    st.sampled_from(["S\x00x", "\x00", "１００.００", "２０２５", "Ｃ１", "\ud800", "a\udfffb", "1e3", "0x10", "１"]),
    st.text(alphabet=st.characters(max_codepoint=0x20) | st.sampled_from("０１２３４５６７８９.-"), max_size=8),
)  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**12), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", " ", "CP1", "SNP1", "03", "01", "02", "310", "11", "2025-03-01", "P1", "1000.00", "-1", "x"]),
    st.text(max_size=12), hostile,
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=8,
)
#: Nesting deeper than any envelope (the gateway refuses past 12 levels; the JSON parser itself at about 1,000).
deep = st.integers(10, 60).map(lambda depth: _nest(depth))


def _nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


#: An open visit the fuzzed fee lines may name, so that 2204/2206/2207 reach their storage code.
VISIT = "V-FUZZ"
fee_line = st.fixed_dictionaries(
    {"feedetl_sn": st.sampled_from(["1", "2"]), "mdtrt_id": st.just(VISIT), "med_list_codg": st.just("001102000050000"),
     "cnt": st.one_of(st.just("1"), hostile), "pric": st.one_of(st.just("10.00"), hostile),
     "det_item_fee_sumamt": st.one_of(st.just("10.00"), hostile)},
)  # fmt: skip


objects = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
inputs = st.one_of(
    objects,
    st.fixed_dictionaries({"data": objects}),
    st.fixed_dictionaries({"mdtrtinfo": objects}),
    st.fixed_dictionaries({"feedetail": st.lists(objects, max_size=3)}),
    st.fixed_dictionaries({"feedetail": st.lists(fee_line, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"data": st.fixed_dictionaries({"mdtrt_id": st.just(VISIT), "psn_no": st.just("P1")},
                                                         optional={"medfee_sumamt": hostile})}),
    st.fixed_dictionaries({"data": st.fixed_dictionaries({"psn_no": values}, optional={"deep": deep})}),
    values,
)
#: Envelope fields a HIS fills in, with hostile values.
envelope_fields = st.dictionaries(
    st.sampled_from(["sign_no", "msgid", "infno", "fixmedins_code", "mdtrtarea_admvs", "infver", "opter"]),
    scalars, max_size=2,
)


def _app(db: Engine) -> tuple[TestClient, Client]:
    def setup(conn: Connection) -> None:
        b.institution(conn, INST)
        b.person(conn, "P1", balance_fen=50000)
        conn.execute(insert(S.visits).values(
            mdtrt_id=VISIT, psn_no="P1", fixmedins_code=INST, insutype="310", med_type="11",
            begntime=f"{dt.date.today()} 08:00:00", cert_type="03", cert_no="CP1", card_sn="SNP1", ipt_otp_no="MZ1",
            dise_codg=None, status="open", created_at=dt.datetime.now()))  # fmt: skip

    transact(db, setup)
    key, secret = issue_api_key(db, INST, clock=dt.datetime.now)
    client = TestClient(create_app(db, SettlementService(db, ENGINE, clock=dt.datetime.now)))
    his = Client("http://unused", key, secret, INST)
    signed = client.post(GATEWAY_PATH, json=his.envelope("9001", {"signIn": {"opter": "001"}}), headers=his.headers())
    his.sign_no = signed.json()["output"]["signinoutb"]["sign_no"]
    return client, his


def test_gateway_answers_every_envelope(db: Engine) -> None:
    client, his = _app(db)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(infno=st.sampled_from([*HANDLERS, "9999", "", "1"]), data=inputs, raw=st.booleans(),
           fields=envelope_fields)  # fmt: skip
    def run(infno: str, data: Any, raw: bool, fields: dict[str, Any]) -> None:
        envelope = his.envelope(infno, data)
        if raw:  # sometimes the envelope itself is malformed
            envelope = {k: v for k, v in envelope.items() if k not in ("msgid", "fixmedins_code")}
        envelope.update(fields)
        # ASCII JSON with \u escapes (lone surrogates too) and NaN/Infinity as some encoders write them.
        content = json.dumps(envelope, allow_nan=True).encode()
        headers = {**his.headers(), "content-type": "application/json"}
        response = client.post(GATEWAY_PATH, content=content, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) >= {"infcode", "inf_refmsgid", "refmsg_time", "respond_time", "err_msg", "output"}
        assert body["err_msg"] != INTERNAL_ERROR, (infno, data)

    run()
    # Not JSON at all, and JSON that is not an object.
    for payload in (b"not json", b"[1, 2]", "\u00ff".encode("latin-1"), b"[" * 100_000, b'{"a":' * 50_000,
                    b'{"infno": "1101", "input": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"):
        response = client.post(GATEWAY_PATH, content=payload, headers=his.headers())
        assert response.status_code == 200 and response.json()["infcode"] == -1
        assert response.json()["err_msg"] != INTERNAL_ERROR, payload[:40]
