"""Workflow routes: JSON and YAML definitions, versions, validation, execute."""

from __future__ import annotations

import httpx

from tests.gateway.conftest import HELLO, Fakes, create_workflow

HELLO_YAML = b"""
name: hello
inputs:
  name: {type: string, required: true}
retry: &retry {max_attempts: 3}
nodes:
  - id: start
    type: input
  - id: greet
    type: template
    params: {template: "Hello {{ inputs.name }}"}
    retry: *retry
edges:
  - {source: start, target: greet}
"""


async def test_create_read_list_update_delete(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/workflows", json=HELLO)
    assert created.status_code == 201
    workflow = created.json()
    assert (workflow["name"], workflow["version"]) == ("hello", 1)
    assert workflow["definition"] == HELLO
    assert workflow["created_at"] == "2025-01-02T03:04:05Z"
    workflow_id = workflow["id"]

    updated = await client.put(
        f"/api/v1/workflows/{workflow_id}", json={**HELLO, "description": "v2"}
    )
    assert updated.status_code == 200
    assert updated.json()["version"] == 2

    latest = (await client.get(f"/api/v1/workflows/{workflow_id}")).json()
    assert (latest["version"], latest["description"]) == (2, "v2")
    first = (await client.get(f"/api/v1/workflows/{workflow_id}?version=1")).json()
    assert first["version"] == 1
    assert (await client.get(f"/api/v1/workflows/{workflow_id}?version=0")).status_code == 422

    listing = (await client.get("/api/v1/workflows?page=1&page_size=10")).json()
    assert listing["total"] == 1
    assert (listing["page"], listing["page_size"]) == (1, 10)
    assert listing["items"][0]["id"] == workflow_id
    assert listing["items"][0]["definition"] is None

    deleted = await client.delete(f"/api/v1/workflows/{workflow_id}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get(f"/api/v1/workflows/{workflow_id}")).status_code == 404


async def test_yaml_definition(client: httpx.AsyncClient, fakes: Fakes) -> None:
    for media_type in ("application/yaml", "application/x-yaml", "text/yaml; charset=utf-8"):
        response = await client.post(
            "/api/v1/workflows", content=HELLO_YAML, headers={"content-type": media_type}
        )
        assert response.status_code == 201, response.text
        definition = response.json()["definition"]
        assert definition["nodes"][1]["retry"] == {"max_attempts": 3}
        assert definition["inputs"] == {"name": {"type": "string", "required": True}}


async def test_malformed_yaml_is_400_naming_line_and_column(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/workflows/validate",
        content=b"name: x\nnodes:\n  - id: a\n   type: [oops\n",
        headers={"content-type": "application/yaml"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_yaml"
    assert error["details"]["line"] >= 4
    assert "line" in error["message"]


async def test_yaml_alias_bomb_is_refused(client: httpx.AsyncClient) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    response = await client.post(
        "/api/v1/workflows",
        content="\n".join(lines).encode(),
        headers={"content-type": "application/yaml"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == "body"


async def test_validate_returns_the_report(client: httpx.AsyncClient) -> None:
    valid = await client.post("/api/v1/workflows/validate", json=HELLO)
    assert valid.status_code == 200
    assert valid.json() == {"valid": True, "issues": []}

    broken = {
        **HELLO,
        "nodes": [{"id": "a", "type": "teleport"}],
        "edges": [{"source": "a", "target": "ghost"}],
    }
    report = (await client.post("/api/v1/workflows/validate", json=broken)).json()
    assert report["valid"] is False
    assert report["issues"] == [
        {
            "code": "unknown_node_type",
            "message": "unknown node type 'teleport'",
            "node_id": "a",
            "edge": None,
            "field": "type",
            "severity": "error",
        },
        {
            "code": "dangling_edge",
            "message": "unknown target",
            "node_id": None,
            "edge": 0,
            "field": "target",
            "severity": "error",
        },
    ]


async def test_execute_with_body_key_or_header(client: httpx.AsyncClient, fakes: Fakes) -> None:
    workflow_id = await create_workflow(client)
    url = f"/api/v1/workflows/{workflow_id}/execute"
    first = await client.post(
        url, json={"inputs": {"name": "Ada"}}, headers={"Idempotency-Key": "k1"}
    )
    assert first.status_code == 202
    started = first.json()
    assert set(started) == {"execution_id", "status", "created"}
    assert started["created"] is True
    assert first.headers["location"] == f"/api/v1/executions/{started['execution_id']}"

    again = (await client.post(url, json={"idempotency_key": "k1"})).json()
    assert again["execution_id"] == started["execution_id"]
    assert again["created"] is False

    request = fakes.workflow.requests[-1]
    assert (request.workflow_id, request.idempotency_key, request.trigger) == (
        workflow_id,
        "k1",
        "api",
    )
    no_body = await client.post(url)
    assert no_body.status_code == 202


async def test_node_types(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/node-types")
    assert response.status_code == 200
    assert [t["type"] for t in response.json()["node_types"]] == ["input", "template", "output"]


async def test_openapi_documents_the_definition_and_errors(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "WorkflowDefinition" in schema["components"]["schemas"]
    create = schema["paths"]["/api/v1/workflows"]["post"]
    assert "application/yaml" in create["requestBody"]["content"]
    assert create["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert (await client.get("/docs")).status_code == 200
