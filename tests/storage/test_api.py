"""The resource API (/v1) over real HTTP, on SQLite and PostgreSQL.

A uvicorn server runs the gateway app with the API mounted, in a background thread on
a loopback port. Covered: person and staff login, the settlement PIN lock at the portal,
roles and "only your own data", idempotent reversals (also concurrent), family
bindings and filings through the services, problem+json errors, the audit log, and
that no route deletes or patches money objects.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import Connection, Engine, func, select, text

from storage import builders as b
from storage.invariants import assert_invariants
from storage.test_smoke_settlement import ENGINE, PAYLOAD
from yibao.api import create_staff, mount
from yibao.api.ratelimit import MAX_FAILURES, LoginLimiter
from yibao.api.writes import purge_idempotency_keys
from yibao.db import repository as repo
from yibao.db import schema as S
from yibao.errors import SettlementRefused
from yibao.gateway import create_app
from yibao.service import registry
from yibao.service.admission import limit_for, limit_units_of_work
from yibao.service.credentials import Credential
from yibao.service.settlement import SettleCommand, SettlementService
from yibao.service.uow import transact

INST = "H21060000001"
PASSWORD = "correct horse battery staple"
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


class Clock:
    """A settable clock shared by the API and the settlement service."""

    def __init__(self) -> None:
        self.now = b.NOW

    def __call__(self) -> dt.datetime:
        return self.now


class Api:
    """The running server, its database, clock, settlement service and an HTTP client."""

    def __init__(self, base: str, db: Engine, clock: Clock, service: SettlementService, app: FastAPI) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)
        self.db, self.clock, self.service, self.app = db, clock, service, app

    def login(self, **body: Any) -> httpx.Response:
        return self.http.post("/v1/sessions", json=body)

    def token(self, **body: Any) -> dict[str, str]:
        response = self.login(**body)
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    def staff(self, username: str) -> dict[str, str]:
        return self.token(kind="staff", username=username, password=PASSWORD)

    def person(self, card: str, pin: str = b.PIN) -> dict[str, str]:
        return self.token(kind="person", card_number=card, pin=pin)

    def get(self, url: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
        return self.http.get(url, headers=headers, **kw)

    def post(self, url: str, headers: dict[str, str], json: Any = None, key: str | None = None) -> httpx.Response:
        extra = {"Idempotency-Key": key} if key else {}
        return self.http.post(url, headers={**headers, **extra}, json=json)

    def settle(self, msgid: str, psn: str = "P1", pin: str = b.PIN) -> str:
        cred = Credential("03", f"C{psn}", f"SN{psn}", pin)
        reply = self.service.settle(SettleCommand(msgid, INST, cred, PAYLOAD))
        assert reply.setl_id is not None
        return reply.setl_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def populate(db: Engine) -> Clock:
    """The institution, persons P1–P3 and the staff accounts admin, oper and viewer; the shared clock."""

    def setup(conn: Connection) -> None:
        b.institution(conn, INST)
        b.region(conn, "310000", "上海市")
        b.person(conn, "P1", balance_fen=80000)
        b.person(conn, "P2", balance_fen=1000, gend="2")
        b.person(conn, "P3")

    transact(db, setup)
    clock = Clock()
    for username, role in (("admin", "admin"), ("oper", "operator"), ("viewer", "viewer")):
        create_staff(db, username, PASSWORD, role, clock)
    return clock


@contextmanager
def serving(db: Engine, clock: Clock, **options: Any) -> Iterator[Api]:
    """The gateway app with the API mounted, served by uvicorn on a loopback port (``options``: uvicorn's)."""
    service = SettlementService(db, ENGINE, clock=clock)
    app = create_app(db, service)
    mount(app, db, service, clock=clock)
    settings: dict[str, Any] = {"host": "127.0.0.1", "log_level": "warning", **options, "port": _free_port()}
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started
    client = Api(f"http://127.0.0.1:{settings['port']}", db, clock, service, app)
    try:
        yield client
    finally:
        client.http.close()
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def api(db: Engine) -> Iterator[Api]:
    with serving(db, populate(db)) as client:
        yield client


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an application/problem+json of this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status and body["code"] == code, body
    assert body["type"] == f"urn:yibao:problem:{code}"
    return body


def audit_rows(db: Engine, action: str | None = None) -> list[Any]:
    query = select(S.audit_log).order_by(S.audit_log.c.id)
    if action is not None:
        query = query.where(S.audit_log.c.action == action)
    return list(transact(db, lambda c: c.execute(query).all()))


def count(db: Engine, table: Any, *where: Any) -> int:
    return int(transact(db, lambda c: c.execute(select(func.count()).select_from(table).where(*where)).scalar_one()))


# -- logins --------------------------------------------------------------------------------
def test_person_login_sees_only_own_data(api: Api) -> None:
    setl_id = api.settle("M-OWN")
    me = api.person("CP1")
    certno = transact(api.db, lambda c: repo.get_person(c, "P1")).certno
    by_id = api.login(kind="person", id_number=certno, pin=b.PIN)
    assert by_id.status_code == 201 and by_id.json()["subject"] == "P1" and by_id.json()["role"] == "person"
    assert by_id.json()["expires_at"] == "2025-03-01T09:30:00"

    assert api.get("/v1/sessions/current", me).json()["subject"] == "P1"
    person = api.get("/v1/persons/P1", me).json()
    assert person["psn_no"] == "P1" and person["cards"] == [{"card_no": "CP1", "status": "active"}]
    accounts = api.get("/v1/persons/P1/accounts", me).json()
    assert accounts["total"] == "205.00" and accounts["accounts"][0]["balance"] == "205.00"
    entries = api.get("/v1/persons/P1/ledger-entries", me).json()["entries"]
    assert entries[0]["ref"] == setl_id and entries[0]["postings"] == [{"account": "current_year", "amount": "-595.00"}]
    assert entries[-1]["postings"] == [{"account": "current_year", "amount": "800.00"}]
    listed = api.get("/v1/persons/P1/settlements", me).json()["items"]
    assert [s["setl_id"] for s in listed] == [setl_id] and listed[0]["fund_pay_sumamt"] == "455.00"
    detail = api.get(f"/v1/settlements/{setl_id}", me, params={"lang": "en"}).json()
    assert detail["setlinfo"]["hifp_pay"] == "455.00" and detail["explanation"]
    assert api.get("/v1/persons/P1/enrolments", me).json()[0]["insutype"] == "310"

    # Another person's data, and staff-only resources, are refused.
    for url in ("/v1/persons/P2", "/v1/persons/P2/accounts", "/v1/persons/P2/ledger-entries",
                "/v1/persons/P2/settlements", "/v1/persons/P2/family-bindings", "/v1/persons/P2/filings"):  # fmt: skip
        problem(api.get(url, me), 403, "NOT_YOUR_DATA")
    other = api.person("CP2")
    problem(api.get(f"/v1/settlements/{setl_id}", other), 403, "NOT_YOUR_DATA")
    problem(api.get("/v1/staff", me), 403, "STAFF_ONLY")
    problem(api.get("/v1/persons", me, params={"certno": certno}), 403, "STAFF_ONLY")
    # Public reference data is readable.
    assert api.get("/v1/institutions", me).json()["items"][0]["fixmedins_code"] == INST
    # A misspelt filter is refused, not ignored (it would silently widen the query).
    unknown = problem(api.get("/v1/institutions", me, params={"kindd": "pharmacy"}), 422, "UNKNOWN_PARAMETER")
    assert unknown["field"] == "kindd"

    # No token, a bad token, an expired token.
    missing = problem(api.http.get("/v1/persons/P1"), 401, "UNAUTHENTICATED")
    assert missing["detail"]
    assert api.http.get("/v1/persons/P1").headers["www-authenticate"].startswith("Bearer")
    problem(api.get("/v1/persons/P1", {"Authorization": "Bearer yb_nonsense"}), 401, "UNAUTHENTICATED")
    api.clock.now = b.NOW + dt.timedelta(minutes=31)
    problem(api.get("/v1/persons/P1", me), 401, "TOKEN_EXPIRED")
    # Logging out revokes the token.
    fresh = api.person("CP1")
    assert api.http.delete("/v1/sessions/current", headers=fresh).status_code == 204
    problem(api.get("/v1/persons/P1", fresh), 401, "UNAUTHENTICATED")
    problem(api.login(kind="person", card_number="NOSUCHCARD", pin=b.PIN), 401, "LOGIN_FAILED")
    # The card rules of settlement apply: a formally lost card cannot log in.
    registry.report_formal_loss(api.db, card_no="CP3")
    problem(api.login(kind="person", card_number="CP3", pin=b.PIN), 401, "CREDENTIAL_LOST")
    problem(api.login(kind="person", card_number="CP1", id_number=certno, pin=b.PIN), 422, "INVALID_INPUT")


def test_settlement_pin_lock_applies_at_the_portal(api: Api) -> None:
    """Six wrong PINs at tills (Dandong's max_pin_attempts) lock the settlement PIN, and the portal login with it.

    Wrong PINs at the portal are counted by the portal's own throttle (test_api_access.py), not here.
    """
    for msgid in ("M-W1", "M-W2", "M-W3", "M-W4", "M-W5"):
        with pytest.raises(SettlementRefused) as refused:
            api.settle(msgid, pin="111111")
        assert refused.value.reasons[0].code == "PIN_WRONG"
    problem(api.login(kind="person", card_number="CP1", pin="111111"), 401, "PIN_WRONG")
    assert transact(api.db, lambda c: repo.pin_row(c, "P1")).failed_attempts == 5  # the portal's did not count
    with pytest.raises(SettlementRefused) as refused:
        api.settle("M-W6", pin="111111")
    assert refused.value.reasons[0].code == "PIN_LOCKED"
    # Now even the right PIN is refused, at the portal and at the hospital.
    problem(api.login(kind="person", card_number="CP1", pin=b.PIN), 401, "PIN_LOCKED")
    with pytest.raises(SettlementRefused) as refused:
        api.settle("M-OK")
    assert refused.value.reasons[0].code == "PIN_LOCKED"
    assert transact(api.db, lambda c: repo.pin_row(c, "P1")).failed_attempts == 6
    assert len([r for r in audit_rows(api.db, "session.refused") if r.target == "person:P1"]) == 2

    # The agency unlocks (viewer may not), the person logs in with the initial PIN and changes it.
    problem(api.post("/v1/persons/P1/pin/reset", api.staff("viewer")), 403, "ROLE_FORBIDDEN")
    assert api.post("/v1/persons/P1/pin/reset", api.staff("oper")).status_code == 204
    initial = api.login(kind="person", card_number="CP1", pin="123456")
    assert initial.status_code == 201 and initial.json()["pin_must_change"] is True
    me = {"Authorization": f"Bearer {initial.json()['token']}"}
    problem(api.post("/v1/persons/P1/pin", me, {"old_pin": "123456", "new_pin": "111111"}), 422, "PIN_WEAK")
    problem(api.post("/v1/persons/P1/pin", me, {"old_pin": "999999", "new_pin": "135790"}), 422, "PIN_WRONG")
    assert transact(api.db, lambda c: repo.pin_row(c, "P1")).failed_attempts == 1  # the wrong old PIN counted
    assert api.post("/v1/persons/P1/pin", me, {"old_pin": "123456", "new_pin": "135790"}).status_code == 204
    problem(api.post("/v1/persons/P2/pin", me, {"old_pin": "123456", "new_pin": "135790"}), 403, "NOT_YOUR_DATA")
    assert api.login(kind="person", card_number="CP1", pin="135790").json()["pin_must_change"] is False
    assert api.settle("M-NEW", pin="135790")
    actions = [r.action for r in audit_rows(api.db) if r.target == "person:P1"]
    assert {"person.pin_reset", "person.pin_change", "person.pin_change_refused"} <= set(actions)


def test_staff_login_bad_password_and_lock(api: Api) -> None:
    ok = api.login(kind="staff", username="oper", password=PASSWORD)
    assert ok.status_code == 201 and ok.json()["role"] == "operator"
    assert ok.json()["expires_at"] == "2025-03-01T17:00:00"
    problem(api.login(kind="staff", username="oper", password="wrong password!"), 401, "LOGIN_FAILED")
    problem(api.login(kind="staff", username="nobody", password=PASSWORD), 401, "LOGIN_FAILED")
    stored = transact(api.db, lambda c: c.execute(select(S.staff_users.c.password_hash)).scalars().all())
    assert all(h.startswith("$argon2id$") for h in stored)
    for _ in range(10):
        problem(api.login(kind="staff", username="viewer", password="not the password"), 401, "LOGIN_FAILED")
    problem(api.login(kind="staff", username="viewer", password=PASSWORD), 401, "STAFF_LOCKED")
    admin = api.staff("admin")
    assert api.get("/v1/staff", admin).json()[-1] == {**api.get("/v1/staff", admin).json()[-1], "locked": True}
    assert api.post("/v1/staff/viewer/enable", admin).json()["locked"] is False
    viewer = api.staff("viewer")
    # Disabling ends the sessions at once; the last admin cannot be disabled.
    assert api.post("/v1/staff/viewer/disable", admin).json()["disabled"] is True
    problem(api.get("/v1/institutions", viewer), 401, "UNAUTHENTICATED")
    problem(api.login(kind="staff", username="viewer", password=PASSWORD), 401, "STAFF_DISABLED")
    problem(api.post("/v1/staff/admin/disable", admin), 409, "LAST_ADMIN")
    problem(api.post("/v1/staff/admin/role", admin, {"role": "viewer"}), 409, "LAST_ADMIN")
    # Own password change needs the old one and ends the user's sessions.
    op = api.staff("oper")
    new = "a much better passphrase"
    problem(api.post("/v1/staff/oper/password", op, {"new_password": new}), 403, "PASSWORD_WRONG")
    problem(api.post("/v1/staff/admin/password", op, {"new_password": new}), 403, "ROLE_FORBIDDEN")
    problem(api.post("/v1/staff/oper/password", op, {"new_password": "short"}), 422, "INVALID_INPUT")
    assert api.post("/v1/staff/oper/password", op, {"new_password": new, "old_password": PASSWORD}).status_code == 204
    problem(api.get("/v1/institutions", op), 401, "UNAUTHENTICATED")
    assert api.login(kind="staff", username="oper", password=new).status_code == 201


# -- roles ---------------------------------------------------------------------------------
def test_roles_viewer_reads_operator_changes_admin_administers(api: Api) -> None:
    setl_id = api.settle("M-ROLE")
    viewer, op, admin, person = api.staff("viewer"), api.staff("oper"), api.staff("admin"), api.person("CP1")
    assert api.get("/v1/persons/P1/accounts", viewer).status_code == 200
    assert api.get(f"/v1/settlements/{setl_id}", viewer).status_code == 200
    found = api.get("/v1/persons", viewer, params={"card_number": "CP2"}).json()
    assert [p["psn_no"] for p in found] == ["P2"]
    problem(api.get("/v1/persons/NOBODY", viewer), 404, "PERSON_UNKNOWN")
    problem(api.get("/v1/persons/NOBODY/settlements", viewer), 404, "PERSON_UNKNOWN")

    reverse = f"/v1/settlements/{setl_id}/reversals"
    problem(api.post(reverse, viewer, {"reason": "x"}, key="k-viewer"), 403, "ROLE_FORBIDDEN")
    problem(api.post(reverse, person, {"reason": "x"}, key="k-person"), 403, "STAFF_ONLY")
    problem(api.post(reverse, admin, {"reason": "x"}), 400, "IDEMPOTENCY_KEY_REQUIRED")
    assert count(api.db, S.settlements, S.settlements.c.kind == "reversal") == 0
    done = api.post(reverse, op, {"reason": "duplicate bill"}, key="k-op")
    assert done.status_code == 201 and done.json()["reversal"]["fund_pay_sumamt"] == "-455.00"

    problem(api.post("/v1/staff", op, {"username": "newbie", "password": PASSWORD, "role": "viewer"}),
            403, "ROLE_FORBIDDEN")  # fmt: skip
    created = api.post("/v1/staff", admin, {"username": "newbie", "password": PASSWORD, "role": "viewer"})
    assert created.status_code == 201 and created.json()["role"] == "viewer"
    problem(api.post("/v1/staff", admin, {"username": "newbie", "password": PASSWORD, "role": "viewer"}),
            409, "STAFF_EXISTS")  # fmt: skip
    designation = {"designated": False, "valid_from": "2020-01-01", "valid_to": "2025-02-28"}
    problem(api.post(f"/v1/institutions/{INST}/designation", op, designation), 403, "ROLE_FORBIDDEN")
    changed = api.post(f"/v1/institutions/{INST}/designation", admin, designation)
    assert changed.status_code == 200 and changed.json()["designated"] is False
    problem(api.post("/v1/institutions/H99999999999/designation", admin, designation), 404, "INSTITUTION_UNKNOWN")
    problem(api.get("/v1/audit", op), 403, "ROLE_FORBIDDEN")
    assert api.get("/v1/audit", admin, params={"action": "institution.designation"}).json()["items"][0]["before"] == {
        "designated": True, "valid_from": "2020-01-01", "valid_to": None
    }  # fmt: skip


# -- idempotency ---------------------------------------------------------------------------
def test_reversal_idempotency(api: Api) -> None:
    setl_id = api.settle("M-IDEM")
    assert transact(api.db, lambda c: repo.balances(c, "P1")) == (20500, 0)
    op = api.staff("oper")
    url = f"/v1/settlements/{setl_id}/reversals"
    first = api.post(url, op, {"reason": "wrong patient"}, key="rev-1")
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = api.post(url, op, {"reason": "wrong patient"}, key="rev-1")
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert count(api.db, S.settlements, S.settlements.c.kind == "reversal") == 1
    assert transact(api.db, lambda c: repo.balances(c, "P1")) == (80000, 0)
    assert len(audit_rows(api.db, "settlement.reverse")) == 1
    # The same key with another body is a conflict; a new key finds the settlement reversed.
    problem(api.post(url, op, {"reason": "another reason"}, key="rev-1"), 409, "IDEMPOTENCY_KEY_REUSED")
    problem(api.post(url, op, {"reason": "wrong patient"}, key="rev-2"), 409, "FORBIDDEN")
    # Keys are per caller: another operator's same key is a new request.
    problem(api.post(url, api.staff("admin"), {"reason": "wrong patient"}, key="rev-1"), 409, "FORBIDDEN")
    problem(api.post("/v1/settlements/NOSUCH/reversals", op, {"reason": "x"}, key="rev-3"), 404, "NOT_FOUND")
    # A reversal cannot itself be reversed (the settlement service's rule).
    reversal_id = first.json()["reversal"]["setl_id"]
    problem(api.post(f"/v1/settlements/{reversal_id}/reversals", op, {"reason": "x"}, key="rev-4"), 409, "FORBIDDEN")
    listed = api.get("/v1/persons/P1/settlements", op).json()["items"]
    assert {(s["kind"], s["reversed_by"]) for s in listed} == {("settle", reversal_id), ("reversal", None)}
    assert api.get("/v1/persons/P1/settlements", op, params={"kind": "reversal"}).json()["items"][0][
        "reverses_setl_id"] == setl_id  # fmt: skip
    assert_invariants(api.db)


def test_failed_logins_from_one_address_are_limited(api: Api) -> None:
    """Guessing identities: after 20 failed logins in a minute the address is answered 429, whatever it tries."""
    for n in range(MAX_FAILURES):
        problem(api.login(kind="person", card_number=f"GUESS{n:04d}", pin=b.PIN), 401, "LOGIN_FAILED")
    limited = api.login(kind="staff", username="admin", password=PASSWORD)
    problem(limited, 429, "TOO_MANY_FAILED_LOGINS")
    assert 1 <= int(limited.headers["retry-after"]) <= 61


def test_overloaded_database_answers_503_and_changes_nothing(api: Api) -> None:
    """With every database turn taken, a request waits its bounded time, then gets 503 + Retry-After."""
    limit_units_of_work(api.db, 1, timeout_ms=200)
    limit = limit_for(api.db)
    assert limit is not None
    limit.acquire()  # this thread holds the only turn
    try:
        response = api.login(kind="staff", username="admin", password=PASSWORD)
        body = problem(response, 503, "OVERLOADED")
        assert response.headers["retry-after"] == "1" and "稍后重试" in body["detail"]
        assert audit_rows(api.db, "session.create") == []
    finally:
        limit.release()
    assert api.login(kind="staff", username="admin", password=PASSWORD).status_code == 201
    assert len(audit_rows(api.db, "session.create")) == 1
    limit_units_of_work(api.db, None)


def test_login_limiter_window() -> None:
    now = [0.0]
    limiter = LoginLimiter(max_failures=3, window_s=60, clock=lambda: now[0])
    for t in (0.0, 10.0, 20.0):
        now[0] = t
        assert limiter.retry_after_s("10.0.0.1") == 0
        limiter.failed("10.0.0.1")
    assert limiter.retry_after_s("10.0.0.1") == 41  # until the first failure leaves the window
    assert limiter.retry_after_s("10.0.0.2") == 0  # other addresses are not affected
    now[0] = 60.5
    assert limiter.retry_after_s("10.0.0.1") == 0


def test_old_idempotency_keys_are_purged_not_younger_ones(api: Api) -> None:
    setl_id = api.settle("M-PURGE")
    op = api.staff("oper")
    url = f"/v1/settlements/{setl_id}/reversals"
    first = api.post(url, op, {"reason": "wrong patient"}, key="purge-1")
    assert first.status_code == 201
    # Younger than the retention: kept, a retry replays.
    assert purge_idempotency_keys(api.db, api.clock.now + dt.timedelta(hours=47)) == 0
    assert api.post(url, op, {"reason": "wrong patient"}, key="purge-1").headers["idempotent-replayed"] == "true"
    with pytest.raises(ValueError):
        purge_idempotency_keys(api.db, api.clock.now, keep=dt.timedelta(hours=1))
    # Past it: forgotten. The same key is then a new API request, and the settlement service's own
    # msgid record still answers it with the one reversal made: money moved once.
    assert purge_idempotency_keys(api.db, api.clock.now + dt.timedelta(hours=49)) == 1
    again = api.post(url, op, {"reason": "wrong patient"}, key="purge-1")
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert again.json()["reversal"]["setl_id"] == first.json()["reversal"]["setl_id"]
    assert count(api.db, S.settlements, S.settlements.c.kind == "reversal") == 1
    assert_invariants(api.db)


def test_concurrent_retries_of_one_key_reverse_once(api: Api) -> None:
    setl_id = api.settle("M-RACE")
    op = api.staff("oper")
    url = f"/v1/settlements/{setl_id}/reversals"
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: api.post(url, op, {"reason": "retry storm"}, key="race"), range(4)))
    assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
    assert len({a.content for a in answers}) == 1
    assert count(api.db, S.settlements, S.settlements.c.kind == "reversal") == 1
    assert len(audit_rows(api.db, "settlement.reverse")) == 1
    assert_invariants(api.db)


