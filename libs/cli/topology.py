"""The production topology as local processes: `heddle up` / `heddle down` (`make up`/`down`).

Every service runs as its own `python -m services.<name>` process against the local
PostgreSQL, Redis and RabbitMQ, the way docker-compose and Kubernetes run them: two workflow
replicas, three node replicas, one of each other service. Logs go to `var/log/<name>.log`,
pids to `var/run/<name>.pid`.

The spawning core is reusable: end-to-end and chaos tests build a spec with
`default_topology(ports=TopologyPorts.free(), database_url=...)`, start it with
`spawn_topology(...)`, `await topology.wait_healthy()`, and `kill`/`restart` single processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from libs.common.grpcutil import check_health

REPO_ROOT = Path(__file__).resolve().parents[2]

LOCAL_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/heddle"
LOCAL_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"

# Start order: what others call comes first (gateway last, so /readyz can turn green).
START_ORDER = ("ai", "tool", "log", "node", "workflow", "scheduler", "gateway")


class TopologyError(RuntimeError):
    """A process of the topology did not start, or did not become healthy in time."""


@dataclass(frozen=True)
class ProcessSpec:
    """One service process: `python -m services.<service>` with its environment."""

    name: str
    service: str
    env: Mapping[str, str]
    host: str = "127.0.0.1"
    grpc_port: int | None = None
    http_port: int | None = None
    metrics_port: int | None = None

    @property
    def module(self) -> str:
        return f"services.{self.service}"

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module]

    @property
    def endpoint(self) -> str:
        """Where it answers: the gRPC address, or the gateway's base URL."""
        if self.http_port is not None:
            return f"http://{self.host}:{self.http_port}"
        return f"{self.host}:{self.grpc_port}"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


#: Ports free_port gave this process: a topology's ~15 are picked before any is bound, and
#: one picked twice made two of its processes fight for it.
_handed_out: set[int] = set()

#: Claims of ports picked by any process of this machine (a file per port): two processes
#: starting topologies at once (pytest's workers, a benchmark beside the suite) pick from one
#: range, and a port both picked before either bound it failed one's service at start
#: ("cannot bind gRPC port"). A claim holds for _CLAIM_S, the time from a pick to the bind.
_CLAIMS = Path(tempfile.gettempdir()) / "heddle-port-claims"
_CLAIM_S = 120.0


def _claim(port: int) -> bool:
    """Claim the port for this process unless another's claim on it is younger than
    _CLAIM_S; an older claim is stale and taken over (renamed away first: of two processes
    taking one over, one rename succeeds)."""
    _CLAIMS.mkdir(exist_ok=True)
    path = _CLAIMS / str(port)
    for _ in range(2):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            pass
        try:
            if time.time() - path.stat().st_mtime < _CLAIM_S:
                return False
            stale = path.with_name(f"{port}.stale.{os.getpid()}")
            os.rename(path, stale)
            stale.unlink()
        except FileNotFoundError:
            return False  # another process took the stale claim over first
    return False


def free_port(host: str = "127.0.0.1", companion: int = 0) -> int:
    """A port free now, chosen at random BELOW the kernel's ephemeral range: a process is
    started with it later, and a port the kernel handed out (bind to 0) is one it hands to
    any outgoing connection meanwhile; and nothing held a picked port, so one call could
    return what an earlier one had (seen twice: a worker's gRPC port taken when it bound).
    Random, so that parallel callers rarely pick the same one, and never one it gave this
    process before, nor one another process of this machine claimed in the last two minutes
    (_claim); bound once to check it is free. With `companion`, port + companion (a
    workflow replica's worker endpoint) is checked and handed out with it."""
    high = _ephemeral_low() - 1 - companion  # the companion below the range too
    low = max(1024, high - 12000)
    for _ in range(200):
        port = random.randint(low, high)
        ports = {port, port + companion}
        # Free again once its caller's process went, but not ours to give twice.
        if ports & _handed_out or not all(_bindable(host, p) for p in ports):
            continue
        if not all(_claim(p) for p in sorted(ports)):
            continue
        _handed_out.update(ports)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded range
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TopologyPorts:
    """Ports of every process; the replica counts follow the lengths of workflow and node.

    `metrics` are the /metrics ports of the gRPC processes, handed out in start order
    (the gateway serves /metrics on its HTTP port); None turns the endpoints off.
    """

    http: int = 8080
    workflow: tuple[int, ...] = (50051, 50061)
    node: tuple[int, ...] = (50052, 50062, 50072)
    ai: int = 50053
    tool: int = 50054
    scheduler: int = 50055
    log: int = 50056
    metrics: tuple[int, ...] | None = tuple(range(9101, 9111))

    @classmethod
    def free(
        cls,
        *,
        workflow_replicas: int = 2,
        node_replicas: int = 3,
        metrics: bool = False,
        host: str = "127.0.0.1",
    ) -> TopologyPorts:
        """Ports that were free a moment ago (for tests running beside other stacks)."""
        count = 5 + workflow_replicas + node_replicas
        taken: set[int] = set()

        def pick(worker_offset: int = 0) -> int:
            # A workflow replica also opens its worker endpoint at its port + worker_offset
            # (services/workflow/worker_server.py): no other process may get that one.
            while True:
                port = free_port(host, worker_offset)
                if port not in taken and port + worker_offset not in taken:
                    taken.update({port, port + worker_offset})
                    return port

        return cls(
            http=pick(),
            workflow=tuple(pick(worker_offset=100) for _ in range(workflow_replicas)),
            node=tuple(pick() for _ in range(node_replicas)),
            ai=pick(),
            tool=pick(),
            scheduler=pick(),
            log=pick(),
            metrics=tuple(pick() for _ in range(count)) if metrics else None,
        )


