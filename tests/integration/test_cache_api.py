"""DELETE /api/v1/cache on the embedded stack: a workflow's (or one node's) cached results
are invalidated in the store the workflow service reads."""

from __future__ import annotations

import uuid

import httpx

from libs.cli.stack import Stack
from libs.common.cache import CacheScope, create_result_cache
from libs.common.settings import CommonSettings
from tests.integration.helpers import create_workflow, run, wait_final

FLOW = {"name": "cached", "nodes": [{"id": "a", "type": "noop"}, {"id": "b", "type": "noop"}]}


async def test_delete_cache_invalidates_a_node_then_the_workflow(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client, FLOW)
    # The cache as a workflow replica of this stack builds it (same settings, same store).
    cache, opened = create_result_cache(CommonSettings(**stack.settings), stack.kv)
    assert opened is None
    a, b = CacheScope(workflow_id, "a"), CacheScope(workflow_id, "b")
    await cache.set(a, "digest", b"A")
    await cache.set(b, "digest", b"B")

    response = await client.delete(
        "/api/v1/cache", params={"workflow_id": workflow_id, "node_id": "a"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["node_id"] == "a"
    assert await cache.get(a, "digest") is None
    assert await cache.get(b, "digest") == b"B"
    assert len(cache.memory or []) == 1  # a's entry is gone from this replica's memory too

    response = await client.delete("/api/v1/cache", params={"workflow_id": workflow_id})
    assert response.status_code == 200, response.text
    assert response.json() == {"workflow_id": workflow_id, "node_id": None, "removed": 0}
    assert await cache.get(b, "digest") is None
    assert len(cache.memory or []) == 0


async def test_delete_cache_needs_an_existing_workflow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/v1/cache")
    assert response.status_code == 422
    response = await client.delete("/api/v1/cache", params={"workflow_id": str(uuid.uuid4())})
    assert response.status_code == 404
    response = await client.delete("/api/v1/cache", params={"workflow_id": "not-a-uuid"})
    assert response.status_code == 404


CACHED = {
    "name": "cached-run",
    "nodes": [
        {"id": "a", "type": "template", "params": {"template": "A"}, "cache": {"ttl_s": 60}},
        {"id": "b", "type": "template", "params": {"template": "B"}, "cache": {"ttl_s": 60}},
    ],
}


async def test_runs_hit_the_cache_until_it_is_invalidated(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client, CACHED)

    async def statuses() -> dict[str, str]:
        execution = await wait_final(client, await run(client, workflow_id))
        assert execution["status"] == "succeeded", execution["error"]
        return {n["node_id"]: n["status"] for n in execution["nodes"]}

    assert await statuses() == {"a": "succeeded", "b": "succeeded"}
    assert await statuses() == {"a": "cached", "b": "cached"}
    # The workflow service's cache is the bounded tiered one, scoped by workflow and node.
    engine = stack.services["workflow"].engine
    assert len(engine.result_cache.memory) == 2

    response = await client.delete(
        "/api/v1/cache", params={"workflow_id": workflow_id, "node_id": "a"}
    )
    assert response.status_code == 200, response.text
    assert await statuses() == {"a": "succeeded", "b": "cached"}
    response = await client.delete("/api/v1/cache", params={"workflow_id": workflow_id})
    assert response.status_code == 200, response.text
    assert await statuses() == {"a": "succeeded", "b": "succeeded"}
    assert await statuses() == {"a": "cached", "b": "cached"}