def test_idempotency_key_on_other_posts(api: Api) -> None:
    op = api.staff("oper")
    body = {"kind": "disease", "dise_codg": "E11.900", "begn_date": "2025-01-01"}
    first = api.post("/v1/persons/P2/filings", op, body, key="file-1")
    again = api.post("/v1/persons/P2/filings", op, body, key="file-1")
    assert first.status_code == again.status_code == 201 and first.content == again.content
    assert count(api.db, S.filings) == 1
    problem(api.post("/v1/persons/P2/filings", op, {**body, "dise_codg": "I10"}, key="file-1"), 409,
            "IDEMPOTENCY_KEY_REUSED")  # fmt: skip
    # Without a key, the service's own rule refuses the duplicate.
    problem(api.post("/v1/persons/P2/filings", op, body), 409, "FILING_OVERLAP")


# -- family bindings and filings -----------------------------------------------------------
def test_family_bindings_by_consent_or_operator(api: Api) -> None:
    """A person asks, the other party confirms (the consent rules: test_api_access.py); operators bind on evidence."""
    holder, member, stranger, op = api.person("CP1"), api.person("CP2"), api.person("CP3"), api.staff("oper")
    bind = {"holder_psn_no": "P1", "member_psn_no": "P2", "relation": "spouse"}
    asked = api.post("/v1/family-binding-requests", holder, bind)
    assert asked.status_code == 201, asked.text
    confirmed = api.post(f"/v1/family-binding-requests/{asked.json()['id']}/confirm", member)
    assert confirmed.status_code == 200, confirmed.text
    binding_id = confirmed.json()["binding_id"]
    problem(api.post("/v1/family-binding-requests", holder, bind), 409, "DUPLICATE_BINDING")
    problem(api.post("/v1/family-binding-requests", holder, {**bind, "relation": "cousin"}), 422, "RELATION_UNKNOWN")
    problem(api.post("/v1/family-binding-requests", holder, {**bind, "member_psn_no": "P1"}), 422, "SELF_BINDING")
    problem(api.post("/v1/family-bindings", op, {**bind, "member_psn_no": "NOBODY", "consent_ref": "F-1"}), 422,
            "PERSON_UNKNOWN")  # fmt: skip
    # Both parties see the binding, a stranger sees nothing of theirs.
    binding = api.get("/v1/persons/P2/family-bindings", member).json()["as_member"][0]
    assert binding["id"] == binding_id
    assert (binding["holder_psn_no"], binding["member_psn_no"], binding["unbound_at"]) == ("P1", "P2", None)
    assert api.get("/v1/persons/P1/family-bindings", holder).json()["as_holder"][0]["id"] == binding_id
    problem(api.get("/v1/persons/P1/family-bindings", stranger), 403, "NOT_YOUR_DATA")
    unbind = f"/v1/family-bindings/{binding_id}/unbind"
    problem(api.post(unbind, member), 403, "NOT_YOUR_DATA")
    problem(api.post(unbind, api.staff("viewer")), 403, "ROLE_FORBIDDEN")
    done = api.post(unbind, holder)
    assert done.status_code == 200 and done.json()["unbound_at"] == "2025-03-01T09:00:00"
    problem(api.post(unbind, holder), 409, "ALREADY_UNBOUND")
    problem(api.post("/v1/family-bindings/999999/unbind", op), 404, "BINDING_UNKNOWN")
    assert api.get("/v1/persons/P1/family-bindings", holder).json()["as_holder"] == []
    assert len(api.get("/v1/persons/P1/family-bindings", holder, params={"include_unbound": "true"}).json()[
        "as_holder"]) == 1  # fmt: skip
    # By an operator, on recorded consent evidence, with the audit naming the operator.
    again = api.post("/v1/family-bindings", op, {**bind, "member_psn_no": "P3", "relation": "child",
                                                  "consent_ref": "DD-2025-0007"})  # fmt: skip
    assert again.status_code == 201
    rows = audit_rows(api.db)
    assert [(r.actor, r.action) for r in rows if r.action.startswith("family.")] == [
        ("person:P1", "family.request"), ("person:P2", "family.confirm"), ("person:P1", "family.unbind"),
        ("staff:oper", "family.bind"),
    ]  # fmt: skip


