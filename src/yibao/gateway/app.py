"""The national-interface gateway: one POST endpoint, the JSON envelope, infno dispatch.

    POST /fsi/api/rsfComIfsService/callService

Every answer is the national response envelope (HTTP 200), success or not:
``infcode`` 0 on success, -1 with a specific Chinese ``err_msg`` otherwise.
Authentication (signature headers, replay window, key ↔ institution) and the
sign-in (``sign_no`` from 9001) are checked before any business code runs.

The endpoint is a raw ASGI application (no FastAPI request parsing, dependency
solving or response classes): the app returned by :func:`create_app` hands a
``POST`` to the gateway path to it before the middleware stack and the router,
which serve everything else (the ``/v1`` API, its OpenAPI document). This is the
hot path of every HIS call: bench/front.py measures its CPU time per request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

import orjson
from fastapi import FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

from ..errors import RequestError, SettlementRefused, YibaoError
from ..policy import GatewayRules
from ..service.apikeys import GatewayKey, active_key
from ..service.settlement import SettlementService
from ..service.signatures import accept_signature
from ..service.uow import Engine
from . import (
    catalogue_queries,
    clearing,
    filings,
    inpatient,
    person_queries,
    pharmacy,
    reconciliation,
    rule_check,
    settlement_queries,
    signature,
    visit_queries,
)  # fmt: skip
from .envelope import read_envelope, text_field
from .openapi import GATEWAY_OPENAPI
from .paths import CALL_SERVICE, PREFIX, route_of
from .transactions import HANDLERS as OUTPATIENT_HANDLERS
from .transactions import SIGN_FREE, Call, signed_in

HANDLERS = {
    **OUTPATIENT_HANDLERS, **inpatient.HANDLERS, **pharmacy.HANDLERS, **filings.HANDLERS, **rule_check.HANDLERS,
    **reconciliation.HANDLERS, **settlement_queries.HANDLERS, **person_queries.HANDLERS,
    **catalogue_queries.HANDLERS, **clearing.HANDLERS, **visit_queries.HANDLERS,
}  # fmt: skip

__all__ = ["GATEWAY_PATH", "INTERNAL_ERROR", "SIGNIN_CACHE_SIZE", "SIGNIN_TTL_S", "create_app"]

GATEWAY_PATH = CALL_SERVICE
#: Accepted clock difference between a client's _api_timestamp and ours.
REPLAY_WINDOW_MS = 300_000
#: The largest envelope read: a 2204/2301 of several thousand fee lines fits many times over.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: How long one process trusts a key it read (seconds): a revocation takes effect within this time.
KEY_TTL_S = 30.0
#: A signature header longer than this is not one (Base64 of an HMAC-SHA1 has 28 characters).
_MAX_HEADER = 128
#: Access keys remembered per process (unknown ones too, so a flood of made-up keys cannot grow it).
_MAX_KEYS_CACHED = 10_000
#: Envelope fields checked as bounded printable text before dispatch.
_TEXT_FIELDS = ("sign_no", "mdtrtarea_admvs", "insuplc_admdvs", "infver", "opter", "opter_type", "recer_sys_code")
#: err_msg of an answer to an unexpected failure (tests assert it never appears).
INTERNAL_ERROR = "平台内部错误, 已记录, 请稍后重试"
#: How long one process trusts a positive sign-in check (seconds), and for how many sign_no at most.
#: A 9002 sign-out takes effect at once in the process that answers it, within this TTL in the others.
SIGNIN_TTL_S = 5.0
SIGNIN_CACHE_SIZE = 4096
#: Threads that run the (blocking) business handlers, as Starlette's thread pool had.
HANDLER_THREADS = 40
log = logging.getLogger("yibao.gateway")

#: Header names (lower case, as ASGI gives them) of both signature schemes.
_AUTH_HEADERS = frozenset([*signature.SIGNED_HEADERS, "_api_signature", *signature.TIF_HEADERS])
#: The envelope as Starlette's JSONResponse rendered it: compact, UTF-8 (Chinese err_msg readable), no NaN.
_STD_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
#: orjson writes the same bytes for plain JSON data, an order of magnitude faster (a 2204 answer: ~4 µs against
#: ~50 µs); what it would write differently (dates, dataclasses, subclasses, non-str keys) it refuses, and the
#: standard library answers. (One difference remains: a NaN or infinite float, never in an answer, becomes null.)
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
_ENCODE_LOG = json.JSONEncoder(ensure_ascii=False).encode
_JSON_TYPE = (b"content-type", b"application/json")
_DEFAULT_RULES = GatewayRules()
_MISSING_SIGNIN = "未签到或签到已失效 (sign_no), 请先调用 9001 签到"


def _encode(body: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(body, option=_ORJSON_OPTIONS)
    except TypeError:  # not plain JSON data (or an int past 64 bits): as the standard library writes it, or fails
        return _STD_ENCODE(body).encode()


def _now_text(now: dt.datetime) -> str:
    """The interface's message time: yyyyMMddHHmmssSSS."""
    return f"{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}"


