"""Command line: ``yibao settle | explain | policy check | policy show | demo``.

Exit status: 0 success, 1 settlement refused by an eligibility gate, 2 bad
input (request, policy or catalogue) with the offending field named on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from ..catalog import Catalog, load_demo_catalog
from ..engine import Engine, parse_request
from ..errors import RequestError, SettlementRefused, YibaoError
from ..money import format_bp, format_fen
from ..policy import PolicyStore

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="yibao: medical insurance settlement.")
policy_app = typer.Typer(no_args_is_help=True, help="Validate and inspect policy files.")
app.add_typer(policy_app, name="policy")
db_app = typer.Typer(no_args_is_help=True, help="Database: migrate and seed.")
app.add_typer(db_app, name="db")
keys_app = typer.Typer(no_args_is_help=True, help="Gateway keys of institutions: issue and revoke.")
app.add_typer(keys_app, name="keys")
institutions_app = typer.Typer(no_args_is_help=True, help="Designated institutions: settings.")
app.add_typer(institutions_app, name="institutions")
DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL (default: $YIBAO_DATABASE_URL, else var/yibao.db)."),
]

PolicyDirOpt = Annotated[
    Path | None, typer.Option("--policy-dir", help="Directory of policy YAML files (default: bundled presets).")
]
CatalogOpt = Annotated[Path | None, typer.Option("--catalog", help="Catalogue CSV (default: bundled demo catalogue).")]
LangOpt = Annotated[str, typer.Option("--lang", help="zh or en.")]
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def _bundled_policies() -> Path:
    return Path(str(resources.files("yibao").joinpath("data/policies")))


def _fail(exc: YibaoError) -> NoReturn:
    if isinstance(exc, SettlementRefused):
        payload: dict[str, Any] = {
            "error": exc.code,
            "reasons": [{"code": r.code, "message": r.message} for r in exc.reasons],
        }
        status = 1
    else:
        payload = {"error": exc.code, "message": str(exc)}
        if isinstance(exc, RequestError):
            payload["field"] = exc.field
        status = 2
    typer.echo(json.dumps(payload, ensure_ascii=False), err=True)
    raise typer.Exit(status)


def _engine(policy_dir: Path | None, catalog: Path | None) -> Engine:
    store = PolicyStore.load_dir(policy_dir or _bundled_policies())
    cat = Catalog.from_csv(catalog) if catalog else load_demo_catalog()
    return Engine(store, cat)


def _read_request(path: Path) -> Any:
    try:
        raw = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1) if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise RequestError("", f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError("", f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError("", "request is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise RequestError("", f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _settle(request: Path, policy_dir: Path | None, catalog: Path | None) -> Any:
    try:
        data = _read_request(request)
        engine = _engine(policy_dir, catalog)
        return engine.settle(parse_request(data))
    except YibaoError as exc:
        _fail(exc)


@app.command()
def settle(
    request: Annotated[Path, typer.Argument(help="Request JSON file, or - for stdin.")],
    policy_dir: PolicyDirOpt = None,
    catalog: CatalogOpt = None,
    trace: Annotated[bool, typer.Option("--trace/--no-trace", help="Include the structured trace.")] = True,
) -> None:
    """Settle a request and print the result as JSON (writes nothing anywhere)."""
    result = _settle(request, policy_dir, catalog)
    typer.echo(json.dumps(result.to_json(trace=trace), ensure_ascii=False, indent=2))


@app.command()
def explain(
    request: Annotated[Path, typer.Argument(help="Request JSON file, or - for stdin.")],
    policy_dir: PolicyDirOpt = None,
    catalog: CatalogOpt = None,
    lang: LangOpt = "zh",
) -> None:
    """Settle a request and print the explanation as readable text."""
    if lang not in ("zh", "en"):
        _fail(RequestError("--lang", "must be zh or en"))
    result = _settle(request, policy_dir, catalog)
    typer.echo("\n".join(result.explain("zh" if lang == "zh" else "en")))
    for detail in result.details:
        typer.echo(f"  [{detail.fund_pay_type}] {detail.fund_pay_type_name}: {format_fen(detail.fund_payamt_fen)}")


@policy_app.command("check")
def policy_check(directory: Annotated[Path, typer.Argument(help="Directory of policy YAML files.")]) -> None:
    """Validate every policy file at every date on which any value changes."""
    try:
        store = PolicyStore.load_dir(directory)
    except YibaoError as exc:
        _fail(exc)
    for code, rf in sorted(store.regions.items()):
        versions = ", ".join(d.isoformat() for d in store.versions(code))
        typer.echo(f"ok  {code} {rf.name}  ({rf.file}; versions from {versions})")


@policy_app.command("show")
def policy_show(
    region: Annotated[str, typer.Argument(help="6-digit region code.")],
    date: Annotated[str, typer.Option("--date", help="Service date YYYY-MM-DD.")],
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Print the parameters in force for REGION on --date, each with its source."""
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        _fail(RequestError("--date", f"not a date: {date!r}"))
    try:
        policy = PolicyStore.load_dir(policy_dir or _bundled_policies()).resolve(region, day)
    except YibaoError as exc:
        _fail(exc)
    typer.echo(f"# {policy.name} ({policy.region}), chain {' → '.join(policy.chain)}")
    end = policy.effective_to.isoformat() if policy.effective_to else "open"
    typer.echo(f"# version {policy.version}, in force {policy.effective_from} … {end}")
    for key, source in policy.sources.items():
        value = policy.values.get(key)
        ref = source.reference
        cite = f"{ref.title} [{ref.status}]" + (f" {ref.url}" if ref.url else "") if ref else "(no reference)"
        since = f" from {source.effective_from}" if source.effective_from else ""
        shown = "null" if value is None else str(value)
        typer.echo(f"{key} = {shown}    ← {source.file}{since}; {cite}")


