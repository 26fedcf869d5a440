"""How every service is built: its resources on one AsyncExitStack, and periodic loops.

A service's `serve()` is `start_service(name, build)`: `build(stack)` opens what the service
needs through the stack (database engine, bus, KV, gRPC channels and servers, background
tasks), each registered to be closed as it is opened. When `build` returns, every gRPC
server's health turns SERVING; when it raises, what it had opened is closed (in reverse
order) before the error propagates, so a failed start leaves nothing behind. `stop()` is the
same unwinding: the last thing opened is the first closed.

`periodic(name, interval, fn)` is the one background loop: it calls `fn` every `interval`
seconds, logs and counts a failure without ending the loop, and keeps metrics of its own
(iterations, failures, duration) labelled by the loop's name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.bus import EventBus, create_bus
from libs.common.db import create_engine
from libs.common.grpcutil import GrpcServer, TlsFiles, create_channel, start_grpc_server
from libs.common.kv import KV, create_kv
from libs.common.periodic import Interval, cancel_tasks, periodic, run_periodic
from libs.common.settings import CommonSettings

__all__ = [
    "RunningService",
    "ServiceStack",
    "cancel_tasks",
    "periodic",
    "run_periodic",
    "start_service",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class ServiceStack:
    """What a service opened, to be closed in reverse order (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._exit = AsyncExitStack()
        self._servers: list[tuple[GrpcServer, Sequence[str]]] = []
        self._closed = False

    def callback(self, close: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> None:
        """Call `await close(*args, **kwargs)` on close (after what is opened later)."""
        self._exit.push_async_callback(close, *args, **kwargs)

    def sync_callback(self, close: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call `close(*args, **kwargs)` on close."""
        self._exit.callback(close, *args, **kwargs)

    async def enter(self, context: AbstractAsyncContextManager[T]) -> T:
        """Enter an async context manager; it exits on close."""
        return await self._exit.enter_async_context(context)

    def database(self, url: str) -> AsyncEngine:
        """A database engine, disposed on close."""
        engine = create_engine(url)
        self.callback(engine.dispose)
        return engine

    async def bus(self, broker_url: str, prefix: str, shared: EventBus | None = None) -> EventBus:
        """The shared bus when one is given (its owner closes it), else a connected new one."""
        if shared is not None:
            await shared.connect()
            return shared
        bus = create_bus(broker_url, prefix)
        self.callback(bus.close)
        await bus.connect()
        return bus

    def kv(self, redis_url: str, shared: KV | None = None) -> KV:
        """The shared KV when one is given, else a new one closed on close."""
        if shared is not None:
            return shared
        kv = create_kv(redis_url)
        self.callback(kv.close)
        return kv

    def channel(
        self, address: str, *, service_token: str = "", tls: TlsFiles | None = None
    ) -> grpc.aio.Channel:
        """A gRPC client channel, closed on close."""
        channel = create_channel(address, service_token=service_token, tls=tls)
        self.callback(channel.close)
        return channel

    async def grpc_server(
        self,
        service_full_names: Sequence[str],
        register: Callable[[grpc.aio.Server], None],
        *,
        host: str,
        port: int,
        service_token: str = "",
        tls: TlsFiles | None = None,
        grace_s: float = 2.0,
        name: str | None = None,
    ) -> GrpcServer:
        """Start a gRPC server that reports NOT_SERVING until the whole build is done; on
        close it turns NOT_SERVING and lets in-flight calls finish within `grace_s`."""
        server = await start_grpc_server(
            name or self.name,
            service_full_names,
            register,
            host=host,
            port=port,
            service_token=service_token,
            tls=tls,
            serving=False,
        )
        self.callback(server.stop, grace_s)
        self._servers.append((server, service_full_names))
        return server

    async def service_server(
        self,
        settings: CommonSettings,
        service: str,
        service_full_names: Sequence[str],
        register: Callable[[grpc.aio.Server], None],
        *,
        grace_s: float = 2.0,
    ) -> GrpcServer:
        """`grpc_server` on the service's own address, token and TLS from its settings."""
        return await self.grpc_server(
            service_full_names,
            register,
            host=settings.bind_host,
            port=settings.port_for(service),
            service_token=settings.service_token,
            tls=TlsFiles.from_settings(settings),
            grace_s=grace_s,
            name=service,
        )

    def task(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A background task, cancelled (and awaited) on close."""
        task = asyncio.create_task(coroutine, name=name)
        self.callback(cancel_tasks, [task])
        return task

    def periodic(
        self,
        name: str,
        interval: Interval,
        fn: Callable[[], Awaitable[Any]],
        *,
        immediately: bool = False,
    ) -> asyncio.Task[None]:
        """`periodic(name, interval, fn)`, cancelled on close."""
        task = periodic(name, interval, fn, immediately=immediately)
        self.callback(cancel_tasks, [task])
        return task

    async def serving(self) -> None:
        """Turn every gRPC server of the stack SERVING (the build is done)."""
        for server, names in self._servers:
            for service in ("", *names):
                await server.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def aclose(self) -> None:
        """Close everything, last opened first (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        await self._exit.aclose()


async def start_service(name: str, build: Callable[[ServiceStack], Awaitable[T]]) -> T:
    """Run `build` on a new ServiceStack; SERVING once it returns, all closed if it raises.

    `build` returns the service object, which keeps the stack and calls `stack.aclose()`
    from its `stop()`.
    """
    stack = ServiceStack(name)
    try:
        service = await build(stack)
        await stack.serving()
    except BaseException:
        await stack.aclose()
        raise
    log.info("service ready", extra={"service": name})
    return service


class RunningService:
    """A started gRPC service: its server and the stack that closes what it opened."""

    def __init__(self, stack: ServiceStack, grpc_server: GrpcServer) -> None:
        self.stack = stack
        self.grpc = grpc_server

    @property
    def name(self) -> str:
        return self.grpc.name

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def server(self) -> grpc.aio.Server:
        return self.grpc.server

    @property
    def health(self) -> Any:
        return self.grpc.health

    async def stop(self, grace: float | None = None) -> None:
        """Close everything the service opened, last opened first (`grace` is the servers'
        own, set when they were opened; accepted for the callers that pass one)."""
        del grace
        await self.stack.aclose()