def test_filings(api: Api) -> None:
    me, op = api.person("CP1"), api.staff("oper")
    offsite = {"kind": "offsite", "offsite_type": "temporary", "mdtrtarea_admvs": "310000", "begn_date": "2025-03-01"}
    made = api.post("/v1/persons/P1/filings", me, offsite)
    assert made.status_code == 201, made.text
    filing = made.json()
    assert filing["end_date"] == "2025-08-31" and filing["status"] == "active"  # temporary: 6 months
    problem(api.post("/v1/persons/P1/filings", me, offsite), 409, "FILING_OVERLAP")
    problem(api.post("/v1/persons/P2/filings", me, offsite), 403, "NOT_YOUR_DATA")
    problem(api.post("/v1/persons/P1/filings", me, {**offsite, "mdtrtarea_admvs": "210600"}), 422, "SAME_REGION")
    problem(api.post("/v1/persons/P1/filings", me, {**offsite, "begn_date": "3000-01-01"}), 422, "INVALID_INPUT")
    problem(api.post("/v1/persons/P1/filings", me, {**offsite, "kind": "other"}), 422, "INVALID_INPUT")
    disease = {"kind": "disease", "dise_codg": "I10", "begn_date": "2025-01-01"}
    problem(api.post("/v1/persons/P1/filings", me, disease), 403, "STAFF_ONLY")
    made_disease = api.post("/v1/persons/P1/filings", op, disease)
    assert made_disease.status_code == 201
    problem(api.post("/v1/persons/NOBODY/filings", op, disease), 404, "PERSON_UNKNOWN")
    assert {f["kind"] for f in api.get("/v1/persons/P1/filings", me).json()} == {"offsite", "disease"}
    # The person cancels their own off-site filing, not the disease filing.
    problem(api.post(f"/v1/filings/{made_disease.json()['id']}/cancel", me), 403, "STAFF_ONLY")
    cancelled = api.post(f"/v1/filings/{filing['id']}/cancel", me)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    problem(api.post(f"/v1/filings/{filing['id']}/cancel", op), 409, "FILING_CANCELLED")
    problem(api.post("/v1/filings/424242/cancel", op), 404, "FILING_UNKNOWN")
    assert [f["kind"] for f in api.get("/v1/persons/P1/filings", me).json()] == ["disease"]
    assert len(api.get("/v1/persons/P1/filings", me, params={"include_cancelled": "true"}).json()) == 2
    actions = [(r.action, r.before_json) for r in audit_rows(api.db) if r.action.startswith("filing.")]
    assert [a for a, _ in actions] == ["filing.create_offsite", "filing.create_disease", "filing.cancel"]
    assert actions[-1][1] == '{"status":"active"}'