@app.command()
def demo() -> None:
    """Settle the bundled demo bill and print the result and its explanation."""
    path = Path(str(resources.files("yibao").joinpath("data/demo/request.json")))
    result = _settle(path, None, None)
    info = result.setlinfo()
    typer.echo("== setlinfo ==")
    for key in ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt",
                "act_pay_dedc", "hifp_pay", "hifob_pay", "hifmi_pay", "maf_pay", "fund_pay_sumamt",
                "psn_part_amt", "acct_pay", "acct_mulaid_pay", "psn_cash_pay", "balc"):  # fmt: skip
        typer.echo(f"  {key:<18} {info[key]:>12}")
    typer.echo(f"  {'pool_prop_selfpay':<18} {format_bp(result.pool_prop_selfpay):>12}")
    typer.echo("== 结算说明 ==")
    for line in result.explain("zh"):
        typer.echo(f"  {line}")


@app.command("demo-curl")
def demo_curl(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    fixmedins_code: Annotated[str, typer.Option("--fixmedins-code", help="A demo institution.")] = "H21060200001",
) -> None:
    """Print a one-line shell command: a signed 9001 sign-in against a running demo server (x-tif scheme)."""
    from ..service.apikeys import demo_key

    if not (fixmedins_code.isascii() and fixmedins_code.isalnum() and len(fixmedins_code) <= 20):
        raise typer.BadParameter("an institution code of letters and digits", param_hint="--fixmedins-code")
    paasid, token = demo_key(fixmedins_code, "tif")
    fields = {"infno": "9001", "msgid": f"{fixmedins_code}${{ts}}${{n}}", "mdtrtarea_admvs": "210600",
              "insuplc_admdvs": "210600", "recer_sys_code": "YBXT", "infver": "V1.0", "opter_type": "1",
              "opter": "001", "opter_name": "demo", "inf_time": "$t", "fixmedins_code": fixmedins_code,
              "input": {"signIn": {"opter": "001", "mac": "00-00-00-00-00-00", "ip": "127.0.0.1"}}}  # fmt: skip
    body = json.dumps(fields, ensure_ascii=True, separators=(",", ":")).replace('"', '\\"')
    typer.echo(
        f'ts=$(date +%s); n=$(date +%N); t=$(date "+%Y-%m-%d %H:%M:%S"); '
        f"curl -s -X POST http://{host}:{port}/fsi/api/rsfComIfsService/callService "
        f"-H 'Content-Type: application/json' -H 'x-tif-paasid: {paasid}' "
        f'-H "x-tif-timestamp: $ts" -H "x-tif-nonce: $n" '
        f'-H "x-tif-signature: $(printf %s "${{ts}}{token}${{n}}${{ts}}" | sha256sum | cut -c1-64)" '
        f'-d "{body}"'
    )


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseOpt = None) -> None:
    """Create or migrate the database schema to the latest revision."""
    from ..db import database_url as resolve_url
    from ..db import make_engine, upgrade

    url = resolve_url(database_url)
    engine = make_engine(url, pool_size=2)
    upgrade(engine)
    engine.dispose()
    typer.echo(f"database at {engine.url.render_as_string(hide_password=True)} is up to date")


