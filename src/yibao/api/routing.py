"""Registering the API's routes directly on the host app, each as a :class:`ProblemRoute`."""

# No ``from __future__ import annotations``: FastAPI reads current_caller's signature at runtime.

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .auth import Caller, authenticate
from .context import Context
from .problems import MAX_BODY_BYTES, PREFIX, ProblemRoute, problem_responses

__all__ = ["Registrar"]

F = TypeVar("F", bound=Callable[..., Any])


class Registrar:
    """``@r.route("GET", "/persons/{psn_no}", ...)`` adds ``/v1/persons/{psn_no}`` to the app."""

    def __init__(self, app: FastAPI, ctx: Context) -> None:
        self.app, self.ctx = app, ctx
        bearer = HTTPBearer(
            auto_error=False,
            scheme_name="bearer",
            description="The token from POST /v1/sessions: `Authorization: Bearer <token>`",
        )

        def current_caller(
            request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
        ) -> Caller:
            token = credentials.credentials if credentials is not None else None
            caller = ctx.read(lambda conn: authenticate(conn, token, ctx.clock()))
            request.state.yibao_caller = caller.id  # for the request log line
            return caller

        self.bearer = bearer
        self.caller = current_caller

    def route(
        self,
        method: str,
        path: str,
        *,
        tag: str,
        errors: tuple[int, ...],
        response_model: Any = None,
        status_code: int = 200,
        summary: str | None = None,
    ) -> Callable[[F], F]:
        def register(endpoint: F) -> F:
            self.app.router.add_api_route(
                PREFIX + path,
                endpoint,
                methods=[method],
                tags=[tag],
                summary=summary,
                response_model=response_model,
                status_code=status_code,
                responses=problem_responses(*errors, *((413, 415) if method == "POST" else ())),
                operation_id=endpoint.__name__,
                route_class_override=ProblemRoute,
                # A hard cap for bodies without Content-Length; declared ones are checked first (problem+json).
                max_body_size=16 * MAX_BODY_BYTES,
            )
            return endpoint

        return register