# -- errors, audit, routes, OpenAPI --------------------------------------------------------
def test_problem_json_shape(api: Api) -> None:
    admin = api.staff("admin")
    body = problem(api.get("/v1/persons/P1/settlements", admin, params={"limit": "0"}), 422, "INVALID_INPUT")
    assert body["field"] == body["errors"][0]["field"] == "limit" and body["instance"].endswith("settlements")
    problem(api.get("/v1/persons/bad-psn!", admin), 422, "INVALID_INPUT")
    problem(api.get("/v1/nowhere", admin), 404, "NOT_FOUND")
    problem(api.get("/v1/institutions/H00000000000", admin), 404, "INSTITUTION_UNKNOWN")
    problem(api.get("/v1/policies/999999", admin), 404, "UNKNOWN_REGION")
    problem(api.get("/v1/policies/210600", admin, params={"date": "1990-01-01"}), 404, "NO_POLICY_IN_FORCE")
    wrong_method = problem(api.http.patch("/v1/persons/P1/accounts", headers=admin), 405, "METHOD_NOT_ALLOWED")
    assert wrong_method["instance"] == "/v1/persons/P1/accounts"
    assert "GET" in api.http.put("/v1/persons/P1/accounts", headers=admin).headers["allow"]
    problem(api.http.post("/v1/sessions", content=b"kind=staff", headers={"content-type": "text/plain"}), 415,
            "UNSUPPORTED_MEDIA_TYPE")  # fmt: skip
    huge = {"kind": "staff", "username": "admin", "password": "x" * 100_000}
    problem(api.http.post("/v1/sessions", json=huge), 413, "REQUEST_TOO_LARGE")
    malformed = api.http.post("/v1/sessions", content=b'{"kind": ', headers={"content-type": "application/json"})
    problem(malformed, 400, "MALFORMED_JSON")
    extra = problem(api.login(kind="staff", username="admin", password=PASSWORD, role="admin"), 422, "INVALID_INPUT")
    assert extra["field"].endswith("role")
    problem(api.post("/v1/staff", admin, {"username": "weakling", "password": "aaaaaaaaaaaaaa", "role": "viewer"}),
            422, "PASSWORD_WEAK")  # fmt: skip
    policy = api.get("/v1/policies/210600", admin, params={"date": "2025-03-01", "prefix": "security."}).json()
    assert {p["key"]: p["value"] for p in policy["parameters"]}["security.max_pin_attempts"] == 6
    assert policy["chain"] == ["000000", "210600"] and policy["parameters"][0]["file"].endswith(".yaml")
    # Paths outside /v1 keep the host app's own error format.
    assert api.http.get("/nowhere").headers["content-type"].startswith("application/json")


