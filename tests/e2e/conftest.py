# ruff: noqa: ASYNC109  (timeout parameters here are polling budgets, not cancel scopes)
"""End-to-end fixtures: the production topology as separate processes on the real
PostgreSQL, RabbitMQ and Redis of this machine.

`topology` (one per test module) serves tests that leave the processes alone;
`fresh_topology` (one per test) serves tests that kill processes or restart infrastructure.
Each topology gets a fresh PostgreSQL database (dropped afterwards), logs under the test's
tmp directory, and prints the tail of every log when its test fails.

Also here: the helpers those tests share (an HTTP client, workflow shapes, SSE reading,
waiting for an execution's end, restarting PostgreSQL/RabbitMQ and waiting for them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from libs.cli.topology import (
    RunningTopology,
    TopologyPorts,
    default_topology,
    spawn_topology,
    tail,
)
from tests.helpers import assert_eventually
from tests.infra_fixtures import deployment_env

POSTGRES_ADMIN_DSN = os.environ.get(
    "HEDDLE_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RABBIT_URL = os.environ.get("HEDDLE_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("HEDDLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: Short leases so that a takeover happens within seconds (the defaults are 10 s and 2 s).
LEASE_TTL_S = 2.0
RECOVERY_INTERVAL_S = 0.5

FINAL_STATUSES = {"succeeded", "failed", "cancelled"}
TERMINAL_NODE_EVENTS = {"node.completed", "node.failed", "node.skipped"}
FINAL_EXECUTION_EVENTS = {"execution.completed", "execution.failed", "execution.cancelled"}


def _host_part() -> str:
    return POSTGRES_ADMIN_DSN.split("://", 1)[1].rsplit("/", 1)[0]


def _engine_env() -> dict[str, str]:
    env = {
        "HEDDLE_LEASE_TTL_S": str(LEASE_TTL_S),
        "HEDDLE_RECOVERY_INTERVAL_S": str(RECOVERY_INTERVAL_S),
        "HEDDLE_LOG_LEVEL": "INFO",
    }
    # Auth is not what these tests are about: turn it off where the gateway has the switch.
    try:
        from services.gateway.settings import GatewaySettings

        if "auth_enabled" in GatewaySettings.model_fields:
            env["HEDDLE_AUTH_ENABLED"] = "false"
    except Exception:  # pragma: no cover - the gateway settings always import
        pass
    return env


@dataclass
class E2E:
    """A running topology with the database it runs on."""

    topology: RunningTopology
    database: str
    database_url: str
    dsn: str
    #: Every 5xx answer any client of `client()` got: "500 GET /api/v1/..." (the contract:
    #: 503 when a dependency is down, never a 500).
    server_errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.topology.gateway_url

    def client(self, timeout: float = 30.0) -> httpx.AsyncClient:
        async def record(response: httpx.Response) -> None:
            if response.status_code >= 500:
                request = response.request
                self.server_errors.append(
                    f"{response.status_code} {request.method} {request.url.path}"
                )

        return httpx.AsyncClient(
            base_url=self.url, timeout=timeout, event_hooks={"response": [record]}
        )

    def internal_errors(self, *followers: Follower) -> list[str]:
        """500s answered to any client, and `internal` error events on live streams."""
        found = [error for error in self.server_errors if error.startswith("500 ")]
        for follower in followers:
            found.extend(error for error in follower.errors if '"code": "internal"' in error)
        return found

    async def db(self) -> asyncpg.Connection:
        # 30 s: on a loaded run with every worker's topologies, 10 s to connect ran out once.
        return await asyncpg.connect(self.dsn, timeout=30)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        connection = await self.db()
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    def log_lines(self, name: str, needle: str) -> list[str]:
        """Lines of a process's log that contain needle."""
        path = self.topology.log_path(name)
        if not path.exists():
            return []
        text = path.read_text(errors="replace")
        return [line[:2000] for line in text.splitlines() if needle in line]

    def assert_no_crash(self) -> None:
        """No workflow replica had a runner die of an exception or leak a failed task (a
        takeover may hide such a crash from the outcome, not from the logs)."""
        for spec in self.topology.specs:
            for needle in ("execution runner crashed", "Task exception was never retrieved"):
                found = self.log_lines(spec.name, needle)
                assert not found, f"{spec.name}: {found[0]}"

    def logs(self, lines: int = 40) -> str:
        parts = []
        for spec in self.topology.specs:
            path = self.topology.log_path(spec.name)
            parts.append(f"===== {spec.name} ({path}) =====\n{tail(path, lines)}")
        return "\n".join(parts)


