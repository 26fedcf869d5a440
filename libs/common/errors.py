"""Domain errors shared by every service, and their mapping to gRPC and HTTP status codes.

A service raises a HeddleError; the gRPC error interceptor turns it into a status code plus a
JSON trailer; a client turns that back into the same HeddleError with `from_rpc_error`; the
gateway turns it into the contract's JSON error body. One mapping, three places.
"""

from __future__ import annotations

from typing import Any, ClassVar

import grpc

from libs.common import jsonutil

ERROR_TRAILER = "heddle-error-bin"


class HeddleError(Exception):
    """Base of every error a client may see: a code, a message, optional details."""

    code: ClassVar[str] = "internal"
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidArgument(HeddleError):
    code = "invalid_argument"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 422


class NotFound(HeddleError):
    code = "not_found"
    grpc_status = grpc.StatusCode.NOT_FOUND
    http_status = 404


class Conflict(HeddleError):
    code = "conflict"
    grpc_status = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409


class FailedPrecondition(HeddleError):
    code = "failed_precondition"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class Unauthenticated(HeddleError):
    code = "unauthenticated"
    grpc_status = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class PermissionDenied(HeddleError):
    code = "permission_denied"
    grpc_status = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


class ResourceExhausted(HeddleError):
    code = "resource_exhausted"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class Unavailable(HeddleError):
    code = "unavailable"
    grpc_status = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class DeadlineExceeded(HeddleError):
    code = "deadline_exceeded"
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504


_BY_CODE: dict[str, type[HeddleError]] = {
    cls.code: cls
    for cls in (
        HeddleError,
        InvalidArgument,
        NotFound,
        Conflict,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
    )
}
_BY_STATUS: dict[grpc.StatusCode, type[HeddleError]] = {
    cls.grpc_status: cls for cls in reversed(list(_BY_CODE.values()))
}
_BY_STATUS[grpc.StatusCode.CANCELLED] = Unavailable


def error_from_dict(body: dict[str, Any]) -> HeddleError:
    """Rebuild an error from its `to_dict()` form (as stored or sent between replicas)."""
    cls = _BY_CODE.get(str(body.get("code", "")), HeddleError)
    return cls(str(body.get("message", "")), body.get("details"))


def error_trailer(error: HeddleError) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying the error's code and details across a gRPC hop."""
    return ((ERROR_TRAILER, jsonutil.dumps(error.to_dict())),)


def from_rpc_error(error: grpc.RpcError) -> HeddleError:
    """Rebuild the HeddleError a server raised from a failed call (or map the bare status)."""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == ERROR_TRAILER:
            body = jsonutil.loads(value)
            cls = _BY_CODE.get(body.get("code", ""), HeddleError)
            return cls(body.get("message", ""), body.get("details"))
    status = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_STATUS.get(status, Unavailable)
    return cls(details or str(status))
