"""Access control of the resource API (/v1) over real HTTP, on SQLite and PostgreSQL.

Three checks found wanting by adversarial testing (issue 10, items 6b, 6c, 6d):

* the per-address login limit must not be evaded with a forged ``X-Forwarded-For``
  (the server is started the way ``yibao serve`` starts it, proxies trusted only when
  configured);
* failed portal logins have their own throttle and never lock the settlement PIN that
  hospital tills check;
* a family binding takes effect only when the other party (or a minor's guardian, or
  agency staff with recorded consent evidence) confirms it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Connection, Engine, select
from typer.testing import CliRunner

from storage import builders as b
from storage.test_api import Api, audit_rows, count, populate, problem, serving
from yibao import cli
from yibao.api.ratelimit import MAX_FAILURES, TrustedProxies
from yibao.db import repository as repo
from yibao.db import schema as S
from yibao.errors import SettlementRefused
from yibao.service.uow import transact


@pytest.fixture
def api(db: Engine) -> Iterator[Api]:
    with serving(db, populate(db)) as client:
        yield client


# -- 6b: the login limit and X-Forwarded-For ------------------------------------------------
@contextmanager
def served_like_yibao_serve(db: Engine, monkeypatch: pytest.MonkeyPatch, *args: str) -> Iterator[Api]:
    """Run ``yibao serve ARGS`` up to uvicorn, then serve the test app with the options it chose."""
    chosen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: chosen.update(options))
    monkeypatch.setattr("logging.basicConfig", lambda **_: None)
    for name in ("YIBAO_DATABASE_URL", "YIBAO_DB_IN_FLIGHT", "YIBAO_TRUSTED_PROXIES", "FORWARDED_ALLOW_IPS"):
        monkeypatch.delenv(name, raising=False)
    clock = populate(db)
    url = db.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli.app, ["serve", "--database-url", url, *args])
    assert result.exit_code == 0, result.output
    assert chosen.pop("factory") is True
    with serving(db, clock, **{k: v for k, v in chosen.items() if k not in ("workers", "log_level")}) as api:
        yield api


def guess(api: Api, n: int, forwarded_for: str) -> int:
    response = api.http.post(
        "/v1/sessions", json={"kind": "person", "card_number": f"GUESS{n:04d}", "pin": b.PIN},
        headers={"X-Forwarded-For": forwarded_for},
    )  # fmt: skip
    return response.status_code


def test_forged_forwarded_for_does_not_evade_the_login_limit(db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy configured: the TCP peer is the client, whatever X-Forwarded-For claims."""
    with served_like_yibao_serve(db, monkeypatch) as api:
        statuses = [guess(api, n, f"198.51.100.{n}") for n in range(30)]
        assert statuses == [401] * MAX_FAILURES + [429] * (30 - MAX_FAILURES)
        limited = api.http.post(
            "/v1/sessions", json={"kind": "staff", "username": "admin", "password": "x"},
            headers={"X-Forwarded-For": "203.0.113.250"},
        )  # fmt: skip
        problem(limited, 429, "TOO_MANY_FAILED_LOGINS")