async def _create_database() -> tuple[str, str, str]:
    name = f"heddle_e2e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    host = _host_part()
    return name, f"postgresql+asyncpg://{host}/{name}", f"postgresql://{host}/{name}"


async def _drop_database(name: str) -> None:
    await wait_postgres(timeout=60)
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def run_sync(coroutine: Any) -> Any:
    """Run a coroutine to its end on a loop of its own, in a thread of its own (so it never
    meets the event loop of pytest-asyncio)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _start(log_dir: Path, extra_env: dict[str, str] | None = None, metrics: bool = False) -> E2E:
    name, database_url, dsn = run_sync(_create_database())
    specs = default_topology(
        ports=TopologyPorts.free(metrics=metrics),
        database_url=database_url,
        broker_url=RABBIT_URL,
        redis_url=REDIS_URL,
        extra_env={**_engine_env(), **deployment_env(), **(extra_env or {})},
    )
    topology = spawn_topology(specs, log_dir)
    e2e = E2E(topology, name, database_url, dsn)
    try:
        run_sync(topology.wait_healthy(timeout_s=90))
    except BaseException:
        topology.stop(grace=5)
        run_sync(_drop_database(name))
        raise
    return e2e


def _finish(e2e: E2E, failed: bool, label: str) -> None:
    if failed:
        print(f"\n---------- logs of the topology of {label} ----------")
        print(e2e.logs())
    e2e.topology.stop(grace=10)
    run_sync(_drop_database(e2e.database))


def _failed(request: pytest.FixtureRequest) -> bool:
    """Whether any test that used this fixture failed (set by the hook below)."""
    if request.scope == "module":
        return any(
            getattr(item, "_e2e_failed", False)
            for item in request.session.items
            if getattr(item, "module", None) is request.module
        )
    return bool(getattr(request.node, "_e2e_failed", False))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        item._e2e_failed = True  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="module")
def topology(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[E2E]:
    """One topology for a whole module (tests that do not break it)."""
    log_dir = tmp_path_factory.mktemp("e2e-logs")
    # A module that reads the processes' /metrics sets E2E_METRICS = True.
    e2e = _start(
        log_dir,
        getattr(request.module, "EXTRA_ENV", None),
        getattr(request.module, "E2E_METRICS", False),
    )
    try:
        yield e2e
    finally:
        _finish(e2e, _failed(request), request.module.__name__)


@pytest.fixture
def fresh_topology(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[E2E]:
    """A topology of its own for a test that kills or disturbs it."""
    e2e = _start(tmp_path / "logs", getattr(request.module, "EXTRA_ENV", None))
    try:
        yield e2e
    finally:
        _finish(e2e, _failed(request), request.node.nodeid)


# ---------------------------------------------------------------------------- workflows


def layered_delays(
    name: str, layers: int, width: int, *, seconds: float = 0.1, max_concurrency: int | None = None
) -> dict[str, Any]:
    """layers x width `delay` nodes; each node waits for two of the previous layer.

    Delays vary between seconds/2 and seconds*2 so that completions interleave.
    """
    nodes = []
    edges = []
    for layer in range(layers):
        for index in range(width):
            node_id = f"d{layer}_{index}"
            wait = round(seconds * (0.5 + 1.5 * ((layer * 7 + index * 3) % 10) / 9), 3)
            nodes.append({"id": node_id, "type": "delay", "params": {"seconds": wait}})
            if layer:
                edges.append({"source": f"d{layer - 1}_{index}", "target": node_id})
                if width > 1:
                    other = (index + 1) % width
                    edges.append({"source": f"d{layer - 1}_{other}", "target": node_id})
    definition: dict[str, Any] = {"name": name, "nodes": nodes, "edges": edges}
    if max_concurrency is not None:
        definition["settings"] = {"max_concurrency": max_concurrency}
    return definition


async def create_workflow(client: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    response = await client.post("/api/v1/workflows", json=definition)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def execute(
    client: httpx.AsyncClient,
    workflow_id: str,
    inputs: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> str:
    body: dict[str, Any] = {"inputs": inputs or {}}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    response = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])


async def get_execution(client: httpx.AsyncClient, execution_id: str) -> dict[str, Any] | None:
    """The execution, or None while the API cannot answer (a dependency is restarting)."""
    try:
        response = await client.get(f"/api/v1/executions/{execution_id}")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        # 503 while a dependency restarts (a 500 is recorded by the client's hook, and
        # each test asserts on E2E.internal_errors()).
        assert response.status_code >= 500, response.text
        return None
    return dict(response.json())


async def wait_final(
    client: httpx.AsyncClient,
    execution_id: str,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Poll until the execution is final (bounded); tolerates a restarting dependency."""
    found: dict[str, Any] = {}

    async def final() -> bool:
        execution = await get_execution(client, execution_id)
        if execution is not None:
            found.clear()
            found.update(execution)
        return bool(execution and execution["status"] in FINAL_STATUSES)

    await assert_eventually(
        final,
        timeout=timeout,
        interval=0.2,
        message=f"execution {execution_id} not final within {timeout}s: {found.get('status')}",
    )
    return found


