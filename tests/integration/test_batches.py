"""Batch runs through the embedded stack: 500 inputs, one execution each, never more than the
concurrency limit at once, and the same batch posted again starts none."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack
from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow

pytestmark = pytest.mark.integration

CONCURRENCY = 25


async def _executions_of(client: httpx.AsyncClient, workflow_id: str) -> int:
    response = await client.get(
        "/api/v1/executions", params={"workflow_id": workflow_id, "page_size": 1}
    )
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


async def _all_executions(client: httpx.AsyncClient, workflow_id: str) -> list[dict[str, Any]]:
    executions: list[dict[str, Any]] = []
    page = 1
    while True:
        response = await client.get(
            "/api/v1/executions",
            params={"workflow_id": workflow_id, "page_size": 200, "page": page},
        )
        assert response.status_code == 200, response.text
        listing = response.json()
        executions.extend(listing["items"])
        if not listing["items"] or len(executions) >= listing["total"]:
            return executions
        page += 1


def _max_overlap(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    points = [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals]
    running = peak = 0
    for _, step in sorted(points, key=lambda point: (point[0], point[1])):
        running += step
        peak = max(peak, running)
    return peak


async def test_500_inputs_one_execution_each_within_the_concurrency_limit(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(
        client,
        {
            # One node: the batch driver is what this proves, not the workflow.
            "name": "batched",
            "nodes": [{"id": "echo", "type": "output", "params": {"value": "{{ inputs.n }}"}}],
        },
    )
    body = {
        "concurrency": CONCURRENCY,
        "items": [{"inputs": {"n": n}, "idempotency_key": f"batch-item-{n}"} for n in range(500)],
    }
    response = await client.post(f"/api/v1/workflows/{workflow_id}/execute-batch", json=body)
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["created"] is True and batch["total"] == 500
    assert response.headers["location"] == f"/api/v1/batches/{batch['id']}"

    finished: dict[str, Any] = {}

    async def batch_done() -> bool:
        read = await client.get(f"/api/v1/batches/{batch['id']}")
        assert read.status_code == 200, read.text
        finished.update(read.json())
        return finished["finished_at"] is not None

    await assert_eventually(batch_done, timeout=100, interval=0.5)
    assert finished["counts"] == {"succeeded": 500}
    execution_ids = [item["execution_id"] for item in finished["items"]]
    assert len(set(execution_ids)) == 500
    assert await _executions_of(client, workflow_id) == 500

    # The listing pages through them (500 GETs at once would meet the per-key rate limit).
    executions = await _all_executions(client, workflow_id)
    assert {execution["id"] for execution in executions} == set(execution_ids)
    assert sorted(execution["outputs"]["echo"] for execution in executions) == list(range(500))
    intervals = [
        (
            dt.datetime.fromisoformat(execution["created_at"]),
            dt.datetime.fromisoformat(execution["finished_at"]),
        )
        for execution in executions
    ]
    peak = _max_overlap(intervals)
    assert 1 < peak <= CONCURRENCY, peak

    again = await client.post(f"/api/v1/workflows/{workflow_id}/execute-batch", json=body)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == batch["id"] and again.json()["created"] is False
    assert [item["execution_id"] for item in again.json()["items"]] == execution_ids
    await asyncio.sleep(1.0)  # anything it started would have been created by now
    assert await _executions_of(client, workflow_id) == 500


async def test_batch_errors(stack: Stack, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(
        client,
        {
            "name": "batch-errors",
            "inputs": {"n": {"type": "integer", "required": True}},
            "nodes": [{"id": "start", "type": "input"}],
            "edges": [],
        },
    )
    duplicate = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute-batch",
        json={"items": [{"idempotency_key": "k"}, {"idempotency_key": "k"}]},
    )
    assert duplicate.status_code == 422, duplicate.text
    # A refused start (an invalid input) rejects its item; the others run.
    mixed = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute-batch",
        json={
            "items": [
                {"inputs": {"n": 1}, "idempotency_key": "ok-1"},
                {"inputs": {"n": "not a number"}, "idempotency_key": "bad-1"},
            ]
        },
    )
    assert mixed.status_code == 202, mixed.text

    async def done() -> bool:
        read = await client.get(f"/api/v1/batches/{mixed.json()['id']}")
        return bool(read.json()["finished_at"])

    await assert_eventually(done, timeout=30, interval=0.2)
    read = (await client.get(f"/api/v1/batches/{mixed.json()['id']}")).json()
    assert read["counts"] == {"succeeded": 1, "rejected": 1}, read
    assert "n" in read["items"][1]["error"]
    missing = await client.get("/api/v1/batches/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
