"""Errors of the resource API as ``application/problem+json`` (RFC 9457).

Every error answer carries ``type``, ``title``, ``status``, ``detail``, the stable
``code`` of the exception that caused it, and ``field`` where one input is at fault.
Routes of the API use :class:`ProblemRoute`, which turns any exception raised while
handling a request into such an answer; :func:`install` adds the same treatment for
the router's own 404/405 answers under ``/v1``, leaving other paths of the app alone.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import CatalogError, PolicyError, RequestError, SettlementRefused, YibaoError
from ..service.admission import Overloaded
from ..service.settlement import Forbidden as SettlementForbidden
from ..service.settlement import IdempotencyConflict
from ..service.settlement import NotFound as SettlementNotFound

__all__ = [
    "MAX_BODY_BYTES",
    "PROBLEM_MEDIA_TYPE",
    "ApiError",
    "Problem",
    "ProblemRoute",
    "install",
    "problem_response",
    "problem_responses",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
PREFIX = "/v1"
#: Largest request body the API reads.
MAX_BODY_BYTES = 64 * 1024
log = logging.getLogger("yibao.api")

_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable input",
    429: "Too many requests",
    500: "Internal error",
}
#: Service codes that mean "the current state does not allow this", answered 409.
CONFLICT_CODES = frozenset(
    {
        "ALREADY_PAUSED",
        "ALREADY_SUSPENDED",
        "ALREADY_UNBOUND",
        "CARD_EXISTS",
        "CERTNO_TAKEN",
        "DUPLICATE_BINDING",
        "FILING_CANCELLED",
        "FILING_OVERLAP",
        "IDEMPOTENCY_KEY_REUSED",
        "INSTITUTION_EXISTS",
        "LAST_ADMIN",
        "MSGID_CONFLICT",
        "PERSON_EXISTS",
        "PIN_EXISTS",
        "REQUEST_EXPIRED",
        "REQUEST_NOT_PENDING",
        "REQUEST_PENDING",
        "STAFF_EXISTS",
        "TOO_MANY_MEMBERS",
        "TOO_MANY_PENDING",
    }
)
#: Service codes that mean "this caller may not do this", answered 403.
FORBIDDEN_CODES = frozenset({"GUARDIAN_REQUIRED", "NOT_A_PARTY", "NOT_THE_REQUESTER", "OWN_REQUEST", "PIN_LOCKED"})


class ProblemReason(BaseModel):
    code: str
    message: str


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An error answer (``application/problem+json``)."""

    type: str = Field(description="URI naming the kind of problem: urn:yibao:problem:<code>")
    title: str = Field(description="Short summary of the HTTP status")
    status: int = Field(description="The HTTP status code")
    detail: str = Field(description="What went wrong, for a person")
    code: str = Field(description="Stable machine-readable code (the exception's code)")
    field: str | None = Field(default=None, description="The input at fault, where known")
    instance: str | None = Field(default=None, description="The request path")
    reasons: list[ProblemReason] | None = Field(default=None, description="Every reason of a refusal")
    errors: list[FieldError] | None = Field(default=None, description="Every invalid input of a 422")


