"""The gateway's one error layer: every error response is `{"error": {code, message, details}}`.

Routes raise HeddleError (or let FastAPI raise its validation errors); the handlers here turn
each kind into the contract's status and body. `CatchAllMiddleware` is the last resort: an
exception that says a dependency cannot be reached (database, Redis, a peer) is a 503, any
other unexpected one is logged and answered with a 500 in the same shape. Every 503 carries
`Retry-After`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import grpc
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.common.errors import HeddleError, Unavailable, from_rpc_error
from libs.common.grpcutil import is_unavailable

log = logging.getLogger(__name__)

# Codes of the errors the gateway itself raises (HeddleError subclasses carry their own).
INVALID_JSON = "invalid_json"
INVALID_YAML = "invalid_yaml"
INVALID_REQUEST = "invalid_request"
PAYLOAD_TOO_LARGE = "payload_too_large"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: PAYLOAD_TOO_LARGE,
    415: "unsupported_media_type",
    429: "resource_exhausted",
}


class InvalidJson(HeddleError):
    """A body that is not well-formed JSON (400); details locate the error."""

    code = INVALID_JSON
    http_status = 400


class InvalidYaml(HeddleError):
    """A body that is not well-formed YAML (400); details locate the error."""

    code = INVALID_YAML
    http_status = 400


#: Retry-After of a 503 when the app's settings do not say (GatewaySettings does).
DEFAULT_RETRY_AFTER_S = 2


def dependency_unavailable(error: BaseException) -> bool:
    """Whether error means a dependency cannot be reached now (a 503, not a 500): the
    database or a peer (libs.common.grpcutil.is_unavailable), or Redis."""
    if isinstance(error, HeddleError):
        return isinstance(error, Unavailable)
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return True
    return is_unavailable(error)


def _dependency_of(error: BaseException) -> str:
    if isinstance(error, redis.exceptions.RedisError):
        return "redis"
    current: BaseException | None = error
    for _ in range(16):  # a cause chain may loop
        if current is None:
            break
        if type(current).__module__.split(".")[0] in ("sqlalchemy", "asyncpg", "aiosqlite"):
            return "database"
        current = current.__cause__ or current.__context__
    return "service"


def unavailable(dependency: str, error: BaseException | None = None) -> Unavailable:
    """The 503 of a dependency that is down, naming it (details.dependency)."""
    reason = f": {type(error).__name__}" if error is not None else ""
    return Unavailable(
        f"the {dependency} is unavailable, try again later{reason}", {"dependency": dependency}
    )


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def http_error_for(error: HeddleError) -> JSONResponse:
    return error_response(error.http_status, error.code, error.message, error.details)


def malformed_json(document: str, position: int, reason: str) -> InvalidJson:
    """The 400 for unparsable JSON, naming the 1-based line and column of the error."""
    before = document[:position]
    line = before.count("\n") + 1
    column = position - (before.rfind("\n") + 1) + 1
    return InvalidJson(
        f"malformed JSON at line {line} column {column}: {reason}",
        {"line": line, "column": column, "position": position},
    )


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """FastAPI/pydantic errors as `[{"loc": "body.inputs", "msg": ..., "type": ...}]`."""
    return [
        {
            "loc": ".".join(str(part) for part in error.get("loc", ())),
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in errors
    ]


def invalid_request(errors: list[dict[str, Any]]) -> RequestValidationError:
    """A request error in pydantic's shape (`loc` as a tuple), answered with a 422."""
    return RequestValidationError(errors)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":
            loc = error.get("loc", ())
            position = loc[-1] if loc and isinstance(loc[-1], int) else 0
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            document = exc.body if isinstance(exc.body, str) else ""
            return http_error_for(malformed_json(document, position, reason))
    details = validation_details(errors)
    summary = "; ".join(f"{d['loc']}: {d['msg']}" for d in details[:5])
    return error_response(422, INVALID_REQUEST, f"invalid request: {summary}", details)


async def _on_heddle_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HeddleError)
    if exc.http_status >= 500:
        log.warning("dependency error on %s %s: %s", request.method, request.url.path, exc)
    return http_error_for(exc)


async def _on_rpc_error(request: Request, exc: Exception) -> JSONResponse:
    # Calls go through ServiceClients.call, which already converts; this is the safety net.
    assert isinstance(exc, grpc.RpcError)
    return await _on_heddle_error(request, from_rpc_error(exc))


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, "internal" if status >= 500 else "bad_request")
    default = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    message = exc.detail if isinstance(exc.detail, str) else default
    if status == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif status == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    return error_response(status, code, message, None, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the contract's shape."""
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HeddleError, _on_heddle_error)
    app.add_exception_handler(grpc.RpcError, _on_rpc_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)


def _retry_after_s(scope: Scope) -> int:
    app = scope.get("app")
    settings = getattr(getattr(app, "state", None), "settings", None)
    return int(getattr(settings, "dependency_retry_after_s", DEFAULT_RETRY_AFTER_S))


class CatchAllMiddleware:
    """Answers an unexpected exception in the contract's shape: 503 when it says that a
    dependency cannot be reached, else a logged 500; and gives every 503 a Retry-After.

    Starlette's own last-resort handler re-raises after answering; this one does not, so the
    server does not log a second traceback and test clients see the response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 503:
                    headers = MutableHeaders(scope=message)
                    headers.setdefault("retry-after", str(_retry_after_s(scope)))
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            if not started and dependency_unavailable(error):
                log.warning(
                    "dependency unavailable on %s %s: %r",
                    scope.get("method"),
                    scope.get("path"),
                    error,
                    extra={"request_id": scope.get("state", {}).get("request_id")},
                )
                response = http_error_for(unavailable(_dependency_of(error), error))
                await response(scope, receive, tracking_send)
                return
            log.exception(
                "unhandled error on %s %s",
                scope.get("method"),
                scope.get("path"),
                extra={"request_id": scope.get("state", {}).get("request_id")},
            )
            if started:
                raise
            response = error_response(500, "internal", "internal error")
            await response(scope, receive, send)