@db_app.command("purge-keys")
def db_purge_keys(
    database_url: DatabaseOpt = None,
    older_than_hours: Annotated[
        int, typer.Option("--older-than-hours", min=48, max=24 * 3650, help="Keep answers at least this long.")
    ] = 48,
) -> None:
    """Forget stored Idempotency-Key answers of the /v1 API older than the given age (run it daily)."""
    from ..api.writes import purge_idempotency_keys
    from ..db import database_url as resolve_url
    from ..db import make_engine

    engine = make_engine(resolve_url(database_url), pool_size=2)
    removed = purge_idempotency_keys(engine, dt.datetime.now(), keep=dt.timedelta(hours=older_than_hours))
    engine.dispose()
    typer.echo(f"removed {removed} idempotency key(s) older than {older_than_hours} h")


@db_app.command("seed-demo")
def db_seed_demo(
    database_url: DatabaseOpt = None,
    count: Annotated[int, typer.Option("--count", min=10, max=100_000, help="Insured persons to create.")] = 1000,
) -> None:
    """Create the demo region (institutions, ~1,000 insured persons, families, filings) if empty."""
    from ..db import database_url as resolve_url
    from ..db import make_engine, upgrade
    from ..seed import seed_demo

    engine = make_engine(resolve_url(database_url), pool_size=2)
    upgrade(engine)
    summary = seed_demo(engine, PolicyStore.load_dir(_bundled_policies()), clock=dt.datetime.now, count=count)
    for line in summary.lines():
        typer.echo(line)
    # Gateway keys of the demo institutions (published demo values, see docs/gateway.md).
    from ..service.apikeys import demo_key, issue_api_key

    for scheme, title in (("api", "_api_access_key / secret"), ("tif", "x-tif-paasid / token")):
        typer.echo(f"\ndemo gateway keys, {scheme} scheme ({title}):")
        for inst in summary.institutions:
            access_key, secret = demo_key(inst.fixmedins_code, scheme)
            issue_api_key(engine, inst.fixmedins_code, clock=dt.datetime.now, access_key=access_key, secret=secret,
                          scheme=scheme)  # fmt: skip
            typer.echo(f"  {inst.fixmedins_code}  {access_key}  {secret}")
    engine.dispose()


@institutions_app.command("pin-by-terminal")
def institutions_pin_by_terminal(
    fixmedins_code: Annotated[str, typer.Argument(help="The institution.")],
    enabled: Annotated[bool, typer.Option("--on/--off", help="Its PIN pads verify the settlement PIN.")],
    database_url: DatabaseOpt = None,
) -> None:
    """Whether an institution's PIN pads verify the settlement PIN (its 2206/2207 then carry no pin)."""
    from ..db import database_url as resolve_url
    from ..db import make_engine
    from ..service.registry import set_pin_by_terminal

    engine = make_engine(resolve_url(database_url), pool_size=2)
    try:
        record = set_pin_by_terminal(engine, fixmedins_code=fixmedins_code, enabled=enabled)
    except YibaoError as exc:
        _fail(exc)
    finally:
        engine.dispose()
    typer.echo(f"{record.fixmedins_code} pin_by_terminal={'on' if record.pin_by_terminal else 'off'}")


@keys_app.command("issue")
def keys_issue(
    fixmedins_code: Annotated[str, typer.Argument(help="The institution the key speaks for.")],
    scheme: Annotated[str, typer.Option("--scheme", help="api (_api_* HMAC-SHA1) or tif (x-tif-* SHA-256).")] = "api",
    database_url: DatabaseOpt = None,
) -> None:
    """Issue a gateway key to an institution and print it (the secret is shown this once)."""
    from ..db import database_url as resolve_url
    from ..db import make_engine
    from ..service.apikeys import issue_api_key

    engine = make_engine(resolve_url(database_url), pool_size=2)
    try:
        access_key, secret = issue_api_key(engine, fixmedins_code, clock=dt.datetime.now, scheme=scheme)
    except YibaoError as exc:
        _fail(exc)
    finally:
        engine.dispose()
    typer.echo(json.dumps({"fixmedins_code": fixmedins_code, "scheme": scheme, "access_key": access_key,
                           "secret": secret}, ensure_ascii=False))  # fmt: skip