def test_audit_log_is_written_in_the_transaction_and_append_only(api: Api) -> None:
    setl_id = api.settle("M-AUDIT")
    op = api.staff("oper")
    assert api.post(f"/v1/settlements/{setl_id}/reversals", op, {"reason": "audit me"}, key="a-1").status_code == 201
    # A refused change writes nothing: no audit row, no stored key, no effect.
    problem(api.post("/v1/family-bindings", op, {"holder_psn_no": "P1", "member_psn_no": "P1", "relation": "spouse",
                                                 "consent_ref": "F-1"}, key="a-2"), 422, "SELF_BINDING")  # fmt: skip
    assert count(api.db, S.api_idempotency, S.api_idempotency.c.key == "a-2") == 0
    rows = audit_rows(api.db)
    reverse = [r for r in rows if r.action == "settlement.reverse"]
    assert len(reverse) == 1 and reverse[0].actor == "staff:oper" and reverse[0].role == "operator"
    assert reverse[0].target == f"settlement:{setl_id}" and reverse[0].idempotency_key == "a-1"
    assert '"reason":"audit me"' in reverse[0].after_json and '"reversed_by":null' in reverse[0].before_json
    assert not [r for r in rows if r.action == "family.bind"]
    assert {r.action for r in rows} >= {"staff.create", "session.create", "settlement.reverse"}
    with pytest.raises(Exception, match="append-only"), api.db.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'nobody'"))
    with pytest.raises(Exception, match="append-only"), api.db.begin() as conn:
        conn.execute(text("DELETE FROM audit_log"))


