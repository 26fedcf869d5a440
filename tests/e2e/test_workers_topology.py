"""Workers started from the SDK (`python -m heddle_sdk worker`) serving custom node types to
the production topology (PostgreSQL, RabbitMQ, 2 workflow replicas, separate processes):
runs across both replicas (the worker dials one; the other relays to it), one trace with
the worker's span under the attempt's, kill -9 of a worker mid-attempt, SIGTERM drain, and
the owning workflow replica killed while the worker runs.

Spans of every process go to a small OTLP collector in this test process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.e2e.conftest import E2E, wait_final
from tests.helpers import assert_eventually

ROOT = Path(__file__).resolve().parents[2]
NODES = ROOT / "tests" / "e2e" / "worker_nodes.py"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


COLLECTOR_PORT = _free_port()
EXTRA_ENV = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{COLLECTOR_PORT}",
    "OTEL_EXPORTER_OTLP_INSECURE": "true",
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "HEDDLE_WORKER_HEARTBEAT_TIMEOUT_S": "5",
    "HEDDLE_WORKER_PRESENCE_REFRESH_S": "0.5",
}


@dataclass
class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    spans: list[dict[str, Any]] = field(default_factory=list)

    def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {
                        a.key: a.value.string_value or a.value.int_value for a in span.attributes
                    }
                    self.spans.append(
                        {
                            "service": service,
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "attributes": attributes,
                        }
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{COLLECTOR_PORT}")
    server.start()
    try:
        yield servicer
    finally:
        server.stop(grace=None)


@pytest.fixture(scope="module")
def topo(collector: Collector, topology: E2E) -> E2E:
    """The module's topology, started after the collector."""
    return topology


def worker_endpoint(e2e: E2E, replica: str = "workflow-1") -> str:
    grpc_port = e2e.topology.spec(replica).grpc_port
    assert grpc_port is not None
    return f"127.0.0.1:{grpc_port + 100}"  # the default: gRPC port + 100


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


#: Auth is off in these topologies (conftest): any key is taken; the SDK wants one.
PLACEHOLDER_KEY = "hk_000000000000_" + "e2e" * 10


def start_worker(e2e: E2E, tmp_path: Path, name: str, starts: Path | None = None) -> WorkerProcess:
    log = tmp_path / f"{name}.log"
    env = {
        **os.environ,
        **EXTRA_ENV,
        "OTEL_SERVICE_NAME": name,
        "HEDDLE_TEST_WORKER": name,
        "PYTHONPATH": str(ROOT),
    }
    if starts is not None:
        env["HEDDLE_TEST_STARTS"] = str(starts)
    command = [
        sys.executable,
        "-m",
        "heddle_sdk",
        "worker",
        str(NODES),
        "--server",
        worker_endpoint(e2e),
        "--api-key",
        PLACEHOLDER_KEY,
        "--name",
        name,
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT
        )
    return WorkerProcess(name, process, log)


async def connected_workers(e2e: E2E, node_type: str) -> int:
    rows = await e2e.fetch(
        "SELECT coalesce(sum(workers), 0) AS n FROM worker_presence "
        "WHERE node_type = $1 AND seen_at > now() - interval '5 seconds'",
        node_type,
    )
    return int(rows[0]["n"])


async def wait_workers(e2e: E2E, count: int, node_type: str = "acme.e2e_wait") -> None:
    async def enough() -> bool:
        return await connected_workers(e2e, node_type) == count

    await assert_eventually(enough, timeout=30, interval=0.2, message=f"{count} workers")


def stop(worker: WorkerProcess) -> None:
    if worker.process.poll() is None:
        worker.process.kill()
    worker.process.wait(timeout=10)


