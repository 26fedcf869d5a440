"""The embedded stack: every service in one process, each on its own loopback gRPC port,
still calling each other over gRPC, sharing one in-process bus and one SQLite file.

`heddle serve` (and `make run`) runs it; the tests start it with port 0 everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from libs.common.bus import EventBus, InProcessBus, create_bus
from libs.common.kv import KV, create_kv
from libs.common.logging import configure_logging
from libs.common.runtime import run_until_signalled
from libs.common.settings import DEFAULT_PORTS

SERVICES = ("ai", "tool", "log", "node", "workflow", "scheduler")


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for wiring services that name each other)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """A running embedded stack."""

    ports: dict[str, int]
    gateway_url: str
    settings: dict[str, Any]
    bus: EventBus
    kv: KV
    services: dict[str, Any] = field(default_factory=dict)
    _stop_order: list[_Stoppable] = field(default_factory=list)

    async def stop(self) -> None:
        for service in reversed(self._stop_order):
            with contextlib.suppress(Exception):
                await service.stop()
        await self.bus.close()
        await self.kv.close()


async def start_stack(
    overrides: dict[str, Any] | None = None,
    *,
    ephemeral_ports: bool = False,
    http_port: int | None = None,
) -> Stack:
    """Start every service; `overrides` are settings fields applied to all of them."""
    # Imported here: the CLI's other commands must not pay for loading every service.
    from services.ai.server import serve as serve_ai
    from services.ai.settings import AiSettings
    from services.gateway.server import GatewayServer
    from services.gateway.settings import GatewaySettings
    from services.log.server import serve as serve_log
    from services.log.settings import LogSettings
    from services.node.server import serve as serve_node
    from services.node.settings import NodeServiceSettings
    from services.scheduler.server import serve as serve_scheduler
    from services.scheduler.settings import SchedulerSettings
    from services.tool.server import serve as serve_tool
    from services.tool.settings import ToolSettings
    from services.workflow.server import serve as serve_workflow
    from services.workflow.settings import WorkflowSettings

    common = dict(overrides or {})
    host = common.get("bind_host", "127.0.0.1")
    ports = {name: free_port(host) if ephemeral_ports else DEFAULT_PORTS[name] for name in SERVICES}
    addresses = {
        "workflow_address": f"{host}:{ports['workflow']}",
        "node_addresses": [f"{host}:{ports['node']}"],
        "ai_address": f"{host}:{ports['ai']}",
        "tool_address": f"{host}:{ports['tool']}",
        "scheduler_address": f"{host}:{ports['scheduler']}",
        "log_address": f"{host}:{ports['log']}",
    }
    base = {**addresses, **common}
    broker_url = base.get("broker_url", "memory://")
    bus: EventBus = InProcessBus() if broker_url.startswith("memory:") else create_bus(broker_url)
    await bus.connect()
    kv = create_kv(base.get("redis_url", "memory://"))
    stack = Stack(ports=ports, gateway_url="", settings=base, bus=bus, kv=kv)

    def opts(name: str) -> dict[str, Any]:
        return {**base, "grpc_port": ports[name]}

    starters: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("ai", lambda: serve_ai(AiSettings(**opts("ai")))),
        ("tool", lambda: serve_tool(ToolSettings(**opts("tool")))),
        ("log", lambda: serve_log(LogSettings(**opts("log")), bus=bus)),
        ("node", lambda: serve_node(NodeServiceSettings(**opts("node")))),
        ("workflow", lambda: serve_workflow(WorkflowSettings(**opts("workflow")), bus=bus, kv=kv)),
        (
            "scheduler",
            lambda: serve_scheduler(SchedulerSettings(**opts("scheduler")), bus=bus, kv=kv),
        ),
    ]
    try:
        for name, starter in starters:
            service = await starter()
            stack.services[name] = service
            stack._stop_order.append(service)
        gateway_settings = GatewaySettings(
            **{**base, "http_port": 0 if ephemeral_ports else (http_port or 8080)}
        )
        gateway = GatewayServer(gateway_settings)
        bound = await gateway.start()
        stack.services["gateway"] = gateway
        stack._stop_order.append(gateway)
        stack.gateway_url = f"http://{gateway_settings.http_host}:{bound}"
    except BaseException:
        await stack.stop()
        raise
    return stack


def _print_banner(stack: Stack) -> None:
    host = stack.settings.get("bind_host", "127.0.0.1")
    lines = [
        "Heddle is running (embedded: SQLite, in-process bus).",
        f"  gateway    {stack.gateway_url}   (API docs: {stack.gateway_url}/docs)",
        *(f"  {name:<10} grpc {host}:{stack.ports[name]}" for name in SERVICES),
        f"  database   {stack.settings.get('database_url', 'sqlite+aiosqlite:///./var/heddle.db')}",
        "Try: heddle run examples/hello.yaml --input name=world    (Ctrl-C stops)",
    ]
    print("\n".join(lines), flush=True)


async def _serve(args: argparse.Namespace) -> None:
    level = os.environ.get("HEDDLE_LOG_LEVEL", "WARNING")
    configure_logging("heddle", level, os.environ.get("HEDDLE_LOG_FORMAT", "console"))
    stack = await start_stack(http_port=getattr(args, "port", None))
    _print_banner(stack)
    try:
        await run_until_signalled()
    finally:
        print("stopping…", file=sys.stderr, flush=True)
        await stack.stop()
        print("stopped", file=sys.stderr, flush=True)


def serve_embedded(args: argparse.Namespace) -> int:
    """`heddle serve`: run the embedded stack until Ctrl-C."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


def db_upgrade(args: argparse.Namespace) -> int:
    """`heddle db upgrade`: apply the migrations to HEDDLE_DATABASE_URL."""
    from libs.common.db import create_engine
    from libs.common.settings import CommonSettings
    from libs.migrations import upgrade

    url = CommonSettings().database_url

    async def run() -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print(f"database at {url} is at the latest schema")
    return 0