async def count_node_events(e2e: E2E, execution_id: str, event_type: str) -> int:
    rows = await e2e.fetch(
        "SELECT count(*) AS n FROM execution_events WHERE execution_id = $1 AND type = $2",
        execution_id,
        event_type,
    )
    return int(rows[0]["n"])


async def wait_progress(e2e: E2E, execution_id: str, completed: int, timeout: float = 30.0) -> None:
    """Wait until at least `completed` node.completed events are in the database."""

    async def enough() -> bool:
        return await count_node_events(e2e, execution_id, "node.completed") >= completed

    await assert_eventually(
        enough, timeout=timeout, interval=0.05, message=f"{completed} nodes not done in time"
    )


# --------------------------------------------------------------------------------- SSE


def parse_sse(lines: list[str]) -> list[dict[str, Any]]:
    """Frames of an SSE body: each {'id', 'event', 'data'} (comments and retry skipped)."""
    frames: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if "data" in current:
                frames.append(current)
            current = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            current["data"] = json.loads(value)
        elif field in ("id", "event"):
            current[field] = value
    if "data" in current:
        frames.append(current)
    return frames


async def read_sse(
    client: httpx.AsyncClient,
    execution_id: str,
    *,
    last_event_id: int | None = None,
    after: int | None = None,
    limit: int | None = None,
    timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """Events of the SSE stream (until it ends, or `limit` events then disconnect)."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    params = {"after": str(after)} if after is not None else None
    lines: list[str] = []
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async with client.stream(
            "GET", f"/api/v1/executions/{execution_id}/events", headers=headers, params=params
        ) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                lines.append(line)
                if line == "":
                    frames = parse_sse(lines)
                    lines.clear()
                    for frame in frames:
                        assert frame.get("event") != "error", frame
                        assert int(frame["id"]) == frame["data"]["seq"], frame
                        assert frame["event"] == frame["data"]["type"], frame
                        events.append(frame["data"])
                    if limit is not None and len(events) >= limit:
                        return

    await asyncio.wait_for(consume(), timeout)
    return events


@dataclass
class Follower:
    """What a live SSE client saw, reconnecting with Last-Event-ID like a browser."""

    events: list[dict[str, Any]]
    connections: int
    errors: list[str]


async def follow_sse(
    client: httpx.AsyncClient,
    execution_id: str,
    *,
    timeout: float = 90.0,
    max_connections: int = 60,
) -> Follower:
    """Follow the stream live until the execution's final event; whenever the stream breaks
    (an `error` event, a non-200 answer, a dropped connection, an end without the final
    event), reconnect with Last-Event-ID = the last seq received."""
    seen = Follower(events=[], connections=0, errors=[])

    async def run() -> None:
        while True:
            seen.connections += 1
            assert seen.connections <= max_connections, f"gave up: {seen.errors[-5:]}"
            headers = {"Accept": "text/event-stream"}
            if seen.events:
                headers["Last-Event-ID"] = str(seen.events[-1]["seq"])
            lines: list[str] = []
            try:
                async with client.stream(
                    "GET", f"/api/v1/executions/{execution_id}/events", headers=headers
                ) as response:
                    if response.status_code != 200:
                        seen.errors.append(f"HTTP {response.status_code}")
                        await asyncio.sleep(0.3)
                        continue
                    async for line in response.aiter_lines():
                        if line != "":
                            lines.append(line)
                            continue
                        lines.append(line)
                        frames = parse_sse(lines)
                        lines.clear()
                        for frame in frames:
                            if frame.get("event") == "error":
                                raise _StreamBroke(json.dumps(frame["data"]))
                            seen.events.append(frame["data"])
                            if frame["data"]["type"] in FINAL_EXECUTION_EVENTS:
                                return
                seen.errors.append("stream ended before the final event")
            except (_StreamBroke, httpx.HTTPError) as error:
                seen.errors.append(f"{type(error).__name__}: {error}")
            await asyncio.sleep(0.3)

    await asyncio.wait_for(run(), timeout)
    return seen


class _StreamBroke(Exception):
    pass


def check_followed(follower: Follower, history: list[dict[str, Any]]) -> None:
    """The live client got the full history, every event exactly once, in order."""
    print(f"live SSE client: {follower.connections} connection(s); breaks: {follower.errors}")
    seqs = [event["seq"] for event in follower.events]
    duplicates = sorted({seq for seq in seqs if seqs.count(seq) > 1})
    assert not duplicates, f"events delivered twice to the live client: {duplicates}"
    missing = sorted({e["seq"] for e in history} - set(seqs))
    assert not missing, f"events the live client never got: {missing}"
    assert follower.events == history


def check_history(
    events: list[dict[str, Any]], node_ids: list[str], final_type: str = "execution.completed"
) -> None:
    """A complete, gap-free history: seq 1..n, every node one terminal event, final last."""
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(1, len(events) + 1)), f"seq gaps or duplicates: {seqs}"
    assert events[0]["type"] == "execution.started"
    assert events[-1]["type"] == final_type, events[-1]
    assert sum(1 for e in events if e["type"] in FINAL_EXECUTION_EVENTS) == 1
    completed: dict[str, int] = {}
    for event in events:
        if event["type"] in TERMINAL_NODE_EVENTS:
            completed[event["node_id"]] = completed.get(event["node_id"], 0) + 1
    twice = {node: n for node, n in completed.items() if n != 1}
    assert not twice, f"nodes with more than one terminal event: {twice}"
    missing = set(node_ids) - set(completed)
    assert not missing, f"nodes without a terminal event: {sorted(missing)[:20]}"
    started = {e["node_id"] for e in events if e["type"] == "node.started"}
    assert set(node_ids) <= started


def check_nodes_succeeded_once(execution: dict[str, Any], node_ids: list[str]) -> None:
    """Every node succeeded, with exactly one succeeded attempt in its history."""
    assert execution["status"] == "succeeded", execution.get("error")
    nodes = {node["node_id"]: node for node in execution["nodes"]}
    assert sorted(nodes) == sorted(node_ids)
    for node_id, node in nodes.items():
        assert node["status"] == "succeeded", (node_id, node)
        wins = [a for a in node["attempt_history"] if a["status"] == "succeeded"]
        assert len(wins) == 1, (node_id, node["attempt_history"])
        assert wins[0]["attempt"] == node["attempts"], (node_id, node)


# ------------------------------------------------------------------------ infrastructure


async def wait_postgres(timeout: float = 60.0) -> None:
    async def accepts() -> bool:
        try:
            connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=2)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        try:
            return bool(await connection.fetchval("SELECT 1"))
        finally:
            await connection.close()

    await assert_eventually(
        accepts, timeout=timeout, interval=0.3, message="PostgreSQL does not accept connections"
    )


def elapsed(start: float) -> str:
    return f"{time.monotonic() - start:.1f}s"