class GatewayApp(FastAPI):
    """The FastAPI app (``/v1``, docs) with the gateway endpoint answered ahead of its middleware and router."""

    gateway: Callable[[Scope, Receive, Send], Any]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Every path under /fsi/api/ is the gateway's (paths.py); GET and the like on the one
        # documented endpoint keep the router's 405.
        path = scope["path"] if scope["type"] == "http" else ""
        if path.startswith(PREFIX) and (scope["method"] == "POST" or path != GATEWAY_PATH):
            await self.gateway(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(db: Engine, service: SettlementService, *, clock: Callable[[], dt.datetime] = dt.datetime.now,
               ms_clock: Callable[[], int] = lambda: int(time.time() * 1000),
               signin_ttl: float = SIGNIN_TTL_S, home_admdvs: str | None = None) -> FastAPI:  # fmt: skip
    """The gateway (and the FastAPI app ``/v1`` mounts on). ``home_admdvs``: the region whose gateway rules answer a
    caller that cannot be identified (by default the national ones)."""
    app = GatewayApp(title="yibao national-interface gateway", version="1.0", docs_url="/docs")
    sequence = itertools.count(1)
    process_tag = f"{os.getpid() % 10_000:04d}"
    keys: dict[str, tuple[GatewayKey | None, float]] = {}
    signins = _SignInCache(signin_ttl, SIGNIN_CACHE_SIZE)

    def key_of(access_key: str) -> GatewayKey | None:
        # A key is read again after KEY_TTL_S: a revocation takes effect in every process within that time.
        cached = keys.get(access_key)
        if cached is None or cached[1] <= time.monotonic():
            if len(keys) >= _MAX_KEYS_CACHED:
                keys.clear()
            cached = keys[access_key] = (active_key(db, access_key), time.monotonic() + KEY_TTL_S)
        return cached[0]

    def answer(envelope: Mapping[str, Any], received: dt.datetime, infcode: int, output: Any, err: str = "",
               warn: str = "") -> bytes:  # fmt: skip
        # inf_refmsgid, 30 characters: region (6) + time (14) + this process's number (4) and sequence (6).
        region = str(envelope.get("mdtrtarea_admvs") or "000000")[:6].ljust(6, "0")
        ref = f"{region}{received:%Y%m%d%H%M%S}{process_tag}{next(sequence) % 1_000_000:06d}"
        assert len(ref) == 30, ref
        body = {
            "infcode": infcode,
            "inf_refmsgid": ref,
            "refmsg_time": _now_text(received),
            "respond_time": _now_text(clock()),
            "err_msg": err,
            "warn_msg": warn,
            "output": output,
        }
        return _encode(body)

    def business(handler: Callable[[Call], dict[str, Any]], infno: str, msgid: str, key: GatewayKey,
                 envelope: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
        """The part that may touch the database, run in a worker thread: sign-in check, then the handler."""
        fixmedins_code = key.fixmedins_code
        sign_no = str(envelope.get("sign_no") or "")
        # A sign_no sent is checked; none sent is refused unless the region's spec makes it optional.
        if infno not in SIGN_FREE and (sign_no or rules_of(key.admdvs).sign_no_required):
            if not sign_no:
                raise _Refusal(_MISSING_SIGNIN)
            if not signins.fresh(sign_no, fixmedins_code):
                generation = signins.generation
                if not signed_in(db, sign_no, fixmedins_code):
                    raise _Refusal(_MISSING_SIGNIN)
                signins.remember(sign_no, fixmedins_code, generation)
        data = envelope.get("input") or {}
        if not isinstance(data, dict):
            raise RequestError("input", "须为 JSON 对象")
        try:
            return handler(Call(db, service, clock, infno, msgid, fixmedins_code, envelope, data))
        finally:
            if infno == "9002":  # a sign-out: no sign_no of the institution is trusted from the cache any more
                signins.forget(fixmedins_code)

    def rules_of(admdvs: str | None) -> GatewayRules:
        """The gateway rules of a region's policy in force today (the home region's for an unknown caller)."""
        region = admdvs or home_admdvs
        if region is None:
            return _DEFAULT_RULES
        try:
            return service.engine.policies.resolve(region, clock().date()).params.gateway
        except YibaoError:
            return _DEFAULT_RULES

    def authenticate(headers: list[tuple[bytes, bytes]]) -> GatewayKey:
        """The key of verified signature headers, each signature accepted once (in a worker thread)."""
        now_ms = ms_clock()
        access_key, signature, owner = _authenticate(headers, key_of, now_ms)
        # The signature stays refused while its timestamp could still pass the window check.
        now = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).replace(tzinfo=None)
        until = now + dt.timedelta(milliseconds=2 * REPLAY_WINDOW_MS)
        if not accept_signature(db, access_key, signature, until, now):
            raise _AuthError("鉴权失败: 该签名已使用 (防重放), 每个请求须重新生成时间戳 (与 nonce) 及签名", owner)
        return owner

    async def respond(scope: Scope, receive: Receive) -> tuple[int, bytes] | None:
        """The answer's HTTP status and body for one request (None if the client went away before sending it);
        logs one line."""
        started = time.perf_counter()
        received = clock()
        envelope: Mapping[str, Any] = {}
        infno = msgid = ""
        infcode = -1
        status = 200
        try:
            route = route_of(scope["path"])
            if not route.known:
                raise _Refusal(f"未知的服务路径 {scope['path'][:100]}: 请使用 {GATEWAY_PATH} 或各交易的服务路径")
            if scope["method"] != "POST":
                raise _Refusal(f"服务路径只接受 POST 请求 (收到 {scope['method']})")
            # Who is calling, before a byte of the body is read: an unsigned body is never parsed.
            key = await _in_thread(authenticate, scope["headers"])
            read = await _read_body(receive)
            if read is None:
                return None
            raw, too_large = read
            if too_large:
                raise RequestError("", f"报文超过 {MAX_BODY_BYTES} 字节")
            envelope = read_envelope(raw, _charset(scope["headers"]))
            infno = text_field(envelope, "infno", max_len=8, required=route.infno is None) or str(route.infno)
            if route.infno is not None and infno != route.infno:
                raise RequestError("infno", f"{infno} 与服务路径所指交易 {route.infno} 不符")
            msgid = text_field(envelope, "msgid", max_len=40, required=True)
            fixmedins_code = text_field(envelope, "fixmedins_code", max_len=30)
            for name in _TEXT_FIELDS:
                text_field(envelope, name, max_len=64)
            if fixmedins_code != key.fixmedins_code:
                raise _AuthError(f"鉴权失败: fixmedins_code {fixmedins_code or '(空)'} 不属于该密钥", key)
            handler = HANDLERS.get(infno)
            if handler is None:
                raise _Refusal(f"不支持的交易编号 infno={infno}")
            output = await _in_thread(business, handler, infno, msgid, key, envelope)
            body = answer(envelope, received, 0, output)
            infcode = 0
        except SettlementRefused as exc:
            body = answer(envelope, received, -1, None, "; ".join(f"[{r.code}] {r.message}" for r in exc.reasons))
        except RequestError as exc:
            where = f"[{exc.field}] " if exc.field else ""
            body = answer(envelope, received, -1, None, f"{where}{exc.reason}")
        except _AuthError as exc:
            if rules_of(exc.key.admdvs if exc.key else None).auth_failure == "http401":
                status = 401
                body = _encode({"code": 401, "message": str(exc), "infcode": -1, "err_msg": str(exc)})
            else:
                body = answer(envelope, received, -1, None, str(exc))
        except (YibaoError, _Refusal) as exc:
            body = answer(envelope, received, -1, None, str(exc))
        except Exception:
            # The HIS must always get an envelope; the defect is logged with its msgid for repair.
            log.exception("unexpected error answering msgid=%s infno=%s", msgid, infno)
            body = answer(envelope, received, -1, None, INTERNAL_ERROR)
        if log.isEnabledFor(logging.INFO):
            log.info(
                _ENCODE_LOG(
                    {"msgid": msgid, "infno": infno, "fixmedins_code": envelope.get("fixmedins_code"), "status": status,
                     "infcode": infcode, "ms": round((time.perf_counter() - started) * 1000, 2)}
                )
            )  # fmt: skip
        return status, body

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        answered = await respond(scope, receive)
        if answered is None:
            return  # nobody to answer
        status, body = answered
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()), _JSON_TYPE]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    app.gateway = serve

    # The same endpoint as a route of the router: in the OpenAPI document as before, a 405 to other
    # methods as before, and the answer to a POST that reaches the router without GatewayApp.__call__
    # seeing it first (the app mounted under a prefix).
    @app.post(GATEWAY_PATH, summary="National interface (国家医保信息平台 接口规范): one envelope per transaction",
              description="The national request envelope in (signed with the _api_* or the x-tif-* headers, as the "
              "institution's key says), the national answer envelope out: HTTP 200 with infcode 0 or -1, success or "
              "refusal. The same handler answers callService/{infno} and the per-transaction service paths. "
              "Transactions, fields and worked envelopes: docs/gateway.md, docs/gateway-envelopes.md.",
              openapi_extra=GATEWAY_OPENAPI, tags=["gateway"])  # fmt: skip
    async def call_service(request: Request) -> Response:
        answered = await respond(request.scope, request.receive)
        status, body = answered or (200, b"")
        return Response(body, status_code=status, media_type="application/json")

    return app


