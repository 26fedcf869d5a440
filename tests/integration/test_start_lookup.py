"""What a start checks, on SQLite (the ORM's reads) and on PostgreSQL (one statement on the
writer's connection, the definition sent only when the replica has not compiled it):
the latest version is read at every start, a version named runs that version, a missing
version or a deleted workflow is a 404 even with its definition compiled, and the
tenant's quota of running executions is counted at every start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack, start_stack


def _echo(text: str) -> dict[str, Any]:
    return {
        "name": "start-lookup",
        "nodes": [
            {"id": "start", "type": "input"},
            {"id": "done", "type": "output", "params": {"value": text}},
        ],
        "edges": [{"source": "start", "target": "done"}],
    }


SLOW = {
    "name": "start-lookup-slow",
    "nodes": [{"id": "wait", "type": "delay", "params": {"seconds": 30}}],
    "edges": [],
}


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    running = await start_stack(
        {"database_url": database_url, "quota_max_concurrent_executions": 1},
        ephemeral_ports=True,
    )
    try:
        yield running
    finally:
        await running.stop()


async def _run(client: httpx.AsyncClient, workflow_id: str, **body: Any) -> httpx.Response:
    return await client.post(f"/api/v1/workflows/{workflow_id}/run", json=body)


async def test_a_start_reads_the_latest_version_and_runs_the_one_named(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post("/api/v1/workflows", json=_echo("one"))
    assert created.status_code == 201, created.text
    workflow = created.json()["id"]
    first = await _run(client, workflow)
    assert first.status_code == 200, first.text
    assert first.json()["outputs"] == {"done": "one"}

    # A new version after version 1 was compiled: the next start runs it.
    updated = await client.put(f"/api/v1/workflows/{workflow}", json=_echo("two"))
    assert updated.status_code == 200, updated.text
    second = await _run(client, workflow)
    assert second.status_code == 200, second.text
    assert second.json()["outputs"] == {"done": "two"}
    # Both compiled now; the one named is the one run.
    again = await _run(client, workflow, version=1)
    assert again.status_code == 200, again.text
    assert again.json()["outputs"] == {"done": "one"}

    missing = await _run(client, workflow, version=7)
    assert missing.status_code == 404, missing.text
    assert "no version 7" in missing.text

    deleted = await client.delete(f"/api/v1/workflows/{workflow}")
    assert deleted.status_code == 204, deleted.text
    gone = await _run(client, workflow, version=1)  # compiled here, but deleted
    assert gone.status_code == 404, gone.text
    unknown = await _run(client, "00000000-0000-4000-8000-000000000000")
    assert unknown.status_code == 404, unknown.text


async def test_the_quota_of_running_executions_is_counted_at_every_start(
    client: httpx.AsyncClient,
) -> None:
    workflow = (await client.post("/api/v1/workflows", json=SLOW)).json()["id"]
    first = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
    assert first.status_code == 202, first.text
    second = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
    assert second.status_code == 429, second.text
    assert second.json()["error"]["details"] == {
        "quota": "max_concurrent_executions",
        "limit": 1,
    }
    cancelled = await client.post(f"/api/v1/executions/{first.json()['execution_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    third = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
    assert third.status_code == 202, third.text
    await client.post(f"/api/v1/executions/{third.json()['execution_id']}/cancel")
