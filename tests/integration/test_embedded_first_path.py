"""The first real path through every layer: gateway -> workflow -> node over gRPC, state in
the database, on the embedded stack."""

from __future__ import annotations

import httpx

HELLO = {
    "name": "hello",
    "inputs": {"name": {"type": "string", "required": True}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "greet", "type": "template", "params": {"template": "Hello {{ inputs.name }}!"}},
        {"id": "done", "type": "output", "params": {"value": {"greeting": "{{ greet.text }}"}}},
    ],
    "edges": [{"source": "start", "target": "greet"}, {"source": "greet", "target": "done"}],
}


async def wait_final(client: httpx.AsyncClient, execution_id: str) -> dict:
    async with client.stream("GET", f"/api/v1/executions/{execution_id}/events") as stream:
        async for _ in stream.aiter_lines():
            pass
    response = await client.get(f"/api/v1/executions/{execution_id}")
    assert response.status_code == 200
    return response.json()


async def test_create_execute_read_back(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/workflows", json=HELLO)
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    started = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": {"name": "world"}}
    )
    assert started.status_code == 202, started.text
    execution = await wait_final(client, started.json()["execution_id"])
    assert execution["status"] == "succeeded"
    assert execution["outputs"] == {"greeting": "Hello world!"}
    assert [n["node_id"] for n in execution["nodes"]] == ["start", "greet", "done"]
    assert all(n["status"] == "succeeded" for n in execution["nodes"])
    assert execution["nodes"][1]["output"] == {"text": "Hello world!"}