MONEY_PATHS = ("/settlements", "/accounts", "/ledger-entries", "/reversals", "/family-bindings", "/filings")


def _api_routes(app: FastAPI) -> list[APIRoute]:
    return [r for r in app.routes if isinstance(r, APIRoute) and r.path.startswith("/v1")]


def test_no_delete_or_patch_of_money_objects(api: Api) -> None:
    routes = _api_routes(api.app)
    assert len(routes) >= 25
    methods = {(route.path, method) for route in routes for method in route.methods}
    assert not [m for m in methods if m[1] in ("PATCH", "PUT")]
    assert [m for m in methods if m[1] == "DELETE"] == [("/v1/sessions/current", "DELETE")]
    for path, method in methods:
        if any(part in path for part in MONEY_PATHS):
            assert method in ("GET", "POST"), (path, method)
    # Money-moving POSTs require the Idempotency-Key header (documented as required).
    spec = api.app.openapi()
    reversal = spec["paths"]["/v1/settlements/{setl_id}/reversals"]["post"]
    key = next(p for p in reversal["parameters"] if p["name"] == "Idempotency-Key")
    assert key["required"] is True and key["in"] == "header"


def test_openapi_documents_every_operation(api: Api) -> None:
    spec = api.app.openapi()
    assert "bearer" in spec["components"]["securitySchemes"] and "Problem" in spec["components"]["schemas"]
    operations = [(path, method, op) for path, item in spec["paths"].items() if path.startswith("/v1")
                  for method, op in item.items()]  # fmt: skip
    assert len(operations) == len({op["operationId"] for _, _, op in operations}) >= 25
    for path, method, op in operations:
        assert op.get("tags") and op.get("summary"), (path, method)
        statuses = set(op["responses"])
        assert any(s.startswith("2") for s in statuses), (path, method)
        assert "application/problem+json" in op["responses"]["401"]["content"] or path == "/v1/sessions"
        if path != "/v1/sessions":
            assert op.get("security"), (path, method)
        for status, response in op["responses"].items():
            if status.startswith("4"):
                assert "application/problem+json" in response["content"], (path, method, status)
