"""The worker's span of an attempt is a child of the attempt's span in the cluster (one
trace per execution), when OpenTelemetry is configured in the worker's process: here the
worker runs in the stack's own process, so one in-memory exporter sees both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from heddle_sdk import Context, Worker, node_type
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.cli.stack import Stack, start_stack
from libs.common.tracing import configure_tracing, remove_span_processor
from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, run, wait_final
from tests.sdk.test_worker import FAST, serving, worker_address


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    processor = SimpleSpanProcessor(memory)
    configure_tracing("heddle", processor=processor)
    try:
        yield memory
    finally:
        remove_span_processor(processor)


@pytest.fixture
async def stack(exporter: InMemorySpanExporter, sqlite_url: str) -> AsyncIterator[Stack]:
    running = await start_stack(
        {"database_url": sqlite_url, "worker_port": 0, **FAST}, ephemeral_ports=True
    )
    try:
        yield running
    finally:
        await running.stop()


@node_type("acme.traced")
def traced(ctx: Context) -> dict[str, Any]:
    return {"traceparent": ctx.traceparent}


async def test_the_worker_span_is_a_child_of_the_attempt(
    stack: Stack, client: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    async with serving(Worker(worker_address(stack), stack.admin_key, [traced])):
        workflow_id = await create_workflow(
            client, {"name": "traced", "nodes": [{"id": "t", "type": "acme.traced"}]}
        )
        execution = await wait_final(client, await run(client, workflow_id))
    assert execution["status"] == "succeeded", execution
    trace_id = execution["trace_id"]

    def spans(name: str) -> list[Any]:
        return [
            s
            for s in exporter.get_finished_spans()
            if s.name == name and f"{s.context.trace_id:032x}" == trace_id
        ]

    await assert_eventually(lambda: bool(spans("worker acme.traced")), timeout=10)
    (worker_span,) = spans("worker acme.traced")
    (attempt,) = spans("node.attempt t")
    assert worker_span.parent is not None
    assert worker_span.parent.span_id == attempt.context.span_id
    assert worker_span.attributes["heddle.node_id"] == "t"
    traceparent = execution["nodes"][0]["output"]["traceparent"]
    assert traceparent.split("-")[1] == trace_id
