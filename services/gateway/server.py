"""Runs the gateway: settings -> gRPC clients -> FastAPI app -> uvicorn in this event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from libs.common.kv import KV
from libs.common.runtime import freeze_heap, init_process, run
from libs.common.service import ServiceStack, start_service
from services.gateway.app import create_app
from services.gateway.auth import GatewayDatabase, Security
from services.gateway.clients import ServiceClients
from services.gateway.files import files_of
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    # Signals belong to whoever runs the event loop (main() here, or an embedded stack).
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


class GatewayServer:
    """The gateway's HTTP server inside the current event loop.

    `start()` returns once the socket listens, with the bound port (useful with port 0);
    `stop()` drains connections (within shutdown_grace_s) and closes the gRPC channels.
    """

    def __init__(
        self, settings: GatewaySettings, clients: ServiceClients | None = None, kv: KV | None = None
    ) -> None:
        """`kv`: a store to share (the embedded stack's in-process one, so that the gateway's
        cache invalidation and the workflow service see the same generations)."""
        self.settings = settings
        self._owns_clients = clients is None
        self.clients = clients or ServiceClients.connect(settings)
        guard = (
            Security(settings, GatewayDatabase(settings.database_url), kv)
            if kv is not None
            else None
        )
        self.app = create_app(settings, self.clients, guard)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._stack: ServiceStack | None = None
        self._clients_closed = False
        self.port: int | None = None

    async def start(self) -> int:
        """Listen; what start opened is closed again if it fails (see libs/common/service)."""
        self._stack = await start_service("gateway", self._build)
        assert self.port is not None
        return self.port

    async def _build(self, stack: ServiceStack) -> ServiceStack:
        stack.callback(self._close_clients)
        # Fail fast on a bad database URL or bootstrap key, before the socket listens.
        await self.app.state.security.install_bootstrap_key()
        stack.callback(self.app.state.artifacts.close)
        if self.settings.files_retention_s:
            stack.periodic(
                "file-retention",
                self.settings.files_retention_interval_s,
                files_of(self.app).remove_expired,
            )
        config = uvicorn.Config(
            self.app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=self.settings.shutdown_grace_s or None,
            timeout_keep_alive=self.settings.http_keepalive_s,
        )
        # Bound here rather than by uvicorn, which calls sys.exit() when the port is taken.
        host = self.settings.http_host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, self.settings.http_port), family=family)
        stack.sync_callback(listener.close)
        # Accepted sockets inherit TCP_NODELAY from the listener. Without it a keep-alive
        # request waits ~40 ms (Nagle against the client's delayed ACK): the plain asyncio loop
        # sets it only on sockets created with IPPROTO_TCP, which create_server's are not.
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = int(listener.getsockname()[1])
        server = _EmbeddedServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[listener]), name="gateway-http")
        stack.callback(self._stop_http)
        listening = asyncio.ensure_future(server.listening.wait())
        await asyncio.wait({listening, self._task}, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if not server.started:
            raise RuntimeError("gateway: the HTTP server stopped while starting")
        log.info("gateway listening", extra={"host": self.settings.http_host, "port": self.port})
        return stack

    def client_sockets(self) -> list[Any]:
        """The sockets of the open client connections (socket-like: `getsockopt` works)."""
        if self._server is None:
            return []
        transports = (
            getattr(connection, "transport", None)
            for connection in self._server.server_state.connections
        )
        return [t.get_extra_info("socket") for t in transports if t is not None]

    async def stop(self) -> None:
        """Drain connections (within shutdown_grace_s), then close the clients."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        else:
            await self._close_clients()

    async def _stop_http(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = self._task = None

    async def _close_clients(self) -> None:
        if self._clients_closed:
            return
        self._clients_closed = True
        await self.app.state.security.close()
        if self._owns_clients:
            await self.clients.close()


async def serve(settings: GatewaySettings, *, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled; `ready` is set once the HTTP socket listens."""
    server = GatewayServer(settings)
    try:
        await server.start()
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await server.stop()


async def _serve_until_signal(settings: GatewaySettings) -> None:
    ready = asyncio.Event()
    task = asyncio.create_task(serve(settings, ready=ready))
    # Once serving, what start-up built (the app, its routes and models, the pools) is out
    # of the garbage collector's way (libs/common/runtime.freeze_heap).
    started = asyncio.ensure_future(ready.wait())
    started.add_done_callback(lambda waited: None if waited.cancelled() else freeze_heap())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main() -> None:
    settings = GatewaySettings()
    init_process("gateway", settings, metrics=False)
    run(_serve_until_signal(settings), settings)
