"""Rate limits (429 + Retry-After), body size (413), tenant quotas and call depth."""

from __future__ import annotations

import httpx
import pytest

from libs.cli.stack import Stack
from tests.security.support import wait_final


@pytest.mark.parametrize("stack", [{"rate_limit_per_s": 0.5, "rate_limit_burst": 3}], indirect=True)
async def test_rate_limit_per_key(stack: Stack, client: httpx.AsyncClient) -> None:
    statuses = [(await client.get("/api/v1/workflows")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = await client.get("/api/v1/workflows")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "resource_exhausted"
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    assert (await client.get("/healthz")).status_code == 200  # health is not limited


@pytest.mark.parametrize("stack", [{"max_body_bytes": 1024}], indirect=True)
async def test_body_too_large(stack: Stack, client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/workflows",
        content=b"{" + b" " * 4096 + b"}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


SLOW = {
    "name": "slow",
    "nodes": [{"id": "wait", "type": "delay", "params": {"seconds": 30}}],
    "edges": [],
}


@pytest.mark.parametrize(
    "stack", [{"quota_max_concurrent_executions": 1, "quota_max_workflows": 2}], indirect=True
)
async def test_tenant_quotas(stack: Stack, client: httpx.AsyncClient) -> None:
    workflow = (await client.post("/api/v1/workflows", json=SLOW)).json()["id"]
    first = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
    assert first.status_code == 202, first.text
    second = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
    assert second.status_code == 429, second.text
    assert second.json()["error"]["details"]["quota"] == "max_concurrent_executions"
    cancelled = await client.post(f"/api/v1/executions/{first.json()['execution_id']}/cancel")
    assert cancelled.status_code == 200
    third = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
    assert third.status_code == 202, third.text
    await client.post(f"/api/v1/executions/{third.json()['execution_id']}/cancel")

    assert (await client.post("/api/v1/workflows", json=SLOW)).status_code == 201
    over = await client.post("/api/v1/workflows", json=SLOW)
    assert over.status_code == 429
    assert over.json()["error"]["details"]["quota"] == "max_workflows"


@pytest.mark.parametrize("stack", [{"quota_max_execution_duration_s": 0.5}], indirect=True)
async def test_max_execution_duration(stack: Stack, client: httpx.AsyncClient) -> None:
    workflow = (await client.post("/api/v1/workflows", json=SLOW)).json()["id"]
    started = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
    execution = await wait_final(client, started.json()["execution_id"])
    assert execution["status"] == "failed"
    assert execution["error"]["type"] == "Timeout"
    assert "maximum duration" in execution["error"]["message"]


@pytest.mark.parametrize("stack", [{"max_call_depth": 3}], indirect=True)
async def test_a_workflow_calling_itself_stops_at_the_call_depth(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    definition = {
        "name": "ouroboros",
        "nodes": [{"id": "again", "type": "noop"}],
        "edges": [],
    }
    workflow = (await client.post("/api/v1/workflows", json=definition)).json()["id"]
    recursive = {
        "name": "ouroboros",
        "nodes": [
            {
                "id": "again",
                "type": "subworkflow",
                "params": {"workflow_id": workflow, "inputs": {}},
            }
        ],
        "edges": [],
    }
    updated = await client.put(f"/api/v1/workflows/{workflow}", json=recursive)
    assert updated.status_code == 200, updated.text
    started = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
    execution = await wait_final(client, started.json()["execution_id"])
    assert execution["status"] == "failed"
    assert "call depth 4 exceeds the limit of 3" in str(execution["error"])
    children = (await client.get("/api/v1/executions", params={"page_size": 50})).json()
    assert children["total"] == 4  # depths 0..3; the fifth start was refused