def _is_ipv4(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False


def _replicated_address(host: str, ports: Sequence[int]) -> str:
    """One gRPC target for several replicas: `ipv4:a:p1,a:p2` (the client fails over)."""
    if len(ports) == 1 or not _is_ipv4(host):
        return f"{host}:{ports[0]}"
    return "ipv4:" + ",".join(f"{host}:{port}" for port in ports)


def default_topology(
    *,
    ports: TopologyPorts | None = None,
    host: str = "127.0.0.1",
    database_url: str = LOCAL_DATABASE_URL,
    broker_url: str = LOCAL_BROKER_URL,
    redis_url: str = LOCAL_REDIS_URL,
    service_token: str = "",
    log_level: str = "INFO",
    extra_env: Mapping[str, str] | None = None,
) -> list[ProcessSpec]:
    """The production topology (2 workflow, 3 node, 1 of each other service) as specs.

    Every spec carries its complete HEDDLE_* environment; `extra_env` is added to all of
    them (e.g. a service's own options in tests).
    """
    ports = ports or TopologyPorts()
    if not ports.workflow or not ports.node:
        raise ValueError("the topology needs at least one workflow and one node replica")
    shared: dict[str, str] = {
        "HEDDLE_DATABASE_URL": database_url,
        "HEDDLE_BROKER_URL": broker_url,
        "HEDDLE_REDIS_URL": redis_url,
        "HEDDLE_BIND_HOST": host,
        "HEDDLE_LOG_LEVEL": log_level,
        "HEDDLE_WORKFLOW_ADDRESS": _replicated_address(host, ports.workflow),
        "HEDDLE_NODE_ADDRESSES": ",".join(f"{host}:{port}" for port in ports.node),
        "HEDDLE_AI_ADDRESS": f"{host}:{ports.ai}",
        "HEDDLE_TOOL_ADDRESS": f"{host}:{ports.tool}",
        "HEDDLE_SCHEDULER_ADDRESS": f"{host}:{ports.scheduler}",
        "HEDDLE_LOG_ADDRESS": f"{host}:{ports.log}",
    }
    if service_token:
        shared["HEDDLE_SERVICE_TOKEN"] = service_token
    shared.update(extra_env or {})

    grpc_processes: list[tuple[str, str, int, dict[str, str]]] = [
        ("ai", "ai", ports.ai, {}),
        ("tool", "tool", ports.tool, {}),
        ("log", "log", ports.log, {}),
    ]
    for index, port in enumerate(ports.node, start=1):
        grpc_processes.append((f"node-{index}", "node", port, {}))
    for index, port in enumerate(ports.workflow, start=1):
        grpc_processes.append(
            (f"workflow-{index}", "workflow", port, {"HEDDLE_REPLICA_ID": f"workflow-{index}"})
        )
    grpc_processes.append(
        ("scheduler", "scheduler", ports.scheduler, {"HEDDLE_INSTANCE_ID": "scheduler-1"})
    )
    if ports.metrics is not None and len(ports.metrics) < len(grpc_processes):
        raise ValueError(
            f"{len(grpc_processes)} gRPC processes need as many metrics ports, "
            f"got {len(ports.metrics)}"
        )

    specs: list[ProcessSpec] = []
    for index, (name, service, port, own) in enumerate(grpc_processes):
        metrics_port = ports.metrics[index] if ports.metrics is not None else None
        env = {
            **shared,
            **own,
            "HEDDLE_GRPC_PORT": str(port),
            "OTEL_SERVICE_NAME": f"heddle-{name}",
        }
        if metrics_port is not None:
            env["HEDDLE_METRICS_PORT"] = str(metrics_port)
        specs.append(
            ProcessSpec(
                name=name,
                service=service,
                env=env,
                host=host,
                grpc_port=port,
                metrics_port=metrics_port,
            )
        )
    gateway_env = {
        **shared,
        "HEDDLE_HTTP_HOST": host,
        "HEDDLE_HTTP_PORT": str(ports.http),
        "OTEL_SERVICE_NAME": "heddle-gateway",
    }
    specs.append(
        ProcessSpec(
            name="gateway",
            service="gateway",
            env=gateway_env,
            host=host,
            http_port=ports.http,
            metrics_port=ports.http,
        )
    )
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate process names: {names}")
    return specs


@dataclass
class _Process:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    log_file: IO[bytes]


def _signal_group(pid: int, signum: int) -> None:
    """Signal the process and whatever it started (each service leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file ('' when there is none)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16_384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class RunningTopology:
    """Processes started by `spawn_topology`; stop() (or kill/restart single ones) when done."""

    specs: list[ProcessSpec]
    log_dir: Path
    env: dict[str, str]
    run_dir: Path | None = None
    cwd: Path = REPO_ROOT
    processes: dict[str, _Process] = field(default_factory=dict)

    def spec(self, name: str) -> ProcessSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(f"no process named {name!r}; have {[s.name for s in self.specs]}")

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid(self, name: str) -> int:
        return self.processes[name].popen.pid

    def is_running(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.popen.poll() is None

    @property
    def gateway_url(self) -> str:
        for spec in self.specs:
            if spec.http_port is not None:
                return spec.endpoint
        raise KeyError("the topology has no gateway")

    def start(self, name: str) -> None:
        """Start (or start again) one process; its log file is appended to."""
        if self.is_running(name):
            raise TopologyError(f"{name} is already running (pid {self.pid(name)})")
        spec = self.spec(name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path(name).open("ab")
        log_file.write(f"--- heddle: starting {' '.join(spec.command)}\n".encode())
        log_file.flush()
        try:
            popen = subprocess.Popen(
                spec.command,
                cwd=self.cwd,
                env={**self.env, **spec.env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C in the terminal of `heddle up` does not reach it,
                # and a signal to the group reaches what it started (code sandboxes).
                start_new_session=True,
            )
        except BaseException:
            log_file.close()
            raise
        old = self.processes.pop(name, None)
        if old is not None:
            old.log_file.close()
        self.processes[name] = _Process(spec, popen, log_file)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / f"{name}.pid").write_text(f"{popen.pid}\n")

    def kill(self, name: str) -> None:
        """SIGKILL one process (chaos tests: no graceful shutdown, no health NOT_SERVING)."""
        process = self.processes[name]
        if process.popen.poll() is None:
            _signal_group(process.popen.pid, signal.SIGKILL)
            process.popen.wait()

    def terminate(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM one process; SIGKILL it if it is still running after grace seconds."""
        self._stop([self.processes[name]], grace)

    def restart(self, name: str, grace: float = 10.0) -> None:
        """Stop one process (gracefully, if it still runs) and start it again."""
        if name in self.processes:
            self.terminate(name, grace)
        self.start(name)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM everything (gateway first), then SIGKILL what outlives grace seconds."""
        self._stop(list(reversed(self.processes.values())), grace)
        for process in self.processes.values():
            process.log_file.close()
            if self.run_dir is not None:
                (self.run_dir / f"{process.spec.name}.pid").unlink(missing_ok=True)

    def _stop(self, processes: list[_Process], grace: float) -> None:
        running = [p for p in processes if p.popen.poll() is None]
        for process in running:
            _signal_group(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process.popen.pid, signal.SIGKILL)
                process.popen.wait()

    async def unhealthy(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """What is not healthy now: process name -> why."""
        wanted = [self.spec(n) for n in names] if names is not None else list(self.specs)

        async def probe(spec: ProcessSpec) -> str | None:
            process = self.processes.get(spec.name)
            if process is None:
                return "not started"
            code = process.popen.poll()
            if code is not None:
                return f"exited with code {code}"
            if spec.http_port is not None:
                try:
                    async with httpx.AsyncClient(timeout=1.0) as client:
                        reply = await client.get(f"{spec.endpoint}/healthz")
                except httpx.HTTPError as error:
                    return f"GET /healthz: {type(error).__name__}"
                return None if reply.status_code == 200 else f"GET /healthz: {reply.status_code}"
            if await check_health(spec.endpoint, timeout=1.0):
                return None
            return f"gRPC health check at {spec.endpoint} is not SERVING"

        results = await asyncio.gather(*(probe(spec) for spec in wanted))
        return {
            spec.name: why for spec, why in zip(wanted, results, strict=True) if why is not None
        }

    async def wait_healthy(
        self, timeout_s: float = 60.0, names: Iterable[str] | None = None, interval: float = 0.2
    ) -> None:
        """Return once every (named) process is healthy; TopologyError naming what is not.

        A process that exits fails at once, with the tail of its log.
        """
        wanted = list(names) if names is not None else [s.name for s in self.specs]
        deadline = time.monotonic() + timeout_s
        while True:
            failures = await self.unhealthy(wanted)
            if not failures:
                return
            exited = {n: why for n, why in failures.items() if why.startswith("exited")}
            if exited or time.monotonic() >= deadline:
                raise TopologyError(self.describe_failures(exited or failures))
            await asyncio.sleep(interval)

    def describe_failures(self, failures: Mapping[str, str]) -> str:
        parts = []
        for name, why in failures.items():
            parts.append(f"{name}: {why}\n  log {self.log_path(name)}, last lines:")
            parts.extend(f"    {line}" for line in tail(self.log_path(name)).splitlines())
        return "\n".join(parts)


def spawn_topology(
    spec: list[ProcessSpec],
    log_dir: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    run_dir: str | Path | None = None,
    cwd: str | Path = REPO_ROOT,
) -> RunningTopology:
    """Start every process of spec in order (not waiting for health: `wait_healthy()`).

    `env` is the base environment (os.environ when None) under each spec's own; with
    run_dir, each process's pid is written to `<run_dir>/<name>.pid`. Everything started
    is stopped again if one process cannot be started.
    """
    topology = RunningTopology(
        specs=list(spec),
        log_dir=Path(log_dir),
        env=dict(os.environ if env is None else env),
        run_dir=Path(run_dir) if run_dir is not None else None,
        cwd=Path(cwd),
    )
    try:
        for process in spec:
            topology.start(process.name)
    except BaseException:
        topology.stop(grace=2.0)
        raise
    return topology


async def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database of url if it is missing; True when it was created."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql") or not parsed.database:
        return False
    import asyncpg

    connection = await asyncpg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password,
        database="postgres",
        timeout=10,
    )
    try:
        exists = await connection.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", parsed.database
        )
        if exists:
            return False
        quoted = '"' + parsed.database.replace('"', '""') + '"'
        await connection.execute(f"CREATE DATABASE {quoted}")
        return True
    finally:
        await connection.close()


# ------------------------------------------------------------------- heddle up / heddle down


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `heddle up` and `heddle down`."""
    parser.add_argument("--var-dir", default="var", help="logs in <dir>/log, pids in <dir>/run")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for health")
    parser.add_argument("--database-url", default=LOCAL_DATABASE_URL)
    parser.add_argument("--broker-url", default=LOCAL_BROKER_URL)
    parser.add_argument("--redis-url", default=LOCAL_REDIS_URL)
    parser.add_argument("--host", default="127.0.0.1", help="address the services bind to")
    parser.add_argument("--port", type=int, default=8080, help="gateway HTTP port")


def _live_pids(run_dir: Path) -> dict[str, int]:
    """Pid files whose process still runs a Heddle service (not a recycled pid)."""
    live: dict[str, int] = {}
    for pid_file in sorted(run_dir.glob("*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        cmdline = Path(f"/proc/{pid}/cmdline")
        try:
            if cmdline.exists():
                if b"services." not in cmdline.read_bytes():
                    continue
            else:
                os.kill(pid, 0)
        except (OSError, ProcessLookupError):
            continue
        live[pid_file.stem] = pid
    return live


def _print_table(topology: RunningTopology) -> None:
    rows = [("process", "pid", "listens", "metrics", "log")]
    for spec in topology.specs:
        metrics = f"http://{spec.host}:{spec.metrics_port}/metrics" if spec.metrics_port else "-"
        rows.append(
            (
                spec.name,
                str(topology.pid(spec.name)),
                spec.endpoint if spec.http_port is not None else f"grpc {spec.endpoint}",
                metrics,
                str(topology.log_path(spec.name)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _local_credentials(var_dir: Path) -> dict[str, str]:
    """A development admin key (bootstrapped by the gateway) and a secrets key, kept in
    var_dir across runs; the environment's own HEDDLE_BOOTSTRAP_API_KEY/SECRETS_KEY win."""
    from libs.cli.stack import write_private
    from libs.common.secrets import generate_key
    from services.gateway.auth import new_api_key

    def kept(name: str, make: str) -> str:
        path = var_dir / name
        if path.exists():
            return path.read_text().strip()
        write_private(path, make + "\n")
        return make

    return {
        "HEDDLE_BOOTSTRAP_API_KEY": os.environ.get("HEDDLE_BOOTSTRAP_API_KEY")
        or kept("dev-api-key", new_api_key()[0]),
        "HEDDLE_SECRETS_KEY": os.environ.get("HEDDLE_SECRETS_KEY")
        or kept("secrets.key", generate_key()),
    }


def up(args: argparse.Namespace) -> int:
    """`heddle up`: start the topology in the background and wait until it is healthy."""
    var_dir = Path(getattr(args, "var_dir", "var"))
    run_dir, log_dir = var_dir / "run", var_dir / "log"
    already = _live_pids(run_dir) if run_dir.exists() else {}
    if already:
        names = ", ".join(sorted(already))
        print(f"heddle up: already running ({names}); `heddle down` first", file=sys.stderr)
        return 1
    database_url = getattr(args, "database_url", LOCAL_DATABASE_URL)
    try:
        if asyncio.run(ensure_database(database_url)):
            print(f"created database {database_url.rsplit('/', 1)[-1]}")
    except Exception as error:
        print(f"heddle up: cannot reach PostgreSQL at {database_url}: {error}", file=sys.stderr)
        return 1
    host = getattr(args, "host", "127.0.0.1")
    specs = default_topology(
        ports=TopologyPorts(http=getattr(args, "port", 8080)),
        host=host,
        database_url=database_url,
        broker_url=getattr(args, "broker_url", LOCAL_BROKER_URL),
        redis_url=getattr(args, "redis_url", LOCAL_REDIS_URL),
        service_token=os.environ.get("HEDDLE_SERVICE_TOKEN", ""),
        extra_env=_local_credentials(var_dir),
    )
    topology = spawn_topology(specs, log_dir, run_dir=run_dir, cwd=Path.cwd())
    timeout = float(getattr(args, "timeout", 60.0))
    try:
        asyncio.run(topology.wait_healthy(timeout_s=timeout))
    except TopologyError as error:
        print(f"heddle up: not healthy within {timeout:g} s:\n{error}", file=sys.stderr)
        topology.stop()
        return 1
    except KeyboardInterrupt:
        topology.stop()
        return 130
    print("Heddle is running (production topology, local processes):")
    _print_table(topology)
    print(f"API: {topology.gateway_url}/docs    stop with: heddle down (make down)")
    print(f"admin API key in {var_dir / 'dev-api-key'} (the heddle CLI reads it)")
    return 0


def down(args: argparse.Namespace) -> int:
    """`heddle down`: SIGTERM every process `heddle up` started, then SIGKILL stragglers."""
    run_dir = Path(getattr(args, "var_dir", "var")) / "run"
    grace = float(getattr(args, "timeout", 15.0))
    live = _live_pids(run_dir) if run_dir.exists() else {}
    for pid in live.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + min(grace, 15.0)
    remaining = dict(live)
    while remaining and time.monotonic() < deadline:
        time.sleep(0.1)
        remaining = {n: p for n, p in remaining.items() if n in _live_pids(run_dir)}
    for pid in remaining.values():
        _signal_group(pid, signal.SIGKILL)
    if run_dir.exists():
        for pid_file in run_dir.glob("*.pid"):
            pid_file.unlink(missing_ok=True)
    if not live:
        print("heddle down: nothing was running")
    else:
        killed = f" ({', '.join(sorted(remaining))} killed)" if remaining else ""
        print(f"heddle down: stopped {len(live)} processes{killed}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m libs.cli.topology up|down` (the same as `heddle up|down`)."""
    parser = argparse.ArgumentParser(prog="python -m libs.cli.topology")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down"):
        add_arguments(sub.add_parser(name))
    args = parser.parse_args(argv)
    return up(args) if args.command == "up" else down(args)


if __name__ == "__main__":
    sys.exit(main())
