"""The one gRPC server builder and the one channel factory every service uses.

Servers get the standard health service (SERVING only once started), reflection, and an
interceptor that maps domain errors to status codes, checks the service credential, and
counts calls. Channels get keepalive, message-size limits and a retry policy for
UNAVAILABLE; callers always pass a deadline.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

from libs.common.errors import HeddleError, Unauthenticated, error_trailer

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
AUTH_METADATA_KEY = "x-heddle-service-token"

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


class _TokenClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor
):
    def __init__(self, token: str) -> None:
        self._metadata = (AUTH_METADATA_KEY, token)

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._metadata)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def, override]
        return await continuation(self._with_token(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def, override]
        return await continuation(self._with_token(client_call_details), request)


def create_channel(address: str, *, service_token: str = "") -> grpc.aio.Channel:
    """An insecure loopback/cluster channel with keepalive, retries and size limits.

    `dns:///name:port` addresses are balanced round-robin over every address the name
    resolves to.
    """
    options = [
        *_CHANNEL_OPTIONS,
        # dns:/// names and multi-address ipv4:a,b targets are balanced over every address.
        ("grpc.service_config", _service_config(address.startswith(("dns:", "ipv4:", "ipv6:")))),
    ]
    interceptors = [_TokenClientInterceptor(service_token)] if service_token else None
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


class _ServerInterceptor(grpc.aio.ServerInterceptor):
    """Maps HeddleError to status codes, checks the service token, records metrics."""

    def __init__(self, service_token: str) -> None:
        self._token = service_token

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
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


async def _abort_for(error: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(error, HeddleError):
        GRPC_SERVER_HANDLED.labels(method, error.grpc_status.name).inc()
        await context.abort(
            error.grpc_status, error.message, trailing_metadata=error_trailer(error)
        )
    log.exception("unhandled error in %s", method, exc_info=error)
    GRPC_SERVER_HANDLED.labels(method, "INTERNAL").inc()
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")


def _wrap_unary(method: str, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        try:
            response = await inner(request, context)
        except (HeddleError, Exception) as error:
            if isinstance(error, grpc.aio.AbortError):
                raise
            await _abort_for(error, context, method)
        GRPC_SERVER_HANDLED.labels(method, "OK").inc()
        GRPC_SERVER_LATENCY.labels(method).observe(time.perf_counter() - start)
        return response

    return handle


def _wrap_stream(
    method: str, inner: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        start = time.perf_counter()
        try:
            async for item in inner(request, context):
                yield item
        except (HeddleError, Exception) as error:
            if isinstance(error, grpc.aio.AbortError):
                raise
            await _abort_for(error, context, method)
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
    return grpc.unary_unary_rpc_method_handler(
        deny, request_deserializer=handler.request_deserializer
    )


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
) -> GrpcServer:
    """Build, register and start a server; health turns SERVING only once it listens.

    `register` adds the servicers (e.g. `lambda s: add_XServicer_to_server(impl, s)`).
    Port 0 picks a free port; the chosen one is in the result.
    """
    server = grpc.aio.server(
        interceptors=[_ServerInterceptor(service_token)], options=_SERVER_OPTIONS
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_full_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"{name}: cannot bind gRPC port {host}:{port}")
    await server.start()
    for service in ("", *service_full_names):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("grpc server started", extra={"grpc_service": name, "port": bound})
    return GrpcServer(name=name, server=server, port=bound, health=health_servicer)


async def check_health(address: str, timeout: float = 1.0, service: str = "") -> bool:
    """True when the server at address answers the standard health check with SERVING."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
