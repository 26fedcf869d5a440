"""U+0000 in a request (issue #12 item 4): PostgreSQL stores no NUL in text or jsonb, so it
used to reach the database and answer 500. Every place it can be sent is now a 422 whose
details locate the field; /validate refuses it too, over HTTP and over gRPC.

These run the embedded stack on the real PostgreSQL: on SQLite a NUL is stored silently.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from heddle.v1 import workflow_pb2

from libs.cli.stack import Stack, start_stack
from libs.common import jsonutil

NUL = "a\x00b"
HELLO: dict[str, Any] = {
    "name": "hello",
    "inputs": {"name": {"type": "string", "default": "world"}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "greet", "type": "template", "params": {"template": "Hi {{ inputs.name }}"}},
    ],
    "edges": [{"source": "start", "target": "greet"}],
}


@pytest.fixture
async def pg_stack(pg_url: str) -> AsyncIterator[Stack]:
    running = await start_stack(
        {"database_url": pg_url, "http_allow_hosts": ["127.0.0.1"]}, ephemeral_ports=True
    )
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def api(pg_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {pg_stack.admin_key}"}
    async with httpx.AsyncClient(
        base_url=pg_stack.gateway_url, timeout=30, headers=headers
    ) as http:
        yield http


@pytest.fixture
async def workflow_id(api: httpx.AsyncClient) -> str:
    response = await api.post("/api/v1/workflows", json=HELLO)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def assert_refused_at(response: httpx.Response, loc: str) -> None:
    assert response.status_code == 422, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    located = [detail["loc"] for detail in error["details"]]
    assert loc in located, located
    assert "U+0000" in error["message"]


async def test_a_workflow_definition_with_a_nul_is_refused_and_located(
    api: httpx.AsyncClient, workflow_id: str
) -> None:
    for body, loc in (
        ({**HELLO, "name": NUL}, "body.name"),
        ({**HELLO, "description": NUL}, "body.description"),
        (
            {
                **HELLO,
                "nodes": [HELLO["nodes"][0], {**HELLO["nodes"][1], "params": {"template": NUL}}],
            },
            "body.nodes.1.params.template",
        ),
    ):
        assert_refused_at(await api.post("/api/v1/workflows", json=body), loc)
        assert_refused_at(await api.put(f"/api/v1/workflows/{workflow_id}", json=body), loc)
        assert_refused_at(await api.post("/api/v1/workflows/validate", json=body), loc)
    # YAML spells it in more ways: the same rule.
    for spelling in ("\\0", "\\x00", "\\u0000", "\\U00000000"):
        yaml_body = f'name: "a{spelling}b"\nnodes: [{{id: start, type: input}}]\n'
        response = await api.post(
            "/api/v1/workflows",
            content=yaml_body,
            headers={"Content-Type": "application/yaml"},
        )
        assert_refused_at(response, "body.name")
    # Nothing was stored on the way.
    listed = (await api.get("/api/v1/workflows")).json()
    assert [item["name"] for item in listed["items"]] == ["hello"]


async def test_execution_inputs_and_idempotency_keys_with_a_nul_are_refused(
    api: httpx.AsyncClient, workflow_id: str
) -> None:
    execute = f"/api/v1/workflows/{workflow_id}/execute"
    assert_refused_at(await api.post(execute, json={"inputs": {"name": NUL}}), "body.inputs.name")
    assert_refused_at(
        await api.post(execute, json={"inputs": {"deep": [{"x": NUL}]}}), "body.inputs.deep.0.x"
    )
    assert_refused_at(await api.post(execute, json={"inputs": {NUL: 1}}), "body.inputs.a\\u0000b")
    assert_refused_at(
        await api.post(execute, json={"idempotency_key": NUL}), "body.idempotency_key"
    )
    listed = (await api.get("/api/v1/executions", params={"workflow_id": workflow_id})).json()
    assert listed["total"] == 0


async def test_query_parameters_with_a_nul_are_refused(
    api: httpx.AsyncClient, workflow_id: str
) -> None:
    response = await api.get("/api/v1/executions", params={"workflow_id": NUL})
    assert_refused_at(response, "query.workflow_id")
    assert_refused_at(await api.get("/api/v1/audit", params={"principal": NUL}), "query.principal")
    assert_refused_at(await api.get("/api/v1/audit", params={"action": NUL}), "query.action")
    assert_refused_at(
        await api.get("/api/v1/schedules", params={"workflow_id": NUL}), "query.workflow_id"
    )


async def test_api_keys_schedules_and_grants_with_a_nul_are_refused(
    api: httpx.AsyncClient, workflow_id: str
) -> None:
    assert_refused_at(await api.post("/api/v1/api-keys", json={"name": NUL}), "body.name")
    schedule = {"workflow_id": workflow_id, "cron": "0 0 * * *"}
    response = await api.post("/api/v1/schedules", json={**schedule, "name": NUL})
    assert_refused_at(response, "body.name")
    response = await api.post("/api/v1/schedules", json={**schedule, "inputs": {"name": NUL}})
    assert_refused_at(response, "body.inputs.name")
    grants = f"/api/v1/workflows/{workflow_id}/grants"
    response = await api.put(grants, json={"principal": "user:a\x00b", "role": "viewer"})
    assert_refused_at(response, "body.principal")
    assert_refused_at(await api.delete(f"{grants}/user:a%00b"), "path.principal")
    # And the same requests without the NUL work: the rule refuses only what it must.
    assert (await api.post("/api/v1/api-keys", json={"name": "ab"})).status_code == 201
    assert (await api.post("/api/v1/schedules", json=schedule)).status_code == 201
    response = await api.put(grants, json={"principal": "user:ab", "role": "viewer"})
    assert response.status_code == 200, response.text


async def test_validation_over_grpc_reports_a_nul_as_a_located_error(pg_stack: Stack) -> None:
    """The gateway's rule does not cover other gRPC clients: the workflow service's
    validation refuses the definition itself."""
    definition = {**HELLO, "nodes": [{"id": "start", "type": "input", "label": NUL}], "edges": []}
    clients = pg_stack.services["gateway"].app.state.clients
    reply = await clients.workflow.ValidateWorkflow(
        workflow_pb2.ValidateWorkflowRequest(
            definition_json=jsonutil.dumps(definition), tenant_id="default"
        ),
        timeout=10,
    )
    assert not reply.valid
    assert [(issue.code, issue.field) for issue in reply.issues] == [
        ("nul_character", "nodes[0].label")
    ]
