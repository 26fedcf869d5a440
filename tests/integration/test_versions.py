"""Workflow versions through the HTTP API: list (author, time, diff summary), read, diff two,
roll back (a new version equal to an old one), and executions naming the version they ran."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from libs.cli.stack import Stack
from tests.integration.helpers import create_workflow, run, wait_final

V1: dict[str, Any] = {
    "name": "greeter",
    "nodes": [{"id": "a", "type": "noop"}],
    "edges": [],
}
V2: dict[str, Any] = {
    "name": "greeter",
    "nodes": [
        {"id": "a", "type": "template", "params": {"template": "hi"}},
        {"id": "b", "type": "noop"},
    ],
    "edges": [{"source": "a", "target": "b"}],
}
V3: dict[str, Any] = {**V2, "description": "now described", "nodes": V2["nodes"][:1], "edges": []}


def _shape(definition: dict[str, Any]) -> tuple[Any, ...]:
    """Nodes (id, type, params) and edges (source, target): the service adds defaults."""
    return (
        [(n["id"], n["type"], n.get("params") or {}) for n in definition["nodes"]],
        [(e["source"], e["target"]) for e in definition.get("edges") or []],
    )


async def _versions(client: httpx.AsyncClient, workflow_id: str, **params: Any) -> dict[str, Any]:
    response = await client.get(f"/api/v1/workflows/{workflow_id}/versions", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_list_read_diff_and_rollback(stack: Stack, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, V1)
    for definition in (V2, V3):
        response = await client.put(f"/api/v1/workflows/{workflow_id}", json=definition)
        assert response.status_code == 200, response.text

    page = await _versions(client, workflow_id)
    assert page["total"] == 3
    assert [v["version"] for v in page["items"]] == [3, 2, 1]
    v3, v2, v1 = page["items"]
    author = v1["author"]
    assert author and author.startswith(("key:", "anonymous"))
    assert {v["author"] for v in page["items"]} == {author}
    assert all(v["created_at"] for v in page["items"])
    assert v1["summary"]["nodes_added"] == ["a"]
    assert v2["summary"]["nodes_added"] == ["b"] and v2["summary"]["nodes_changed"] == ["a"]
    assert v2["summary"]["edges_added"] == 1
    assert v2["summary"]["text"] == "+1 node (b); ~1 node (a); +1 edge"
    assert v3["summary"]["nodes_removed"] == ["b"] and v3["summary"]["edges_removed"] == 1
    assert v3["summary"]["fields_changed"] == ["description"]
    assert all(v["definition"] is None for v in page["items"])

    paged = await _versions(client, workflow_id, page=2, page_size=2)
    assert [v["version"] for v in paged["items"]] == [1] and paged["total"] == 3

    response = await client.get(f"/api/v1/workflows/{workflow_id}/versions/2")
    assert response.status_code == 200, response.text
    assert _shape(response.json()["definition"]) == _shape(V2)

    response = await client.get(f"/api/v1/workflows/{workflow_id}/versions/3/diff?against=1")
    assert response.status_code == 200, response.text
    diff = response.json()
    assert (diff["from_version"], diff["to_version"]) == (1, 3)
    assert {n["id"]: n["change"] for n in diff["nodes"]} == {"a": "changed"}
    assert diff["fields"]["description"] == {"before": "", "after": "now described"}

    response = await client.post(f"/api/v1/workflows/{workflow_id}/versions/2/rollback")
    assert response.status_code == 201, response.text
    rolled = response.json()
    assert rolled["version"] == 4 and rolled["rollback_of"] == 2
    assert _shape(rolled["definition"]) == _shape(V2)
    assert response.headers["location"] == f"/api/v1/workflows/{workflow_id}/versions/4"
    latest = (await client.get(f"/api/v1/workflows/{workflow_id}")).json()
    assert latest["version"] == 4 and _shape(latest["definition"]) == _shape(V2)
    page = await _versions(client, workflow_id)
    assert page["items"][0]["rollback_of"] == 2
    assert page["items"][0]["summary"]["nodes_added"] == ["b"]

    # Executions name the version they ran.
    execution_id = await run(client, workflow_id)
    execution = await wait_final(client, execution_id)
    assert execution["workflow_version"] == 4


async def test_unknown_workflow_or_version_is_404(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, V1)
    for path in (
        f"/api/v1/workflows/{uuid.uuid4()}/versions",
        f"/api/v1/workflows/{workflow_id}/versions/9",
        f"/api/v1/workflows/{workflow_id}/versions/9/diff",
    ):
        response = await client.get(path)
        assert response.status_code == 404, (path, response.text)
    response = await client.post(f"/api/v1/workflows/{workflow_id}/versions/9/rollback")
    assert response.status_code == 404
    response = await client.get(f"/api/v1/workflows/{workflow_id}/versions/0")
    assert response.status_code == 422
