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
from pathlib import Path
from typing import Any, Protocol

from libs.cli.invocation import cli_command
from libs.cli.topology import free_port
from libs.common.bus import EventBus, InProcessBus, create_bus
from libs.common.kv import KV, create_kv
from libs.common.logging import configure_logging
from libs.common.runtime import run_until_signalled
from libs.common.settings import DEFAULT_PORTS
from libs.common.tracing import configure_tracing

SERVICES = ("ai", "tool", "log", "node", "workflow", "scheduler")
VAR_DIR = Path("var")
#: Where `heddle serve` leaves its development admin key; the CLI reads it from there.
DEV_API_KEY_FILE = VAR_DIR / "dev-api-key"
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


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
    #: An admin API key of the default tenant ("" when authentication is off).
    admin_key: str = ""

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
    free_grpc_ports: bool = False,
    http_port: int | None = None,
    admin_key_file: str | Path | None = None,
    node_replicas: int = 1,
) -> Stack:
    """Start every service; `overrides` are settings fields applied to all of them.

    With ephemeral ports (everything, the gateway too) or free_grpc_ports (the gRPC services
    only; the gateway on http_port), a port found free can be taken by someone else before its
    service binds it (the services must know each other's addresses up front): then the whole
    stack starts again on other ports, up to three times.
    """
    attempts = 3 if ephemeral_ports or free_grpc_ports else 1
    for attempt in range(1, attempts + 1):
        try:
            return await _start_stack(
                overrides,
                ephemeral_ports=ephemeral_ports,
                free_grpc_ports=free_grpc_ports,
                http_port=http_port,
                admin_key_file=admin_key_file,
                node_replicas=node_replicas,
            )
        except OSError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _start_stack(
    overrides: dict[str, Any] | None,
    *,
    ephemeral_ports: bool,
    free_grpc_ports: bool,
    http_port: int | None,
    admin_key_file: str | Path | None,
    node_replicas: int,
) -> Stack:
    """Start every service once (see start_stack).

    With authentication on, the stack holds an admin key of the default tenant in
    `admin_key`: the one in admin_key_file when it is still valid, else a new one (written
    there, mode 0600, when a file is given). Without HEDDLE_SECRETS_KEY, tenant secrets are
    encrypted with a key made for this stack.

    `node_replicas` starts that many node replicas ("node", "node-2", ... in `services` and
    `ports`), all of them in the workflow service's node_addresses.
    """
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

    # One process, one tracer provider: spans tell their service by `heddle.service`.
    configure_tracing("heddle")
    common = dict(overrides or {})
    host = common.get("bind_host", "127.0.0.1")
    free = ephemeral_ports or free_grpc_ports
    ports = {name: free_port(host) if free else DEFAULT_PORTS[name] for name in SERVICES}
    # Extra node replicas ("node-2", ...) take free ports; the workflow service gets them all.
    node_names = ["node", *(f"node-{i}" for i in range(2, node_replicas + 1))]
    ports.update({name: free_port(host) for name in node_names[1:]})
    addresses = {
        "workflow_address": f"{host}:{ports['workflow']}",
        "node_addresses": [f"{host}:{ports[name]}" for name in node_names],
        "ai_address": f"{host}:{ports['ai']}",
        "tool_address": f"{host}:{ports['tool']}",
        "scheduler_address": f"{host}:{ports['scheduler']}",
        "log_address": f"{host}:{ports['log']}",
    }
    base = {**addresses, **common}
    if not base.get("secrets_key") and not os.environ.get("HEDDLE_SECRETS_KEY"):
        from libs.common.secrets import generate_key

        base["secrets_key"] = generate_key()
    broker_url = base.get("broker_url", "memory://")
    # The services' own settings read HEDDLE_BROKER_PREFIX the same way.
    prefix = str(base.get("broker_prefix", os.environ.get("HEDDLE_BROKER_PREFIX", "")))
    bus: EventBus = (
        InProcessBus() if broker_url.startswith("memory:") else create_bus(broker_url, prefix)
    )
    await bus.connect()
    kv = create_kv(base.get("redis_url", "memory://"))
    stack = Stack(ports=ports, gateway_url="", settings=base, bus=bus, kv=kv)

    def opts(name: str) -> dict[str, Any]:
        return {**base, "grpc_port": ports[name]}

    starters: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("ai", lambda: serve_ai(AiSettings(**opts("ai")))),
        ("tool", lambda: serve_tool(ToolSettings(**opts("tool")))),
        ("log", lambda: serve_log(LogSettings(**opts("log")), bus=bus)),
        *(
            (
                name,
                lambda name=name: serve_node(NodeServiceSettings(**opts(name)), bus=bus, kv=kv),
            )
            for name in node_names
        ),
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
        # An in-process store is shared (one process): the gateway's cache invalidation
        # reaches the workflow service's result cache.
        gateway = GatewayServer(
            gateway_settings, kv=kv if base.get("redis_url", "memory://") == "memory://" else None
        )
        bound = await gateway.start()
        stack.services["gateway"] = gateway
        stack._stop_order.append(gateway)
        stack.gateway_url = f"http://{gateway_settings.http_host}:{bound}"
        if gateway_settings.auth_enabled:
            stack.admin_key = await _admin_key(gateway.app.state.security, admin_key_file)
            # The console of the embedded stack signs itself in (loopback callers only).
            gateway.app.state.console_dev_key = stack.admin_key
    except BaseException:
        await stack.stop()
        raise
    return stack