class _Refusal(Exception):
    """A refusal with a message for err_msg."""


class _AuthError(Exception):
    """The caller could not be authenticated (``key``: the key named, when it exists)."""

    def __init__(self, message: str, key: GatewayKey | None = None) -> None:
        super().__init__(message)
        self.key = key


class _SignInCache:
    """Positive sign-in checks, trusted for ``ttl`` seconds by this process (bounded; thread-safe).

    Only a sign-in found valid is remembered. ``forget`` (after a 9002 of the institution) drops the
    institution's entries and bumps ``generation``, so a check that read the database before the
    sign-out committed cannot store its now stale answer afterwards.
    """

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl, self.size = ttl, size
        self.generation = 0
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def fresh(self, sign_no: str, fixmedins_code: str) -> bool:
        entry = self._entries.get(sign_no)
        return entry is not None and entry[0] == fixmedins_code and entry[1] > time.monotonic()

    def remember(self, sign_no: str, fixmedins_code: str, generation: int) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            now = time.monotonic()
            self._entries.pop(sign_no, None)
            if len(self._entries) >= self.size:
                for stale in [k for k, (_, until) in self._entries.items() if until <= now]:
                    del self._entries[stale]
                while len(self._entries) >= self.size:  # still full: drop the oldest
                    del self._entries[next(iter(self._entries))]
            self._entries[sign_no] = (fixmedins_code, now + self.ttl)

    def forget(self, fixmedins_code: str) -> None:
        with self._lock:
            self.generation += 1
            for sign_no in [k for k, (code, _) in self._entries.items() if code == fixmedins_code]:
                del self._entries[sign_no]


