"""Fixtures of the observability tests: an in-memory span exporter installed before the
embedded stack starts, and a helper that runs a workflow through the HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.cli.stack import Stack
from libs.common.tracing import configure_tracing, remove_span_processor


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Every span ended while the test runs."""
    memory = InMemorySpanExporter()
    processor = SimpleSpanProcessor(memory)
    configure_tracing("heddle", processor=processor)
    try:
        yield memory
    finally:
        remove_span_processor(processor)


@pytest.fixture
async def stack(exporter: InMemorySpanExporter, stack: Stack) -> AsyncIterator[Stack]:
    """The embedded stack (tests/conftest.py), started once the exporter is in place."""
    yield stack


async def start_workflow(
    client: httpx.AsyncClient, definition: dict[str, Any], inputs: dict[str, Any] | None = None
) -> str:
    """Create the workflow and execute it; the execution's id."""
    created = await client.post("/api/v1/workflows", json=definition)
    assert created.status_code == 201, created.text
    started = await client.post(
        f"/api/v1/workflows/{created.json()['id']}/execute", json={"inputs": inputs or {}}
    )
    assert started.status_code == 202, started.text
    execution_id: str = started.json()["execution_id"]
    return execution_id


async def wait_final(client: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    """Follow the execution's events to their end; the final execution."""
    async with client.stream("GET", f"/api/v1/executions/{execution_id}/events") as stream:
        async for _ in stream.aiter_lines():
            pass
    response = await client.get(f"/api/v1/executions/{execution_id}")
    assert response.status_code == 200, response.text
    execution: dict[str, Any] = response.json()
    return execution


async def run_workflow(
    client: httpx.AsyncClient, definition: dict[str, Any], inputs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Create, execute and follow a workflow to its end; the final execution."""
    return await wait_final(client, await start_workflow(client, definition, inputs))
