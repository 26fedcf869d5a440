"""Typed exceptions of the SDK. API errors carry the gateway's `{"error": {code, message,
details}}` and the HTTP status."""

from __future__ import annotations

from typing import Any


class HeddleError(Exception):
    """Base of every exception the SDK raises on purpose."""


class ConnectionFailed(HeddleError):
    """The server could not be reached (or the connection broke mid-request)."""


class APIError(HeddleError):
    """The HTTP API refused a request."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class BadRequest(APIError):
    """400 or 422: the request (a definition, inputs, params) is invalid; `details` locates
    each problem."""


class Unauthenticated(APIError):
    """401: no credential, or an unknown or revoked one."""


class PermissionDenied(APIError):
    """403: the key's scope or role does not allow this."""


class NotFound(APIError):
    """404."""


class Conflict(APIError):
    """409: e.g. cancelling a finished execution."""


class RateLimited(APIError):
    """429; `retry_after` is the server's advice in seconds, when it gave one."""

    retry_after: float | None = None


class Unavailable(APIError):
    """503: a dependency of the server is down; retry later."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    422: BadRequest,
    429: RateLimited,
    503: Unavailable,
}


def api_error(status: int, body: Any, fallback: str = "") -> APIError:
    """The exception for an error response (its parsed JSON body, if any)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        message = str(error.get("message") or fallback or f"HTTP {status}")
        details = error.get("details")
    else:
        code, message, details = "", fallback or f"HTTP {status}", None
    return _BY_STATUS.get(status, APIError)(status, code, message, details)


class ExecutionTimeout(HeddleError):
    """`wait()` gave up before the execution ended (the execution goes on)."""


class WorkerError(HeddleError):
    """The cluster refused the worker for good (bad key, a viewer key, an invalid or
    conflicting node type): reconnecting would not help."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