class ApiError(YibaoError):
    """An error the API raises itself, with its HTTP status."""

    def __init__(
        self, status: int, code: str, detail: str, *, field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.status, self.code, self.detail, self.field = status, code, detail, field
        self.headers = dict(headers or {})
        super().__init__(detail)


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = Problem(
        type=f"urn:yibao:problem:{code}",
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
        field=field or None,
        instance=instance,
        **extra,
    )
    return Response(
        content=body.model_dump_json(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def status_of(exc: YibaoError, path_params: Iterable[str]) -> int:
    """The HTTP status of a service exception."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, Overloaded):
        return 503
    if isinstance(exc, SettlementNotFound):
        return 404
    if isinstance(exc, (SettlementForbidden, IdempotencyConflict)):
        # Reached only through the state of the settlement (already reversed, is a reversal).
        return 409
    if isinstance(exc, SettlementRefused):
        return 422
    if isinstance(exc, (PolicyError, CatalogError)):
        return 500
    if isinstance(exc, RequestError):
        if exc.code in CONFLICT_CODES:
            return 409
        if exc.code == "NOT_FOUND" or exc.code.endswith("_UNKNOWN"):
            # The resource named by the path does not exist; one named in the body is bad input.
            return 404 if exc.field in set(path_params) else 422
        if exc.code in FORBIDDEN_CODES:
            return 403
        return 422
    return 422


def error_problem(request: Request, exc: YibaoError) -> Response:
    status = status_of(exc, request.path_params)
    path = request.url.path
    if isinstance(exc, Overloaded):
        return problem_response(503, exc.code, str(exc), instance=path, headers={"Retry-After": "1"})
    if status >= 500:
        log.error("configuration error on %s: %s", path, exc)
        return problem_response(500, exc.code, "the server's configuration is invalid", instance=path)
    if isinstance(exc, ApiError):
        return problem_response(status, exc.code, exc.detail, instance=path, field=exc.field, headers=exc.headers)
    if isinstance(exc, SettlementRefused):
        reasons = [ProblemReason(code=r.code, message=r.message) for r in exc.reasons]
        return problem_response(status, exc.code, str(exc), instance=path, reasons=reasons)
    field = exc.field if isinstance(exc, RequestError) else None
    detail = exc.reason if isinstance(exc, RequestError) else str(exc)
    return problem_response(status, exc.code, detail or exc.code, instance=path, field=field)


def _loc(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts)


def validation_problem(request: Request, exc: RequestValidationError) -> Response:
    errors = list(exc.errors())
    path = request.url.path
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(400, "MALFORMED_JSON", "the request body is not valid JSON", instance=path)
    for e in errors:
        loc = [str(p).lower() for p in e.get("loc", ())]
        if e.get("type") == "missing" and loc[:2] == ["header", "idempotency-key"]:
            return problem_response(
                400, "IDEMPOTENCY_KEY_REQUIRED", "this request moves money: send an Idempotency-Key header",
                instance=path, field="Idempotency-Key",
            )  # fmt: skip
    listed = [FieldError(field=_loc(e.get("loc", ())), message=str(e.get("msg", ""))) for e in errors[:20]]
    first = listed[0] if listed else FieldError(field="", message="invalid input")
    return problem_response(
        422, "INVALID_INPUT", f"{first.field or 'request'}: {first.message}", instance=path, field=first.field,
        errors=listed,
    )  # fmt: skip


def http_problem(request: Request, exc: StarletteHTTPException) -> Response:
    code = {
        401: "UNAUTHENTICATED",
        403: "FORBIDDEN",
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        413: "REQUEST_TOO_LARGE",
        415: "UNSUPPORTED_MEDIA_TYPE",
    }.get(exc.status_code, "HTTP_ERROR")
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "error")
    status = exc.status_code if 400 <= exc.status_code < 600 else 400
    return problem_response(status, code, detail, instance=request.url.path, headers=exc.headers)


def _refuse_body(request: Request) -> Response | None:
    """413 for a declared body over the limit, 415 for a body that is not JSON."""
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return problem_response(
            413, "REQUEST_TOO_LARGE", f"request bodies are limited to {MAX_BODY_BYTES} bytes", instance=request.url.path
        )
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    has_body = (length.isascii() and length.isdigit() and int(length) > 0) or "transfer-encoding" in request.headers
    if has_body and not (media == "application/json" or media.endswith("+json")):
        return problem_response(
            415, "UNSUPPORTED_MEDIA_TYPE", "send the body as application/json", instance=request.url.path,
            field="Content-Type",
        )  # fmt: skip
    return None


def _query_names(dependant: Any) -> set[str]:
    """Query parameters an endpoint declares, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


class ProblemRoute(APIRoute):
    """An API route whose every failure is answered as ``application/problem+json``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        route = self

        async def guarded(request: Request) -> Response:
            started = time.perf_counter()
            response = await answer(request)
            log.info(
                json.dumps(
                    {"method": request.method, "path": request.url.path, "status": response.status_code,
                     "caller": getattr(request.state, "yibao_caller", None),
                     "ms": round((time.perf_counter() - started) * 1000, 2)},
                    ensure_ascii=False,
                )
            )  # fmt: skip
            return response

        known = _query_names(self.dependant)

        async def answer(request: Request) -> Response:
            unknown = sorted(set(request.query_params) - known)
            if unknown:
                # A misspelt filter must not silently widen a query: refuse what is not declared.
                return problem_response(
                    422, "UNKNOWN_PARAMETER", f"unknown query parameter {unknown[0]!r}"
                    + (f"; this endpoint takes {', '.join(sorted(known))}" if known else "; this endpoint takes none"),
                    instance=request.url.path, field=unknown[0],
                )  # fmt: skip
            if route.body_field is not None:
                refused = _refuse_body(request)
                if refused is not None:
                    return refused
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return validation_problem(request, exc)
            except StarletteHTTPException as exc:
                return http_problem(request, exc)
            except YibaoError as exc:
                return error_problem(request, exc)
            except Exception as exc:
                if type(exc).__module__.startswith(("starlette.middleware.body_limit", "starlette.requests")):
                    raise  # the body limit's 413, a client that went away: Starlette answers those
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                return problem_response(500, "INTERNAL_ERROR", "unexpected server error", instance=request.url.path)

        return guarded


def install(app: FastAPI) -> None:
    """Answer the router's own errors (unknown path, wrong method) under /v1 as problems too."""
    previous = app.exception_handlers.get(StarletteHTTPException)

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        path = request.url.path
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return http_problem(request, exc)
        if previous is not None:
            result = previous(request, exc)
            if isinstance(result, Awaitable):
                result = await result
            assert isinstance(result, Response)
            return result
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, handler)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, as problem+json."""
    descriptions = {
        400: "Malformed request (bad JSON, missing Idempotency-Key)",
        401: "Not authenticated, or the session expired",
        403: "Authenticated, but not allowed (role, or not your data)",
        404: "No such resource",
        409: "Conflicts with the current state, or an Idempotency-Key reused for another request",
        413: "Request body too large",
        415: "The body is not application/json",
        422: "Invalid input; `field` names it",
        429: "Too many failed attempts from this client; see Retry-After",
    }
    ref = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(status, _TITLES.get(status, "Error")),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": ref}},
        }
        for status in statuses
    }
