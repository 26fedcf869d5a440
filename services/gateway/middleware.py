"""Pure ASGI middlewares: request ids, the body-size limit, HTTP metrics and tracing.

Pure ASGI (not BaseHTTPMiddleware) so that streaming responses and WebSockets pass through
untouched and a limit applies before any route reads the body.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from prometheus_client import Counter, Histogram
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.common.tracing import SERVICE_ATTRIBUTE, extract_context, tracer
from services.gateway.errors import PAYLOAD_TOO_LARGE, error_response

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_TRACER = tracer("gateway")

HTTP_REQUESTS = Counter(
    "heddle_http_requests",
    "HTTP requests answered by the gateway, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "heddle_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of the body; streams last as long as they do).",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class RequestIdMiddleware:
    """Echoes a well-formed X-Request-ID or generates one; routes see it in request.state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """Answers 413 when a body exceeds max_bytes, by Content-Length or by counting the stream.

    The body is read here, bounded, and replayed to the app, so no route ever reads an
    unbounded body.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        streamed: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        """`streamed`: (method, path) of routes that stream their body and bound it themselves
        (file uploads): their body passes through unread."""
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope.get("method"), scope.get("path")) in self.streamed:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            PAYLOAD_TOO_LARGE,
            f"request body larger than {self.max_bytes} bytes",
            {"max_bytes": self.max_bytes},
            # The rest of the body is not read: the connection cannot be reused.
            headers={"connection": "close"},
        )
        await response(scope, receive, send)


#: (method, route template, status) -> the counter's and the histogram's children: the
#: label lookup (a lock and a tuple of str per call) done once per combination.
_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _metric_children(method: str, template: str, status: int) -> tuple[Any, Any]:
    key = (method, template, status)
    children = _CHILDREN.get(key)
    if children is None:
        labels = (method, template, str(status))
        children = _CHILDREN[key] = (HTTP_REQUESTS.labels(*labels), HTTP_LATENCY.labels(*labels))
    return children


class MetricsMiddleware:
    """Counts requests and observes latency by route template (not raw path) and status.

    Each request is answered in a SERVER span `<method> <route template>`, child of the
    caller's `traceparent` if any; the gRPC calls made meanwhile are its children. It is made
    here (create_app turns FastAPI's own telemetry off); were FastAPI's span there, it would
    only be tagged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        method = scope.get("method", "")

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        framework_span = trace.get_current_span()
        span_made_here: AbstractContextManager[trace.Span]
        if framework_span.get_span_context().is_valid:  # FastAPI's span for this request
            framework_span.set_attribute(SERVICE_ATTRIBUTE, "gateway")
            span_made_here = contextlib.nullcontext(framework_span)
        else:
            span_made_here = _TRACER.start_as_current_span(
                method,
                context=extract_context(Headers(scope=scope)),
                kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": scope.get("path", "")},
            )
        with span_made_here as span:
            try:
                await self.app(scope, receive, recording_send)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None) or "<unmatched>"
                requests, latency = _metric_children(method, template, status)
                requests.inc()
                latency.observe(time.perf_counter() - start)
                if span is not framework_span:
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.StatusCode.ERROR, f"HTTP {status}")