async def _admin_key(security: Any, key_file: str | Path | None) -> str:
    from services.gateway.auth import ADMIN_SCOPES, DEFAULT_TENANT

    path = Path(key_file) if key_file is not None else None
    if path is not None and path.exists():
        token = path.read_text().strip()
        if await security.key_is_valid(token):
            return token
    _, token = await security.create_api_key(
        tenant_id=DEFAULT_TENANT,
        name="embedded admin" if path is None else "development admin",
        scopes=ADMIN_SCOPES,
        expires_at=None,
        created_by="heddle serve",
    )
    if path is not None:
        write_private(path, token + "\n")
    return str(token)


def write_private(path: Path, text: str) -> None:
    """Write text to a file only its owner can read (0600 from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def _embedded_secrets_key(path: Path) -> str:
    """HEDDLE_SECRETS_KEY, else the key in var/secrets.key (made on first start)."""
    from libs.common.secrets import generate_key

    if os.environ.get("HEDDLE_SECRETS_KEY"):
        return os.environ["HEDDLE_SECRETS_KEY"]
    if path.exists():
        return path.read_text().strip()
    key = generate_key()
    write_private(path, key + "\n")
    return key


def _print_banner(stack: Stack) -> None:
    host = stack.settings.get("bind_host", "127.0.0.1")
    heddle = cli_command()
    server = "" if stack.gateway_url == DEFAULT_GATEWAY_URL else f" --server {stack.gateway_url}"
    lines = [
        "Heddle is running (embedded: SQLite, in-process bus).",
        f"  console    {stack.gateway_url}/   (API docs: {stack.gateway_url}/docs)",
        *(f"  {name:<10} grpc {host}:{stack.ports[name]}" for name in SERVICES),
        f"  database   {stack.settings.get('database_url', 'sqlite+aiosqlite:///./var/heddle.db')}",
    ]
    if stack.admin_key:
        lines += [
            f"  admin key  {stack.admin_key}",
            f"             (also in {DEV_API_KEY_FILE}; the CLI and the console on this machine "
            "use it unasked; for curl: export HEDDLE_API_KEY=$(cat "
            f"{DEV_API_KEY_FILE}) and send Authorization: Bearer $HEDDLE_API_KEY)",
        ]
    lines.append(
        f"Try: {heddle}{server} run examples/hello.yaml --input name=world    (Ctrl-C stops)"
    )
    print("\n".join(lines), flush=True)


def taken_port(ports: dict[str, int], host: str) -> int | None:
    """The first of ports (in start order) that something already listens on."""
    for port in ports.values():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # SO_REUSEADDR: a port with connections in TIME_WAIT is free; a listener is not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return port
    return None


async def _serve(args: argparse.Namespace) -> None:
    level = os.environ.get("HEDDLE_LOG_LEVEL", "WARNING")
    configure_logging("heddle", level, os.environ.get("HEDDLE_LOG_FORMAT", "console"))
    free = bool(getattr(args, "free_ports", False))
    http_port = getattr(args, "port", None) or 8080
    host = os.environ.get("HEDDLE_BIND_HOST", "127.0.0.1")
    wanted = {} if free else {name: DEFAULT_PORTS[name] for name in SERVICES}
    taken = taken_port({**wanted, "gateway": http_port}, host)
    if taken is not None:
        raise PortTaken(taken)
    try:
        stack = await start_stack(
            {"secrets_key": _embedded_secrets_key(VAR_DIR / "secrets.key")},
            http_port=http_port,
            admin_key_file=DEV_API_KEY_FILE,
            free_grpc_ports=free,
        )
    except OSError as error:  # taken between the check and the bind
        raise PortTaken(None, str(error)) from None
    _print_banner(stack)
    try:
        await run_until_signalled()
    finally:
        print("stopping…", file=sys.stderr, flush=True)
        await stack.stop()
        print("stopped", file=sys.stderr, flush=True)


class PortTaken(Exception):
    def __init__(self, port: int | None, reason: str = "") -> None:
        super().__init__(
            f"port {port} is taken — is Heddle already running?"
            if port is not None
            else f"{reason} — is Heddle already running?"
        )


def serve_embedded(args: argparse.Namespace) -> int:
    """`heddle serve`: run the embedded stack until Ctrl-C; 1 when a port is taken."""
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args))
    except PortTaken as taken:
        print(f"error: {taken}", file=sys.stderr, flush=True)
        return 1
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
