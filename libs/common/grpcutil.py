"""The one gRPC server builder and the one channel factory every service uses.

Servers get the standard health service (SERVING only once started), reflection, and an
interceptor that maps domain errors to status codes, checks the service credential, and
counts calls. Channels get keepalive, message-size limits and a retry policy for
UNAVAILABLE; callers always pass a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from prometheus_client import Counter, Histogram

from libs.common.errors import HeddleError, Unauthenticated, Unavailable, error_trailer
from libs.common.tracing import (
    SERVICE_ATTRIBUTE,
    TRACEPARENT,
    current_traceparent,
    extract_context,
    spans_wanted,
    tracer,
)

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
AUTH_METADATA_KEY = "x-heddle-service-token"

_TRACER = tracer(__name__)
# Codes that say the server failed (a span error), not that the caller asked wrongly.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

GRPC_SERVER_HANDLED = Counter(
    "heddle_grpc_server_handled_total",
    "gRPC calls handled by this process, by method and status code.",
    ["method", "code"],
)
GRPC_SERVER_LATENCY = Histogram(
    "heddle_grpc_server_handling_seconds",
    "Time to handle a gRPC call (unary) or to finish a stream.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
    # A peer that was down is dialled again within 5 s of its return (gRPC's default backoff
    # grows to 120 s; until the next reconnect the channel fails calls at once).
    ("grpc.max_reconnect_backoff_ms", 5_000),
]
_SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
    # Clients reconnect (and re-resolve DNS) every few minutes, so replicas added by an
    # autoscaler get their share of calls.
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
]


def _service_config(round_robin: bool) -> str:
    # No retryPolicy: UNAVAILABLE raised by a handler (an AI provider down, a tool's server
    # gone) must not be replayed behind the caller's back — a tool may have side effects.
    # gRPC still retries transparently what never left this process; callers that know an
    # operation is idempotent retry themselves (the dispatcher on another replica).
    config: dict[str, Any] = {"methodConfig": [{"name": [{}], "waitForReady": False}]}
    if round_robin:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    return json.dumps(config)


def outgoing_metadata(
    token: str, method: str | bytes, metadata: Sequence[tuple[str, str | bytes]] = ()
) -> tuple[trace.Span | None, grpc.aio.Metadata | None]:
    """What a call presents: the service token and, inside a trace, its context, with a
    CLIENT span for the call when spans are read (the caller ends it); (None, None) when
    there is nothing to add. The interceptors use it, and so do hot callers on a channel
    without interceptors (`create_channel(..., intercepted=False)`)."""
    parent = trace.get_current_span()
    span = None
    in_trace = parent.get_span_context().is_valid
    if not token and not in_trace:
        return None, None
    out = grpc.aio.Metadata(*metadata)
    if token:
        out.add(AUTH_METADATA_KEY, token)
    if in_trace and not spans_wanted():
        out.add(TRACEPARENT, current_traceparent(parent))
    elif in_trace:
        name = method.decode() if isinstance(method, bytes) else method
        span = _TRACER.start_span(
            f"grpc.client {name.lstrip('/')}",
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.method": name},
        )
        out.add(TRACEPARENT, current_traceparent(span))
    return span, out


class _ClientInterceptor:
    """Presents the service token, and inside a trace makes a CLIENT span per call and sends
    its context in the metadata. grpc.aio files an interceptor under its first matching
    kind only, hence one subclass per kind of call."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _prepare(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[trace.Span | None, grpc.aio.ClientCallDetails]:
        span, metadata = outgoing_metadata(self._token, details.method, details.metadata or ())
        if metadata is None:
            return None, details
        return span, grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnaryInterceptor(_ClientInterceptor, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        span, details = self._prepare(client_call_details)
        call = await continuation(details, request)
        if span is not None:
            try:
                _end_client_span(span, await call.code())
            except asyncio.CancelledError:
                call.cancel()
                _end_client_span(span, grpc.StatusCode.CANCELLED)
                raise
        return call


class _UnaryStreamInterceptor(_ClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        span, details = self._prepare(client_call_details)
        call = await continuation(details, request)
        if span is not None:
            call.add_done_callback(lambda done: end_stream_span(span, done))
        return call


def _end_client_span(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(trace.StatusCode.ERROR, code.name)
    span.end()


def end_stream_span(span: trace.Span, call: grpc.aio.Call) -> None:
    """End a stream's CLIENT span (from outgoing_metadata) with its status, once done."""
    # The status is a coroutine even once the call is done: read it in a task of its own
    # (unless the call ends outside the loop, collected after the loop closed).
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        span.end()
        return
    task = loop.create_task(call.code())
    task.add_done_callback(
        lambda done: _end_client_span(
            span, grpc.StatusCode.CANCELLED if done.cancelled() else done.result()
        )
    )


class _TlsSettings(Protocol):
    tls_cert: str
    tls_key: str
    tls_ca: str
    tls_server_name: str


@dataclass(frozen=True)
class TlsFiles:
    """The PEM material of mutual TLS between services: own certificate and key, the CA."""

    cert: bytes
    key: bytes
    ca: bytes
    server_name: str = ""

    @classmethod
    def from_settings(cls, settings: _TlsSettings) -> TlsFiles | None:
        """None when HEDDLE_TLS_CERT/KEY/CA are unset; all three or none (fails fast)."""
        paths = {"cert": settings.tls_cert, "key": settings.tls_key, "ca": settings.tls_ca}
        if not any(paths.values()):
            return None
        missing = [f"HEDDLE_TLS_{name.upper()}" for name, path in paths.items() if not path]
        if missing:
            raise ValueError(f"mutual TLS needs {', '.join(missing)} too")
        return cls(
            cert=Path(paths["cert"]).read_bytes(),
            key=Path(paths["key"]).read_bytes(),
            ca=Path(paths["ca"]).read_bytes(),
            server_name=settings.tls_server_name,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def create_channel(
    address: str,
    *,
    service_token: str = "",
    tls: TlsFiles | None = None,
    intercepted: bool = True,
) -> grpc.aio.Channel:
    """A loopback/cluster channel with keepalive, retries and size limits; mutual TLS with
    `tls` (see TlsFiles), insecure without.

    `intercepted=False`: no client interceptors (each intercepted call runs an extra task and,
    for a stream, an async generator per read); the caller passes what `outgoing_metadata`
    gives (the service token, the trace context) and ends its span.

    `dns:///name:port` addresses are balanced round-robin over every address the name
    resolves to.
    """
    options = [
        *_CHANNEL_OPTIONS,
        # dns:/// names and multi-address ipv4:a,b targets are balanced over every address.
        ("grpc.service_config", _service_config(address.startswith(("dns:", "ipv4:", "ipv6:")))),
    ]
    interceptors: list[grpc.aio.ClientInterceptor] = (
        [_UnaryUnaryInterceptor(service_token), _UnaryStreamInterceptor(service_token)]
        if intercepted
        else []
    )
    if tls is not None:
        return grpc.aio.secure_channel(
            address,
            tls.channel_credentials(),
            options=[*options, *tls.channel_options()],
            interceptors=interceptors,
        )
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


class _ServerInterceptor(grpc.aio.ServerInterceptor):
    """Maps HeddleError to status codes, checks the service token, records metrics, and runs
    each call in a SERVER span whose parent is the caller's (from the metadata)."""

    def __init__(self, service_token: str, service: str = "") -> None:
        self._token = service_token
        self._service = service
        self._span_attributes: dict[str, dict[str, str]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        if self._token and (AUTH_METADATA_KEY, self._token) not in tuple(
            details.invocation_metadata or ()
        ):
            return _refuse(handler)
        span = _SpanStart(
            method[1:],
            self._attributes(method),
            extract_context(details.invocation_metadata or ()),
        )
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary, span),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream, span),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _attributes(self, method: str) -> dict[str, str]:
        attributes = self._span_attributes.get(method)
        if attributes is None:
            service, _, name = method[1:].partition("/")
            attributes = self._span_attributes[method] = {
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                SERVICE_ATTRIBUTE: self._service,
            }
        return attributes


@dataclass(frozen=True, slots=True)
class _SpanStart:
    name: str
    attributes: dict[str, str]
    parent: Context | None

    def start(self) -> AbstractContextManager[trace.Span]:
        if not spans_wanted():
            # Nobody reads spans: run in the caller's context (trace ids for logs) only.
            return _in_context(self.parent)
        return _TRACER.start_as_current_span(
            self.name,
            context=self.parent,
            kind=trace.SpanKind.SERVER,
            attributes=self.attributes,
            record_exception=False,
            set_status_on_exception=False,
        )


@contextlib.contextmanager
def _in_context(parent: Context | None) -> Iterator[trace.Span]:
    token = otel_context.attach(parent) if parent is not None else None
    try:
        yield trace.get_current_span()
    finally:
        if token is not None:
            otel_context.detach(token)


def is_unavailable(error: BaseException) -> bool:
    """True when error means a dependency (database, broker, peer) cannot be reached now: the
    caller should see UNAVAILABLE (HTTP 503) and may retry, not INTERNAL (500)."""
    from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | OSError | TimeoutError | DisconnectionError):
            return True
        if isinstance(current, OperationalError) or (
            isinstance(current, DBAPIError) and current.connection_invalidated
        ):
            return True
        # asyncpg: the server is shutting down / starting up / the connection was lost /
        # it has no connection slot left now ("sorry, too many clients already").
        if type(current).__module__.startswith("asyncpg") and type(current).__name__ in {
            "TooManyConnectionsError",
            "CannotConnectNowError",
            "AdminShutdownError",
            "ConnectionDoesNotExistError",
            "InterfaceError",
            "InternalClientError",
            "PostgresConnectionError",
            "ConnectionFailureError",
        }:
            return True
        current = current.__cause__ or current.__context__
    return False


async def _abort_for(
    error: BaseException, context: grpc.aio.ServicerContext, method: str, span: trace.Span
) -> None:
    if not isinstance(error, HeddleError) and is_unavailable(error):
        log.warning("dependency unavailable in %s: %s", method, error)
        error = Unavailable(f"a dependency is unavailable, try again: {type(error).__name__}")
    if isinstance(error, HeddleError):
        GRPC_SERVER_HANDLED.labels(method, error.grpc_status.name).inc()
        span.set_attribute("rpc.grpc.status_code", error.grpc_status.value[0])
        if error.grpc_status in _SERVER_FAULTS:
            span.set_status(trace.StatusCode.ERROR, error.message)
        await context.abort(
            error.grpc_status, error.message, trailing_metadata=error_trailer(error)
        )
    if type(error) is NotImplementedError:
        # The generated base servicer's answer for a method this server does not implement
        # (an older release during a rolling upgrade, a test's fake): UNIMPLEMENTED, which
        # callers that have a fallback look for, not an internal error.
        GRPC_SERVER_HANDLED.labels(method, "UNIMPLEMENTED").inc()
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented here")
    log.exception("unhandled error in %s", method, exc_info=error)
    span.record_exception(error)
    span.set_status(trace.StatusCode.ERROR, f"internal error: {type(error).__name__}")
    GRPC_SERVER_HANDLED.labels(method, "INTERNAL").inc()
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")


def _wrap_unary(
    method: str, inner: Callable[..., Awaitable[Any]], span_start: _SpanStart
) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        with span_start.start() as span:
            try:
                response = await inner(request, context)
            except (HeddleError, Exception) as error:
                if isinstance(error, grpc.aio.AbortError):
                    raise
                await _abort_for(error, context, method, span)
        GRPC_SERVER_HANDLED.labels(method, "OK").inc()
        GRPC_SERVER_LATENCY.labels(method).observe(time.perf_counter() - start)
        return response

    return handle


def _wrap_stream(
    method: str, inner: Callable[..., AsyncIterator[Any]], span_start: _SpanStart
) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        start = time.perf_counter()
        with span_start.start() as span:
            try:
                async for item in inner(request, context):
                    yield item
            except (HeddleError, Exception) as error:
                if isinstance(error, grpc.aio.AbortError):
                    raise
                await _abort_for(error, context, method, span)
        GRPC_SERVER_HANDLED.labels(method, "OK").inc()
        GRPC_SERVER_LATENCY.labels(method).observe(time.perf_counter() - start)

    return handle


def _refuse(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        error = Unauthenticated("missing or invalid service credential")
        await context.abort(
            error.grpc_status, error.message, trailing_metadata=error_trailer(error)
        )

    if handler.unary_stream is not None:

        async def deny_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            await deny(request, context)
            yield  # pragma: no cover - abort raised

        return grpc.unary_stream_rpc_method_handler(
            deny_stream, request_deserializer=handler.request_deserializer
        )
    if handler.stream_stream is not None:

        async def deny_bidi(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await deny(None, context)
            yield  # pragma: no cover - abort raised

        return grpc.stream_stream_rpc_method_handler(
            deny_bidi, request_deserializer=handler.request_deserializer
        )
    return grpc.unary_unary_rpc_method_handler(
        deny, request_deserializer=handler.request_deserializer
    )


_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class GrpcServer:
    """A started gRPC server and its health servicer."""

    name: str
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def stop(self, grace: float = 2.0) -> None:
        """Report NOT_SERVING, then stop, letting in-flight calls finish within grace."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_grpc_server(
    name: str,
    service_full_names: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    service_token: str = "",
    tls: TlsFiles | None = None,
    serving: bool = True,
) -> GrpcServer:
    """Build, register and start a server; health turns SERVING only once it listens
    (with `serving=False` it stays NOT_SERVING: the caller sets it once its service is up).

    With `tls` the port speaks mutual TLS: a client without a certificate signed by the CA
    is refused in the handshake, before any handler (health included) sees the call.

    `register` adds the servicers (e.g. `lambda s: add_XServicer_to_server(impl, s)`).
    Port 0 picks a free port; the chosen one is in the result.
    """
    server = grpc.aio.server(
        interceptors=[_ServerInterceptor(service_token, name)], options=_SERVER_OPTIONS
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_full_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    try:
        if tls is not None:
            bound = server.add_secure_port(f"{host}:{port}", tls.server_credentials())
        else:
            bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:  # grpcio raises rather than returning 0 on some versions
        raise OSError(f"{name}: cannot bind gRPC port {host}:{port}: {error}") from error
    if bound == 0:
        raise OSError(f"{name}: cannot bind gRPC port {host}:{port}")
    await server.start()
    status = health_pb2.HealthCheckResponse.SERVING if serving else _NOT_SERVING
    for service in ("", *service_full_names):
        await health_servicer.set(service, status)
    log.info("grpc server started", extra={"grpc_service": name, "port": bound})
    return GrpcServer(name=name, server=server, port=bound, health=health_servicer)


async def check_health(
    address: str,
    timeout: float = 1.0,  # noqa: ASYNC109 - the gRPC call's deadline, not a wait
    service: str = "",
    tls: TlsFiles | None = None,
) -> bool:
    """True when the server at address answers the standard health check with SERVING."""
    opened = (
        grpc.aio.secure_channel(address, tls.channel_credentials(), tls.channel_options())
        if tls is not None
        else grpc.aio.insecure_channel(address)
    )
    async with opened as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
