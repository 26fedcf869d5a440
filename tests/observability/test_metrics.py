"""Prometheus metrics move when work happens: the gateway's /metrics on the embedded stack
(one process, one registry), and the /metrics endpoint of a gRPC service run on its own."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from heddle.v1 import tool_pb2, tool_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from libs.cli.stack import free_port
from libs.common.grpcutil import check_health
from tests.helpers import assert_eventually
from tests.observability.conftest import start_workflow, wait_final

ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

SLOW_SUCCESS = {
    "name": "slow",
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "pause", "type": "delay", "params": {"seconds": 2.0}},
        {"id": "ask", "type": "llm", "params": {"model": "echo", "prompt": "hi"}},
        {
            "id": "talk",
            "type": "code",
            "params": {"language": "python", "source": "print('to the log service')\nresult = 1"},
        },
    ],
    "edges": [
        {"source": "start", "target": "pause"},
        {"source": "pause", "target": "ask"},
        {"source": "start", "target": "talk"},
    ],
}


def failing_after_a_retry(port: int) -> dict:
    return {
        "name": "unreachable",
        "nodes": [
            {
                "id": "fetch",
                "type": "http_request",
                "params": {"method": "GET", "url": f"http://127.0.0.1:{port}/"},
                "retry": {"max_attempts": 2, "backoff": "fixed", "initial_delay_s": 0.01},
            }
        ],
        "edges": [],
    }


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return parse(response.text)


async def test_a_run_moves_the_engine_metrics(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    slow = await start_workflow(client, SLOW_SUCCESS)

    async def busy() -> bool:
        now = await scrape(client)
        return all(
            value(now, name) > value(before, name)
            for name in (
                "heddle_executions_running",
                "heddle_nodes_in_flight",
                "heddle_dispatch_in_flight",
            )
        )

    await assert_eventually(busy, timeout=10, message="in-flight gauges never rose")
    assert (await wait_final(client, slow))["status"] == "succeeded"
    failed = await wait_final(
        client, await start_workflow(client, failing_after_a_retry(free_port()))
    )
    assert failed["status"] == "failed"
    assert failed["nodes"][0]["attempts"] == 2

    after = await scrape(client)

    def moved(name: str, by: float = 1, **labels: str) -> None:
        delta = value(after, name, **labels) - value(before, name, **labels)
        assert delta >= by, (name, labels, delta)

    moved("heddle_executions_started_total", 2, trigger="api")
    moved("heddle_executions_total", status="succeeded")
    moved("heddle_executions_total", status="failed")
    assert value(after, "heddle_executions_running") == value(before, "heddle_executions_running")
    moved("heddle_node_duration_seconds_count", node_type="delay", outcome="succeeded")
    moved("heddle_node_duration_seconds_count", 2, node_type="http_request", outcome="failed")
    moved("heddle_node_retries_total", node_type="http_request")
    moved("heddle_nodes_total", node_type="llm", status="succeeded")
    moved("heddle_nodes_total", node_type="http_request", status="failed")
    moved("heddle_dispatch_latency_seconds_count", 5)  # 3 + 2 attempts
    moved("heddle_events_published_total", 10)
    moved("heddle_llm_tokens_total", model="echo", kind="completion")
    moved(
        "heddle_grpc_server_handled_total",
        2,
        method="/heddle.v1.WorkflowService/StartExecution",
        code="OK",
    )
    moved(
        "heddle_http_requests_total",
        2,
        method="POST",
        route="/api/v1/workflows/{workflow_id}/execute",
        status="202",
    )

    # The log service consumed the `log` event of the code node's output through the bus:
    # asynchronously, so perhaps only after the execution's end was read.
    async def consumed() -> bool:
        now = await scrape(client)
        label = {"queue": "log.events", "outcome": "ack"}
        name = "heddle_bus_messages_consumed_total"
        return value(now, name, **label) - value(before, name, **label) >= 1

    await assert_eventually(consumed, timeout=10, message="the log service consumed no event")
    # Gauges that return to rest between runs: exported, never negative.
    for name, labels in (
        ("heddle_outbox_backlog", {}),
        ("heddle_bus_queue_depth", {"queue": "log.events"}),
    ):
        assert (name, frozenset(labels.items())) in after, name
        assert value(after, name, **labels) >= 0, name


@pytest.fixture
async def tool_process(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """`python -m services.tool` on free ports: (gRPC address, metrics port)."""
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "HEDDLE_GRPC_PORT": str(grpc_port),
        "HEDDLE_METRICS_PORT": str(metrics_port),
        "HEDDLE_LOG_LEVEL": "WARNING",
    }
    with (tmp_path / "tool.log").open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.tool", cwd=ROOT, env=env, stdout=output, stderr=output
        )
    address = f"127.0.0.1:{grpc_port}"
    try:
        await assert_eventually(
            lambda: check_health(address), timeout=20, interval=0.1, message="tool never healthy"
        )
        yield address, metrics_port
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def test_a_service_process_serves_its_metrics(tool_process: tuple[str, int]) -> None:
    address, metrics_port = tool_process
    async with grpc.aio.insecure_channel(address) as channel:
        await tool_pb2_grpc.ToolServiceStub(channel).ListTools(
            tool_pb2.ListToolsRequest(), timeout=5
        )
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert response.status_code == 200
    samples = parse(response.text)
    method = "/heddle.v1.ToolService/ListTools"
    assert value(samples, "heddle_grpc_server_handled_total", method=method, code="OK") == 1
    assert value(samples, "heddle_grpc_server_handling_seconds_count", method=method) == 1