@keys_app.command("revoke")
def keys_revoke(
    access_key: Annotated[str, typer.Argument(help="The key to revoke.")],
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke a gateway key: refused by every server process within 30 s (their key cache)."""
    from ..db import database_url as resolve_url
    from ..db import make_engine
    from ..service.apikeys import revoke_api_key

    engine = make_engine(resolve_url(database_url), pool_size=2)
    revoked = revoke_api_key(engine, access_key, clock=dt.datetime.now)
    engine.dispose()
    if not revoked:
        typer.echo(json.dumps({"error": "NOT_FOUND", "field": "access_key",
                               "message": f"no active key {access_key}"}, ensure_ascii=False), err=True)  # fmt: skip
        raise typer.Exit(2)
    typer.echo(f"revoked {access_key}")


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64)] = 1,
    database_url: DatabaseOpt = None,
    db_in_flight: Annotated[
        int | None,
        typer.Option(
            "--db-in-flight", min=1, max=64,
            help="units of work at once per worker process; others queue (default: 1 on SQLite, else no limit)",
        ),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy", metavar="ADDR",
            help="address or CIDR network of a reverse proxy whose X-Forwarded-For names the client; repeatable "
            "(default: $YIBAO_TRUSTED_PROXIES, comma-separated, else none: the TCP peer is the client)",
        ),
    ] = None,
) -> None:
    """Run the national-interface gateway (POST /fsi/api/rsfComIfsService/callService)."""
    import logging
    import os

    import uvicorn

    from ..api.ratelimit import TRUSTED_PROXIES_ENV, TrustedProxies
    from ..db import database_url as resolve_url
    from ..db import make_engine, upgrade

    try:
        proxies = TrustedProxies(trusted_proxy) if trusted_proxy else TrustedProxies.from_env()
    except ValueError as exc:
        _fail(RequestError("--trusted-proxy" if trusted_proxy else TRUSTED_PROXIES_ENV, str(exc)))
    if trusted_proxy:
        os.environ[TRUSTED_PROXIES_ENV] = ",".join(str(n) for n in proxies.networks)  # for the worker processes
    url = resolve_url(database_url)
    os.environ["YIBAO_DATABASE_URL"] = url
    if db_in_flight is not None:
        os.environ["YIBAO_DB_IN_FLIGHT"] = str(db_in_flight)
    engine = make_engine(url, pool_size=2)
    upgrade(engine)
    engine.dispose()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    typer.echo(f"gateway: http://{host}:{port}/fsi/api/rsfComIfsService/callService")
    typer.echo(f"api:     http://{host}:{port}/v1   docs: http://{host}:{port}/docs")
    typer.echo(f"trusted proxies (X-Forwarded-For): {proxies}")
    # proxy_headers=False: uvicorn would otherwise rewrite the client address from X-Forwarded-For
    # for any peer in its own list (127.0.0.1 by default); the API alone applies the rule above.
    uvicorn.run(
        "yibao.gateway.server:build", factory=True, host=host, port=port, workers=workers, access_log=False,
        timeout_graceful_shutdown=10, proxy_headers=False,
    )  # fmt: skip


staff_app = typer.Typer(no_args_is_help=True, help="Agency staff accounts of the resource API (/v1).")
app.add_typer(staff_app, name="staff")


@staff_app.command("add")
def staff_add(
    username: Annotated[str, typer.Argument(help="Login name: 3–40 of a-z 0-9 _ . - (starting with a letter).")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.")] = "viewer",
    database_url: DatabaseOpt = None,
) -> None:
    """Create an agency staff account (the first admin, for one); the password is prompted for."""
    import os

    from ..api import create_staff
    from ..db import database_url as resolve_url
    from ..db import make_engine, upgrade

    password = os.environ.get("YIBAO_STAFF_PASSWORD") or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    engine = make_engine(resolve_url(database_url), pool_size=2)
    upgrade(engine)
    try:
        record = create_staff(engine, username, password, role, dt.datetime.now)
    except YibaoError as exc:
        _fail(exc)
    finally:
        engine.dispose()
    typer.echo(f"staff user {record.username} created with role {record.role}")


def main() -> None:
    app()