async def _read_body(receive: Receive) -> tuple[bytes, bool] | None:
    """(body, too large): past MAX_BODY_BYTES the rest is read and dropped. None if the client went away."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body, len(body) > MAX_BODY_BYTES
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
        elif chunks:
            chunks = []
        if not message.get("more_body", False):
            return b"".join(chunks), size > MAX_BODY_BYTES


def _charset(headers: list[tuple[bytes, bytes]]) -> str:
    """The charset the Content-Type names (utf-8 when it names none)."""
    for name, value in headers:
        if name.lower() == b"content-type":
            for part in value.decode("latin-1").split(";")[1:]:
                key, _, given = part.strip().partition("=")
                if key.lower() == "charset" and given:
                    return given.strip().strip('"')[:20]
            break
    return "utf-8"


class _Scheme(NamedTuple):
    """One provincial header scheme: which headers carry the key, the time and the signature."""

    name: str  # the key's scheme (api_keys.scheme)
    headers: tuple[str, ...]  # every header it needs
    key: str
    timestamp: str
    digits: int  # of the timestamp: 13 (milliseconds) or 10 (seconds)
    signature: str
    verify: Callable[[str, dict[str, str]], bool]  # (secret, headers) → the signature matches


_SCHEMES = {
    "api": _Scheme("api", (*signature.SIGNED_HEADERS, "_api_signature"), "_api_access_key", "_api_timestamp", 13,
                   "_api_signature", lambda secret, h: signature.verify(secret, h, h["_api_signature"])),
    "tif": _Scheme("tif", signature.TIF_HEADERS, "x-tif-paasid", "x-tif-timestamp", 10, "x-tif-signature",
                   lambda secret, h: signature.tif_verify(secret, h["x-tif-timestamp"], h["x-tif-nonce"],
                                                          h["x-tif-signature"])),
}  # fmt: skip
_SCHEME_NAMES = {"api": "_api_*", "tif": "x-tif-*"}


def _authenticate(
    headers: list[tuple[bytes, bytes]], key_of: Callable[[str], GatewayKey | None], now_ms: int
) -> tuple[str, str, GatewayKey]:
    """(access key, signature, the key) of signature headers that verify; refuses otherwise.

    The scheme is the one the headers use (``x-tif-*`` or ``_api_*``), and it must be the key's."""
    fields: dict[str, str] = {}
    for raw_name, raw_value in headers:  # the first of repeated headers counts, as with Starlette's Headers.get
        name = raw_name.decode("latin-1").lower()
        if name in _AUTH_HEADERS and name not in fields:
            fields[name] = raw_value.decode("latin-1")
    if any(len(value) > _MAX_HEADER for value in fields.values()):
        raise _AuthError(f"鉴权失败: 请求头过长 (每项最多 {_MAX_HEADER} 个字符)")
    scheme = _SCHEMES["tif" if "x-tif-signature" in fields or "x-tif-paasid" in fields else "api"]
    missing = [name for name in scheme.headers if not fields.get(name)]
    if missing:
        raise _AuthError(f"鉴权失败: 缺少请求头 {', '.join(missing)}")
    key = key_of(fields[scheme.key])
    if key is None:
        raise _AuthError(f"鉴权失败: 未知或已停用的 {scheme.key}")
    if key.scheme != scheme.name:
        raise _AuthError(f"鉴权失败: 该密钥须以 {_SCHEME_NAMES[key.scheme]} 请求头签名", key)
    timestamp = fields[scheme.timestamp]
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) == scheme.digits):
        unit = "毫秒" if scheme.digits == 13 else "秒级"
        raise _AuthError(f"鉴权失败: {scheme.timestamp} 须为{scheme.digits}位{unit}时间戳", key)
    stamp_ms = int(timestamp) * (1 if scheme.digits == 13 else 1000)
    if abs(now_ms - stamp_ms) > REPLAY_WINDOW_MS:
        raise _AuthError(f"鉴权失败: {scheme.timestamp} 超出允许的时间窗口 (防重放)", key)
    if not scheme.verify(key.secret, fields):
        raise _AuthError(f"鉴权失败: {scheme.signature} 签名不符", key)
    # x-tif signatures are hex, compared without regard to case: one form is recorded against replay.
    given = fields[scheme.signature]
    return fields[scheme.key], given.lower() if scheme.name == "tif" else given, key


_T = TypeVar("_T")
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


async def _in_thread(fn: Callable[..., _T], *args: Any) -> _T:
    # Handlers block on the database: run them off the event loop, in one pool per process.
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="yibao-gateway")
    return await asyncio.get_running_loop().run_in_executor(_executor, fn, *args)