async def create(client: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    response = await client.post("/api/v1/workflows", json=definition)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def execute(client: httpx.AsyncClient, workflow_id: str, inputs: Any = None) -> str:
    response = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": inputs or {}}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])


def node(execution: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in execution["nodes"] if n["node_id"] == node_id)


SHOUT_THEN_WAIT = {
    "name": "shout-then-wait",
    "inputs": {"who": {"type": "string"}},
    "nodes": [
        {"id": "shout", "type": "acme.e2e_shout", "params": {"text": "hi {{ inputs.who }}"}},
        {"id": "wait", "type": "acme.e2e_wait", "params": {"seconds": 0.01}},
    ],
    "edges": [{"source": "shout", "target": "wait"}],
}


def waiting(seconds: float) -> dict[str, Any]:
    return {
        "name": f"wait-{seconds}",
        "nodes": [{"id": "wait", "type": "acme.e2e_wait", "params": {"seconds": seconds}}],
        "edges": [],
    }


def start_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


async def test_custom_types_run_on_both_replicas_in_one_trace(
    topo: E2E, collector: Collector, tmp_path: Path
) -> None:
    worker = start_worker(topo, tmp_path, "w-main")
    try:
        await wait_workers(topo, 1)
        async with topo.client() as client:
            listing = (await client.get("/api/v1/node-types")).json()["node_types"]
            custom = {t["type"]: t for t in listing if t.get("source") == "worker"}
            assert set(custom) == {"acme.e2e_shout", "acme.e2e_wait"}
            assert custom["acme.e2e_shout"]["connected"] is True
            workflow_id = await create(client, SHOUT_THEN_WAIT)
            ids = [await execute(client, workflow_id, {"who": f"n{i}"}) for i in range(6)]
            done = [await wait_final(client, execution_id) for execution_id in ids]
        for index, execution in enumerate(done):
            assert execution["status"] == "succeeded", (execution["error"], worker.output())
            assert node(execution, "shout")["output"] == {
                "text": f"HI N{index}",
                "worker": "w-main",
            }
        # The worker is connected to workflow-1; workflow-2 drove some of the executions
        # (the gateway spreads them) and relayed their attempts to it.
        assert topo.log_lines("workflow-2", "relaying to the workers of a peer replica")
        assert not topo.log_lines("workflow-1", "relaying to the workers of a peer replica")

        def worker_span_under_attempt() -> bool:
            for execution_id in ids:
                attempts = [
                    s
                    for s in collector.spans
                    if s["name"].startswith("node.attempt")
                    and s["attributes"].get("heddle.execution_id") == execution_id
                    and s["attributes"].get("heddle.node_id") == "shout"
                ]
                workers = [
                    s
                    for s in collector.spans
                    if s["name"] == "worker acme.e2e_shout"
                    and s["attributes"].get("heddle.execution_id") == execution_id
                ]
                if not attempts or not workers:
                    return False
                if not any(
                    w["parent_id"] == a["span_id"] and w["trace_id"] == a["trace_id"]
                    for w in workers
                    for a in attempts
                ):
                    return False
            return True

        await assert_eventually(
            worker_span_under_attempt, timeout=20, message="the worker's span under the attempt"
        )
    finally:
        stop(worker)


async def test_kill_9_of_a_worker_mid_attempt_retries_it_on_another(
    topo: E2E, tmp_path: Path
) -> None:
    starts = tmp_path / "starts.txt"
    first = start_worker(topo, tmp_path, "w-first", starts)
    second: WorkerProcess | None = None
    try:
        await wait_workers(topo, 1)
        async with topo.client() as client:
            workflow_id = await create(client, waiting(3.0))
            execution_id = await execute(client, workflow_id)
            await assert_eventually(lambda: len(start_lines(starts)) == 1, timeout=30)
            second = start_worker(topo, tmp_path, "w-second", starts)
            await wait_workers(topo, 2)
            first.process.send_signal(signal.SIGKILL)
            execution = await wait_final(client, execution_id, timeout=60)
        assert execution["status"] == "succeeded", execution["error"]
        assert node(execution, "wait")["output"]["worker"] == "w-second"
        history = [a["status"] for a in node(execution, "wait")["attempt_history"]]
        assert history.count("succeeded") == 1, history
        lines = start_lines(starts)
        assert [line[2] for line in lines] == ["w-first", "w-second"]
        assert lines[0][1] == lines[1][1]  # the same idempotency key
    finally:
        stop(first)
        if second is not None:
            stop(second)


async def test_sigterm_drains_a_worker(topo: E2E, tmp_path: Path) -> None:
    starts = tmp_path / "starts.txt"
    draining = start_worker(topo, tmp_path, "w-draining", starts)
    other: WorkerProcess | None = None
    try:
        await wait_workers(topo, 1)
        async with topo.client() as client:
            workflow_id = await create(client, waiting(2.0))
            in_flight = await execute(client, workflow_id)
            await assert_eventually(lambda: len(start_lines(starts)) == 1, timeout=30)
            draining.process.send_signal(signal.SIGTERM)
            await wait_workers(topo, 0)
            later = await execute(client, workflow_id)
            other = start_worker(topo, tmp_path, "w-other", starts)
            first = await wait_final(client, in_flight, timeout=60)
            second = await wait_final(client, later, timeout=60)
        assert first["status"] == "succeeded", first["error"]
        assert node(first, "wait")["output"]["worker"] == "w-draining"
        assert node(second, "wait")["output"]["worker"] == "w-other"
        assert draining.process.wait(timeout=20) == 0, draining.output()
        assert [line[2] for line in start_lines(starts)] == ["w-draining", "w-other"]
    finally:
        stop(draining)
        if other is not None:
            stop(other)


async def test_killing_the_owning_replica_while_the_worker_runs_loses_no_outcome(
    topo: E2E, tmp_path: Path
) -> None:
    """The worker is connected to workflow-1; an execution owned by workflow-2 is relayed to
    it. Killing workflow-2 mid-attempt: workflow-1 takes the execution over and re-sends the
    attempt (same idempotency key) to the worker; it succeeds once."""
    starts = tmp_path / "starts.txt"
    worker = start_worker(topo, tmp_path, "w-survivor", starts)
    try:
        await wait_workers(topo, 1)
        async with topo.client() as client:
            workflow_id = await create(client, waiting(3.0))
            execution_id = ""
            # Started four at once: the gateway's round-robin channel spreads consecutive
            # calls over both replicas (one at a time, the polls between starts could keep
            # the starts on one replica by parity).
            for _ in range(5):
                candidates = await asyncio.gather(*(execute(client, workflow_id) for _ in range(4)))

                async def owners(candidates: list[str] = candidates) -> bool:
                    rows = await topo.fetch(
                        "SELECT owner FROM executions WHERE id = ANY($1::text[])", candidates
                    )
                    return len(rows) == len(candidates) and all(row["owner"] for row in rows)

                await assert_eventually(owners, timeout=10)
                rows = await topo.fetch(
                    "SELECT id, owner FROM executions WHERE id = ANY($1::text[])",
                    candidates,
                )
                on_second = [row["id"] for row in rows if row["owner"] == "workflow-2"]
                if on_second:
                    execution_id = on_second[0]
                    break
                for candidate in candidates:
                    await wait_final(client, candidate, timeout=30)
            assert execution_id, "no execution was owned by workflow-2"
            await assert_eventually(
                lambda: any(line[1].startswith(execution_id) for line in start_lines(starts)),
                timeout=30,
                message="the worker never started the attempt",
            )
            started_at = time.monotonic()
            topo.topology.kill("workflow-2")
            try:
                execution = await wait_final(client, execution_id, timeout=60)
            finally:
                topo.topology.start("workflow-2")
        assert execution["status"] == "succeeded", execution["error"]
        assert node(execution, "wait")["output"]["worker"] == "w-survivor"
        history = node(execution, "wait")["attempt_history"]
        assert [a["status"] for a in history].count("succeeded") == 1, history
        mine = [line for line in start_lines(starts) if line[1].startswith(execution_id)]
        assert len(mine) >= 2 and len({line[1] for line in mine}) == 1, mine
        assert time.monotonic() - started_at < 55
        await assert_eventually(lambda: topo.topology.is_running("workflow-2"), timeout=30)
    finally:
        stop(worker)
