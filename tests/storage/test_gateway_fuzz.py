"""A bounded fuzzer of gateway envelopes: whatever a HIS sends, it gets an envelope back.

Envelopes for every known transaction (and unknown ones) with inputs whose fields
are strings, numbers, empty strings, nulls, lists or objects — signed and signed in,
so they reach the business code. Every answer must be HTTP 200 with the national
envelope, and none may be the internal-error answer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection

from storage import builders as b
from storage.test_gateway_e2e import INST, Client
from storage.test_smoke_settlement import ENGINE
from yibao.db import make_engine, upgrade
from yibao.gateway import GATEWAY_PATH, create_app
from yibao.gateway.app import INTERNAL_ERROR
from yibao.gateway.transactions import HANDLERS
from yibao.service.apikeys import issue_api_key
from yibao.service.settlement import SettlementService
from yibao.service.uow import transact

KEYS = [
    "psn_no", "mdtrt_cert_type", "mdtrt_cert_no", "card_sn", "insutype", "med_type", "begntime", "mdtrt_id",
    "feedetl_sn", "setl_id", "omsgid", "acct_used_flag", "medfee_sumamt", "pin", "cnt", "pric",
    "det_item_fee_sumamt", "med_list_codg", "dise_codg", "ipt_otp_no", "opter", "cum_ym",
]  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**12), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", " ", "CP1", "SNP1", "03", "01", "02", "310", "11", "2025-03-01", "P1", "1000.00", "-1", "x"]),
    st.text(max_size=12),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=8,
)
objects = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
inputs = st.one_of(
    objects,
    st.fixed_dictionaries({"data": objects}),
    st.fixed_dictionaries({"mdtrtinfo": objects}),
    st.fixed_dictionaries({"feedetail": st.lists(objects, max_size=3)}),
    values,
)


def _app(tmp: Any) -> tuple[TestClient, Client]:
    url = f"sqlite:///{tmp}/fuzz.db"
    db = make_engine(url, pool_size=4)
    upgrade(db)

    def setup(conn: Connection) -> None:
        b.institution(conn, INST)
        b.person(conn, "P1", balance_fen=50000)

    transact(db, setup)
    key, secret = issue_api_key(db, INST, clock=dt.datetime.now)
    client = TestClient(create_app(db, SettlementService(db, ENGINE, clock=dt.datetime.now)))
    his = Client("http://unused", key, secret, INST)
    signed = client.post(GATEWAY_PATH, json=his.envelope("9001", {"signIn": {"opter": "001"}}), headers=his.headers())
    his.sign_no = signed.json()["output"]["signinoutb"]["sign_no"]
    return client, his


def test_gateway_answers_every_envelope(tmp_path_factory: Any) -> None:
    client, his = _app(tmp_path_factory.mktemp("fuzz"))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(infno=st.sampled_from([*HANDLERS, "9999", "", "1"]), data=inputs, raw=st.booleans())
    def run(infno: str, data: Any, raw: bool) -> None:
        envelope = his.envelope(infno, data)
        if raw:  # sometimes the envelope itself is malformed
            envelope = {k: v for k, v in envelope.items() if k not in ("msgid", "fixmedins_code")}
        response = client.post(GATEWAY_PATH, json=envelope, headers=his.headers())
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) >= {"infcode", "inf_refmsgid", "refmsg_time", "respond_time", "err_msg", "output"}
        assert body["err_msg"] != INTERNAL_ERROR, (infno, data)

    run()
    # Not JSON at all, and JSON that is not an object.
    for payload in (b"not json", b"[1, 2]", "\u00ff".encode("latin-1")):
        response = client.post(GATEWAY_PATH, content=payload, headers=his.headers())
        assert response.status_code == 200 and response.json()["infcode"] == -1
