"""Issue 2 acceptance: the first path through every layer, with every service its own process
(gateway -> workflow -> node over gRPC, state in PostgreSQL, events through RabbitMQ)."""

from __future__ import annotations

from typing import Any

import pytest

from libs.common.grpcutil import check_health
from tests.e2e.conftest import E2E, create_workflow, execute, read_sse, wait_final
from tests.helpers import assert_eventually

pytestmark = pytest.mark.e2e

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


def assert_error_shape(body: Any) -> None:
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert "details" in body["error"], body


async def test_separate_processes(topology: E2E) -> None:
    """Every service is its own OS process, answering its own health check."""
    names = {spec.name for spec in topology.topology.specs}
    assert {"gateway", "workflow-1", "workflow-2", "node-1", "node-2", "node-3"} <= names
    pids = {topology.topology.pid(name) for name in names}
    assert len(pids) == len(names)
    for spec in topology.topology.specs:
        if spec.grpc_port is not None:
            assert await check_health(spec.endpoint, timeout=2.0), spec.name
    # Ready once the gateway's own stores answer too; its first database round trip (a new
    # pooled connection) can pass the 1 s readiness deadline on a loaded machine.
    answers: list[str] = []

    async def ready() -> bool:
        async with topology.client() as client:
            answer = await client.get("/readyz")
        answers.append(answer.text)
        return answer.status_code == 200

    try:
        await assert_eventually(ready, timeout=30, interval=0.5)
    except AssertionError:
        raise AssertionError(f"/readyz never 200 in 30 s: {answers[-3:]}") from None


async def test_input_template_output(topology: E2E) -> None:
    async with topology.client() as client:
        workflow_id = await create_workflow(client, HELLO)
        execution_id = await execute(client, workflow_id, {"name": "world"})
        execution = await wait_final(client, execution_id, timeout=30)
        events = await read_sse(client, execution_id, timeout=30)

    assert execution["status"] == "succeeded", execution
    assert execution["outputs"] == {"greeting": "Hello world!"}
    assert [n["node_id"] for n in execution["nodes"]] == ["start", "greet", "done"]
    assert all(n["status"] == "succeeded" for n in execution["nodes"])
    assert execution["nodes"][1]["output"] == {"text": "Hello world!"}
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "execution.completed"

    # Persisted in PostgreSQL by the workflow service, not held in a process's memory.
    rows = await topology.fetch(
        "SELECT status, outputs::text AS outputs FROM executions WHERE id = $1", execution_id
    )
    assert rows and rows[0]["status"] == "succeeded"
    assert "Hello world!" in rows[0]["outputs"]
    nodes = await topology.fetch(
        "SELECT node_id, status FROM node_runs WHERE execution_id = $1 ORDER BY node_id",
        execution_id,
    )
    assert {(r["node_id"], r["status"]) for r in nodes} == {
        ("start", "succeeded"),
        ("greet", "succeeded"),
        ("done", "succeeded"),
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/v1/workflows", b'{"name": "x", "nodes": [', 400),
        ("POST", "/api/v1/workflows", b'{"nodes": []}', 422),
        ("GET", "/api/v1/executions/00000000-0000-0000-0000-000000000000", None, 404),
        ("POST", "/api/v1/workflows/no-such-workflow/execute", b'{"inputs": {}}', 404),
    ],
    ids=["malformed-json", "missing-fields", "unknown-execution", "unknown-workflow"],
)
async def test_bad_input_is_a_4xx_json_error(
    topology: E2E, method: str, path: str, body: bytes | None, status: int
) -> None:
    async with topology.client() as client:
        response = await client.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_error_shape(response.json())
