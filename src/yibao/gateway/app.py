"""The national-interface gateway: one POST endpoint, the JSON envelope, infno dispatch.

    POST /fsi/api/rsfComIfsService/callService

Every answer is the national response envelope (HTTP 200), success or not:
``infcode`` 0 on success, -1 with a specific Chinese ``err_msg`` otherwise.
Authentication (signature headers, replay window, key ↔ institution) and the
sign-in (``sign_no`` from 9001) are checked before any business code runs.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, select

from ..db.schema import api_keys
from ..errors import RequestError, SettlementRefused, YibaoError
from ..service.settlement import SettlementService
from ..service.uow import transact
from . import inpatient, other, pharmacy, signature
from .transactions import HANDLERS as OUTPATIENT_HANDLERS
from .transactions import SIGN_FREE, Call, signed_in

HANDLERS = {**OUTPATIENT_HANDLERS, **inpatient.HANDLERS, **pharmacy.HANDLERS, **other.HANDLERS}

__all__ = ["GATEWAY_PATH", "INTERNAL_ERROR", "create_app"]

GATEWAY_PATH = "/fsi/api/rsfComIfsService/callService"
#: Accepted clock difference between a client's _api_timestamp and ours.
REPLAY_WINDOW_MS = 300_000
MAX_BODY_BYTES = 16 * 1024 * 1024
#: err_msg of an answer to an unexpected failure (tests assert it never appears).
INTERNAL_ERROR = "平台内部错误, 已记录, 请稍后重试"
log = logging.getLogger("yibao.gateway")


def _now_text(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%d %H:%M:%S")


def create_app(db: Engine, service: SettlementService, *, clock: Callable[[], dt.datetime] = dt.datetime.now,
               ms_clock: Callable[[], int] = lambda: int(time.time() * 1000)) -> FastAPI:  # fmt: skip
    app = FastAPI(title="yibao national-interface gateway", version="1.0", docs_url="/docs")
    sequence = itertools.count(1)
    keys: dict[str, tuple[str, str] | None] = {}

    def key_of(access_key: str) -> tuple[str, str] | None:
        # Keys are read once per process; revocation takes effect on restart (documented).
        if access_key not in keys:
            row = transact(
                db,
                lambda conn: conn.execute(select(api_keys).where(api_keys.c.access_key == access_key)).first(),
                readonly=True,
            )
            keys[access_key] = None if row is None or row.revoked_at is not None else (row.secret, row.fixmedins_code)
        return keys[access_key]

    def answer(envelope: Mapping[str, Any], infcode: int, output: Any, err: str = "", warn: str = "") -> JSONResponse:
        now = clock()
        ref = f"{str(envelope.get('mdtrtarea_admvs') or '000000')[:6]}{now:%Y%m%d%H%M%S}{next(sequence) % 10000:04d}"
        body = {
            "infcode": infcode,
            "inf_refmsgid": ref,
            "refmsg_time": _now_text(now),
            "respond_time": _now_text(clock()),
            "err_msg": err,
            "warn_msg": warn,
            "output": output,
        }
        return JSONResponse(body)

    @app.post(GATEWAY_PATH)
    async def call_service(request: Request) -> JSONResponse:
        started = time.perf_counter()
        raw = await request.body()
        envelope: Mapping[str, Any] = {}
        infno = msgid = ""
        try:
            if len(raw) > MAX_BODY_BYTES:
                raise RequestError("", f"request larger than {MAX_BODY_BYTES} bytes")
            try:
                decoded = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RequestError("", f"报文不是合法的 UTF-8 JSON: {exc}") from None
            if not isinstance(decoded, dict):
                raise RequestError("", "报文必须是 JSON 对象")
            envelope = decoded
            infno = str(envelope.get("infno") or "").strip()
            msgid = str(envelope.get("msgid") or "").strip()
            fixmedins_code = str(envelope.get("fixmedins_code") or "").strip()
            if not infno:
                raise RequestError("infno", "missing required value")
            if not msgid or len(msgid) > 40:
                raise RequestError("msgid", "missing, or longer than 40 characters")
            _authenticate(request, fixmedins_code, key_of, ms_clock())
            handler = HANDLERS.get(infno)
            if handler is None:
                raise _Refusal(f"不支持的交易编号 infno={infno}")
            if infno not in SIGN_FREE:
                sign_no = str(envelope.get("sign_no") or "")
                if not sign_no or not signed_in(db, sign_no, fixmedins_code):
                    raise _Refusal("未签到或签到已失效 (sign_no), 请先调用 9001 签到")
            data = envelope.get("input") or {}
            if not isinstance(data, dict):
                raise RequestError("input", "must be an object")
            call = Call(db, service, clock, infno, msgid, fixmedins_code, envelope, data)
            output = await _in_thread(handler, call)
            response = answer(envelope, 0, output)
        except SettlementRefused as exc:
            response = answer(envelope, -1, None, "; ".join(f"[{r.code}] {r.message}" for r in exc.reasons))
        except RequestError as exc:
            where = f"[{exc.field}] " if exc.field else ""
            response = answer(envelope, -1, None, f"{where}{exc.reason}")
        except _AuthError as exc:
            response = answer(envelope, -1, None, str(exc))
        except (YibaoError, _Refusal) as exc:
            response = answer(envelope, -1, None, str(exc))
        except Exception:
            # The HIS must always get an envelope; the defect is logged with its msgid for repair.
            log.exception("unexpected error answering msgid=%s infno=%s", msgid, infno)
            response = answer(envelope, -1, None, INTERNAL_ERROR)
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info(
            json.dumps(
                {"msgid": msgid, "infno": infno, "fixmedins_code": envelope.get("fixmedins_code"),
                 "status": response.status_code, "ms": round(elapsed_ms, 2)},
                ensure_ascii=False,
            )
        )  # fmt: skip
        return response

    return app


class _Refusal(Exception):
    """A refusal with a message for err_msg."""


class _AuthError(Exception):
    """The caller could not be authenticated."""


def _authenticate(
    request: Request,
    fixmedins_code: str,
    key_of: Callable[[str], tuple[str, str] | None],
    now_ms: int,
) -> None:
    fields = {name: request.headers.get(name, "") for name in signature.SIGNED_HEADERS}
    given = request.headers.get("_api_signature", "")
    missing = [name for name, value in fields.items() if not value] + ([] if given else ["_api_signature"])
    if missing:
        raise _AuthError(f"鉴权失败: 缺少请求头 {', '.join(missing)}")
    key = key_of(fields["_api_access_key"])
    if key is None:
        raise _AuthError("鉴权失败: 未知或已停用的 _api_access_key")
    secret, owner = key
    timestamp = fields["_api_timestamp"]
    if not (timestamp.isdigit() and len(timestamp) == 13):
        raise _AuthError("鉴权失败: _api_timestamp 须为13位毫秒时间戳")
    if abs(now_ms - int(timestamp)) > REPLAY_WINDOW_MS:
        raise _AuthError("鉴权失败: _api_timestamp 超出允许的时间窗口 (防重放)")
    if not signature.verify(secret, fields, given):
        raise _AuthError("鉴权失败: _api_signature 签名不符")
    if fixmedins_code != owner:
        raise _AuthError(f"鉴权失败: fixmedins_code {fixmedins_code or '(空)'} 不属于该密钥")


async def _in_thread(handler: Callable[[Call], dict[str, Any]], call: Call) -> dict[str, Any]:
    # Handlers block on the database: run them off the event loop.
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(handler, call)