def test_behind_a_trusted_proxy_the_rightmost_untrusted_address_counts(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8")
    with served_like_yibao_serve(db, monkeypatch, *args) as api:
        # A client behind the proxy prepends forged hops: the hop the proxy saw is the one that counts.
        statuses = [guess(api, n, f"192.0.2.{n}, 203.0.113.7") for n in range(MAX_FAILURES + 5)]
        assert statuses == [401] * MAX_FAILURES + [429] * 5
        # Through an inner trusted proxy (10.x) the same client is still recognised ...
        assert guess(api, 99, "192.0.2.1, 203.0.113.7, 10.1.2.3") == 429
        # ... and another client behind the proxy is not affected.
        assert guess(api, 98, "203.0.113.8") == 401
        assert guess(api, 97, "203.0.113.8, 10.9.9.9") == 401


def test_trusted_proxy_settings_are_checked(db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    url = db.url.render_as_string(hide_password=False)
    for name in ("YIBAO_DATABASE_URL", "YIBAO_DB_IN_FLIGHT", "YIBAO_TRUSTED_PROXIES"):
        monkeypatch.delenv(name, raising=False)
    bad = CliRunner().invoke(cli.app, ["serve", "--database-url", url, "--trusted-proxy", "10.0.0.0/33"])
    assert bad.exit_code == 2 and "--trusted-proxy" in bad.output
    monkeypatch.setenv("YIBAO_TRUSTED_PROXIES", "127.0.0.1, proxy.example")
    bad_env = CliRunner().invoke(cli.app, ["serve", "--database-url", url])
    assert bad_env.exit_code == 2 and "YIBAO_TRUSTED_PROXIES" in bad_env.output


def test_trusted_proxies_rule() -> None:
    none = TrustedProxies([])
    assert none.client("127.0.0.1", ["1.2.3.4"]) == "127.0.0.1"  # nothing trusted: the peer
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1"])
    assert proxies.client("127.0.0.1", []) == "127.0.0.1"  # a proxy's own request
    assert proxies.client("127.0.0.1", ["6.6.6.6, 203.0.113.7"]) == "203.0.113.7"
    assert proxies.client("127.0.0.1", ["6.6.6.6", "203.0.113.7, 10.0.0.2"]) == "203.0.113.7"  # several headers
    assert proxies.client("203.0.113.9", ["6.6.6.6"]) == "203.0.113.9"  # not from a proxy: the header is ignored
    assert proxies.client("127.0.0.1", ["10.0.0.3, 10.0.0.2"]) == "10.0.0.3"  # every hop trusted: the first
    assert proxies.client("127.0.0.1", ["6.6.6.6, not-an-address"]) == "127.0.0.1"  # garbage: the proxy counts
    assert proxies.client("::1", ["2001:db8:1:2:3:4:5:6"]) == "2001:db8:1:2::/64"  # IPv6 clients by /64
    assert proxies.client(None, []) == "unknown"
    with pytest.raises(ValueError, match="nonsense"):
        TrustedProxies(["nonsense"])


# -- 6c: portal logins never lock the settlement PIN ----------------------------------------
def login(api: Api, pin: str, card: str = "CP1") -> Any:
    return api.login(kind="person", card_number=card, pin=pin)


def test_wrong_portal_pins_do_not_lock_the_till_pin(api: Api) -> None:
    """Six wrong portal logins (the till's max_pin_attempts) used to lock the person out of paying at hospitals."""
    for _ in range(6):
        assert login(api, "111111").status_code == 401
    assert api.settle("M-TILL")  # the right PIN at the hospital still pays
    pin = transact(api.db, lambda c: repo.pin_row(c, "P1"))
    assert (pin.failed_attempts, pin.locked) == (0, False)


def test_portal_throttle_locks_the_portal_for_doubling_periods(api: Api) -> None:
    for left in (4, 3, 2, 1):
        assert str(left) in problem(login(api, "111111"), 401, "PIN_WRONG")["detail"]
    locked = problem(login(api, "111111"), 401, "PORTAL_LOCKED")
    assert "09:15" in locked["detail"]  # 15 minutes after the fifth failure
    # While locked even the right PIN is refused (else the lock would tell a guesser when they hit it).
    problem(login(api, b.PIN), 401, "PORTAL_LOCKED")
    api.clock.now = b.NOW + dt.timedelta(minutes=14, seconds=59)
    problem(login(api, b.PIN), 401, "PORTAL_LOCKED")
    # The lock is in the database: another server process refuses too.
    with serving(api.db, api.clock) as other:
        problem(login(other, b.PIN), 401, "PORTAL_LOCKED")
    api.clock.now = b.NOW + dt.timedelta(minutes=15)
    # After the lock, one more wrong PIN locks again, for twice as long.
    problem(login(api, "222222"), 401, "PORTAL_LOCKED")
    api.clock.now = b.NOW + dt.timedelta(minutes=15 + 29)
    problem(login(api, b.PIN), 401, "PORTAL_LOCKED")
    api.clock.now = b.NOW + dt.timedelta(minutes=15 + 30)
    assert login(api, b.PIN).status_code == 201  # a success resets the count
    assert "4" in problem(login(api, "111111"), 401, "PIN_WRONG")["detail"]
    # None of it touched the settlement PIN.
    assert transact(api.db, lambda c: repo.pin_row(c, "P1")).failed_attempts == 0
    codes = [r.after_json for r in audit_rows(api.db, "session.refused") if r.target == "person:P1"]
    assert sum('"PORTAL_LOCKED"' in c for c in codes) == 6


def test_a_till_lock_still_refuses_the_portal(api: Api) -> None:
    for msgid in ("M-1", "M-2", "M-3", "M-4", "M-5", "M-6"):
        with pytest.raises(SettlementRefused):
            api.settle(msgid, pin="111111")
    problem(login(api, b.PIN), 401, "PIN_LOCKED")
    assert api.post("/v1/persons/P1/pin/reset", api.staff("oper")).status_code == 204
    assert login(api, "123456").json()["pin_must_change"] is True


def test_pin_reset_clears_the_portal_lock(api: Api) -> None:
    for _ in range(5):
        login(api, "111111")
    problem(login(api, b.PIN), 401, "PORTAL_LOCKED")
    assert api.post("/v1/persons/P1/pin/reset", api.staff("oper")).status_code == 204
    assert login(api, "123456").status_code == 201


# -- 6d: family bindings need the other party's consent -------------------------------------
BIND = {"holder_psn_no": "P1", "member_psn_no": "P2", "relation": "sibling"}


def requests_of(api: Api, psn_no: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = api.get(f"/v1/persons/{psn_no}/family-binding-requests", headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_binding_needs_the_members_consent(api: Api) -> None:
    holder, member, stranger = api.person("CP1"), api.person("CP2"), api.person("CP3")
    # A person can no longer bind anyone at once (today's body lacks the evidence; with it, staff only).
    assert api.post("/v1/family-bindings", holder, BIND).status_code in (403, 422)
    problem(api.post("/v1/family-bindings", holder, {**BIND, "consent_ref": "I-SAY-SO"}), 403, "STAFF_ONLY")
    assert count(api.db, S.family_bindings) == 0
    made = api.post("/v1/family-binding-requests", holder, BIND)
    assert made.status_code == 201, made.text
    request = made.json()
    assert (request["status"], request["awaiting_psn_no"], request["binding_id"]) == ("pending", "P2", None)
    assert request["requested_by"] == "person:P1" and request["expires_at"] == "2025-03-08T09:00:00"
    assert count(api.db, S.family_bindings) == 0  # nothing pays for P2 yet
    problem(api.post("/v1/family-binding-requests", holder, BIND), 409, "REQUEST_PENDING")
    # The member sees it; a stranger neither sees nor decides it; the requester cannot confirm it.
    assert [r["id"] for r in requests_of(api, "P2", member)["incoming"]] == [request["id"]]
    assert [r["id"] for r in requests_of(api, "P1", holder)["outgoing"]] == [request["id"]]
    problem(api.get("/v1/persons/P2/family-binding-requests", stranger), 403, "NOT_YOUR_DATA")
    confirm = f"/v1/family-binding-requests/{request['id']}/confirm"
    problem(api.post(confirm, stranger), 403, "NOT_A_PARTY")
    problem(api.post(confirm, holder), 403, "OWN_REQUEST")
    problem(api.post(f"/v1/family-binding-requests/{request['id']}/withdraw", member), 403, "NOT_THE_REQUESTER")
    problem(api.post("/v1/family-binding-requests/424242/confirm", member), 404, "REQUEST_UNKNOWN")
    assert count(api.db, S.family_bindings) == 0
    # The member consents: now it is a binding, and the settlement path sees it.
    done = api.post(confirm, member)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "confirmed" and done.json()["decided_by"] == "person:P2"
    binding_id = done.json()["binding_id"]
    assert api.get("/v1/persons/P1/family-bindings", holder).json()["as_holder"][0]["id"] == binding_id
    problem(api.post(confirm, member), 409, "REQUEST_NOT_PENDING")
    assert [(r.actor, r.action, r.target) for r in audit_rows(api.db) if r.action.startswith("family.")] == [
        ("person:P1", "family.request", f"binding-request:{request['id']}"),
        ("person:P2", "family.confirm", f"binding-request:{request['id']}"),
    ]


def test_a_member_may_ask_and_the_holder_consents_or_declines(api: Api) -> None:
    holder, member, other = api.person("CP1"), api.person("CP2"), api.person("CP3")
    asked = api.post("/v1/family-binding-requests", member, BIND).json()
    assert asked["awaiting_psn_no"] == "P1"  # the holder's money: the holder decides
    declined = api.post(f"/v1/family-binding-requests/{asked['id']}/decline", holder)
    assert declined.status_code == 200 and declined.json()["status"] == "declined"
    problem(api.post(f"/v1/family-binding-requests/{asked['id']}/confirm", holder), 409, "REQUEST_NOT_PENDING")
    # The requester may withdraw a pending request.
    again = api.post("/v1/family-binding-requests", holder, {**BIND, "member_psn_no": "P3"}).json()
    withdrawn = api.post(f"/v1/family-binding-requests/{again['id']}/withdraw", holder)
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    problem(api.post(f"/v1/family-binding-requests/{again['id']}/confirm", other), 409, "REQUEST_NOT_PENDING")
    # A person asks only for bindings they are part of, and only as themselves.
    problem(api.post("/v1/family-binding-requests", other, BIND), 403, "NOT_YOUR_DATA")
    problem(api.post("/v1/family-binding-requests", api.staff("oper"), BIND), 403, "PERSONS_ONLY")
    # Policy rules are checked when asking (and again on confirming).
    problem(api.post("/v1/family-binding-requests", holder, {**BIND, "relation": "cousin"}), 422, "RELATION_UNKNOWN")
    problem(api.post("/v1/family-binding-requests", holder, {**BIND, "member_psn_no": "P1"}), 422, "SELF_BINDING")
    assert count(api.db, S.family_bindings) == 0
    listed = requests_of(api, "P1", holder, include_closed="true")
    assert {r["status"] for r in listed["incoming"] + listed["outgoing"]} == {"declined", "withdrawn"}
    assert requests_of(api, "P1", holder)["incoming"] == []


def test_pending_requests_expire_and_confirmation_rechecks_the_rules(api: Api) -> None:
    first = api.post("/v1/family-binding-requests", api.person("CP1"), BIND).json()
    api.clock.now = b.NOW + dt.timedelta(days=7, seconds=1)
    holder, member, op = api.person("CP1"), api.person("CP2"), api.staff("oper")
    problem(api.post(f"/v1/family-binding-requests/{first['id']}/confirm", member), 409, "REQUEST_EXPIRED")
    assert requests_of(api, "P2", member, include_closed="true")["incoming"][0]["status"] == "expired"
    assert [r.action for r in audit_rows(api.db) if r.action.startswith("family.")] == [
        "family.request", "family.request_expire",
    ]  # fmt: skip
    # A new request; meanwhile the agency binds the pair directly: confirming finds the duplicate.
    second = api.post("/v1/family-binding-requests", holder, BIND).json()
    direct = api.post("/v1/family-bindings", op, {**BIND, "consent_ref": "DD-2025-0042"})
    assert direct.status_code == 201, direct.text
    problem(api.post(f"/v1/family-binding-requests/{second['id']}/confirm", member), 409, "DUPLICATE_BINDING")
    assert requests_of(api, "P2", member)["incoming"][0]["status"] == "pending"
    assert count(api.db, S.family_bindings) == 1


def test_staff_bind_only_with_consent_evidence(api: Api) -> None:
    op, viewer, holder = api.staff("oper"), api.staff("viewer"), api.person("CP1")
    missing = problem(api.post("/v1/family-bindings", op, BIND), 422, "INVALID_INPUT")
    assert missing["field"] == "consent_ref"
    problem(api.post("/v1/family-bindings", viewer, {**BIND, "consent_ref": "DD-1"}), 403, "ROLE_FORBIDDEN")
    problem(api.post("/v1/family-bindings", op, {**BIND, "consent_ref": " "}), 422, "INVALID_INPUT")
    assert count(api.db, S.family_bindings) == 0
    made = api.post("/v1/family-bindings", op, {**BIND, "consent_ref": "DD-2025-0001"})
    assert made.status_code == 201, made.text
    stored = transact(api.db, lambda c: c.execute(select(S.binding_requests)).one())
    assert (stored.status, stored.consent_ref, stored.decided_by, stored.binding_id) == (
        "confirmed", "DD-2025-0001", "staff:oper", made.json()["id"],
    )  # fmt: skip
    bind_audit = audit_rows(api.db, "family.bind")[0]
    assert bind_audit.actor == "staff:oper" and '"consent_ref":"DD-2025-0001"' in bind_audit.after_json
    # Staff may also confirm a pending request on a person's behalf, with the evidence.
    pending = api.post("/v1/family-binding-requests", holder, {**BIND, "member_psn_no": "P3"}).json()
    confirm = f"/v1/family-binding-requests/{pending['id']}/confirm"
    problem(api.post(confirm, op), 422, "CONSENT_REF_REQUIRED")
    problem(api.post(confirm, viewer, {"consent_ref": "DD-2"}), 403, "ROLE_FORBIDDEN")
    problem(api.post(confirm, holder, {"consent_ref": "DD-2"}), 422, "CONSENT_REF_UNEXPECTED")  # staff's evidence
    done = api.post(confirm, op, {"consent_ref": "DD-2025-0002"})
    assert done.status_code == 200 and done.json()["decided_by"] == "staff:oper"
    assert count(api.db, S.family_bindings) == 2


def test_a_minors_guardian_consents(api: Api) -> None:
    def children(conn: Connection) -> None:
        b.person(conn, "P4", insutype="390", psn_type="1403", birth=dt.date(2015, 6, 1))
        b.person(conn, "P5", insutype="390", psn_type="1403", birth=dt.date(2016, 6, 1), gend="2")

    transact(api.db, children)
    father, mother, stranger, kid = api.person("CP1"), api.person("CP2"), api.person("CP3"), api.person("CP4")
    op = api.staff("oper")
    # A minor cannot ask, nor consent alone.
    problem(api.post("/v1/family-binding-requests", kid, {"holder_psn_no": "P1", "member_psn_no": "P4",
                                                          "relation": "child"}), 403, "GUARDIAN_REQUIRED")  # fmt: skip
    first = api.post("/v1/family-binding-requests", father, {"holder_psn_no": "P1", "member_psn_no": "P4",
                                                             "relation": "child"}).json()  # fmt: skip
    assert first["awaiting_psn_no"] == "P4"
    problem(api.post(f"/v1/family-binding-requests/{first['id']}/confirm", kid), 403, "GUARDIAN_REQUIRED")
    # No guardian on record yet: the agency confirms with evidence (the household register).
    done = api.post(f"/v1/family-binding-requests/{first['id']}/confirm", op, {"consent_ref": "HUKOU-0001"})
    assert done.status_code == 200, done.text
    # Now the father is on record as P4's parent: he consents for P4 to the mother's binding.
    second = api.post("/v1/family-binding-requests", mother, {"holder_psn_no": "P2", "member_psn_no": "P4",
                                                              "relation": "child"}).json()  # fmt: skip
    assert [r["id"] for r in requests_of(api, "P1", father)["as_guardian"]] == [second["id"]]
    problem(api.post(f"/v1/family-binding-requests/{second['id']}/confirm", stranger), 403, "NOT_A_PARTY")
    problem(api.post(f"/v1/family-binding-requests/{second['id']}/confirm", kid), 403, "GUARDIAN_REQUIRED")
    by_guardian = api.post(f"/v1/family-binding-requests/{second['id']}/confirm", father)
    assert by_guardian.status_code == 200 and by_guardian.json()["decided_by"] == "person:P1"
    # He is no guardian of a child he is not on record for.
    third = api.post("/v1/family-binding-requests", mother, {"holder_psn_no": "P2", "member_psn_no": "P5",
                                                             "relation": "child"}).json()  # fmt: skip
    problem(api.post(f"/v1/family-binding-requests/{third['id']}/confirm", father), 403, "NOT_A_PARTY")
    assert count(api.db, S.family_bindings) == 2
