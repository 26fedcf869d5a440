"""A workflow's on_failure handler (issue #20): it runs once when an execution fails, with the
error and the context (inputs, outputs of the nodes that succeeded); never on success or
cancel; the execution stays failed."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.integration import helpers
from tests.integration.helpers import (
    ScriptedServer,
    create_workflow,
    event_types,
    events,
    node,
    run,
    wait_final,
    wait_status,
)

http_server = helpers.http_server


def _definition(server: ScriptedServer, *, fail: bool, nap_s: float = 0) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"id": "fetch", "type": "http_request", "params": {"url": server.url("/fetch")}},
        {
            "id": "charge",
            "type": "http_request",
            "params": {"url": server.url("/charge" if fail else "/fetch")},
        },
    ]
    if nap_s:
        nodes.append({"id": "nap", "type": "delay", "params": {"seconds": nap_s}})
    return {
        "name": "compensated",
        "inputs": {"order": {"type": "string"}},
        "nodes": nodes,
        "edges": [{"source": "fetch", "target": "charge"}]
        + ([{"source": "charge", "target": "nap"}] if nap_s else []),
        "on_failure": {
            "type": "http_request",
            "params": {
                "url": server.url("/notify"),
                "method": "POST",
                "json": {
                    "message": "{{ error.message }}",
                    "node": "{{ error.node_id }}",
                    "order": "{{ inputs.order }}",
                    "fetched": "{{ fetch.status }}",
                },
            },
        },
    }


async def test_on_failure_runs_once_with_the_error_and_context(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    http_server.route("/charge", status=402, json={"declined": True})
    workflow_id = await create_workflow(client, _definition(http_server, fail=True))
    execution_id = await run(client, workflow_id, {"order": "A-17"})
    execution = await wait_final(client, execution_id, timeout=30)
    assert execution["status"] == "failed"
    assert "charge" in execution["error"]["message"]
    assert http_server.calls["/notify"] == 1
    (notified,) = [r for r in http_server.received if r.path == "/notify"]
    body = json.loads(notified.body)
    assert body["node"] == "charge"
    assert body["order"] == "A-17"
    assert body["fetched"] == 200  # a whole-value template keeps its type
    assert "charge" in body["message"] and "402" in body["message"]
    assert node(execution, "_on_failure")["status"] == "succeeded"
    stream = await events(client, execution_id)
    types = event_types(stream)
    assert types.index("execution.on_failure") < types.index("execution.failed")
    assert "node.completed" in event_types(stream, "_on_failure")


async def test_on_failure_not_run_on_success(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    workflow_id = await create_workflow(client, _definition(http_server, fail=False))
    execution = await wait_final(client, await run(client, workflow_id, {"order": "B"}), timeout=30)
    assert execution["status"] == "succeeded"
    assert http_server.calls["/notify"] == 0
    assert node(execution, "_on_failure")["status"] == "skipped"


async def test_on_failure_not_run_on_cancel(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    workflow_id = await create_workflow(client, _definition(http_server, fail=False, nap_s=60))
    execution_id = await run(client, workflow_id, {"order": "C"})
    await wait_status(client, execution_id, "running")
    response = await client.post(f"/api/v1/executions/{execution_id}/cancel")
    assert response.status_code < 300, response.text
    execution = await wait_final(client, execution_id, timeout=30)
    assert execution["status"] == "cancelled"
    assert http_server.calls["/notify"] == 0
    assert node(execution, "_on_failure")["status"] == "cancelled"


async def test_on_failure_subworkflow_gets_the_error(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    child_id = await create_workflow(
        client,
        {
            "name": "notifier",
            "inputs": {"why": {"type": "string"}},
            "nodes": [
                {
                    "id": "tell",
                    "type": "http_request",
                    "params": {
                        "url": http_server.url("/notify"),
                        "method": "POST",
                        "json": {"why": "{{ inputs.why }}"},
                    },
                }
            ],
        },
    )
    http_server.route("/charge", status=500)
    definition = _definition(http_server, fail=True)
    definition["on_failure"] = {"workflow_id": child_id, "inputs": {"why": "{{ error.node_id }}"}}
    workflow_id = await create_workflow(client, definition)
    execution = await wait_final(client, await run(client, workflow_id, {"order": "D"}), timeout=60)
    assert execution["status"] == "failed"
    assert http_server.calls["/notify"] == 1
    (notified,) = [r for r in http_server.received if r.path == "/notify"]
    assert json.loads(notified.body) == {"why": "charge"}


async def test_on_failure_is_validated_with_located_errors(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/workflows/validate",
        json={
            "name": "bad",
            "nodes": [{"id": "a", "type": "noop"}],
            "on_failure": {"type": "no_such_type", "params": {"x": "{{ nowhere.y }}"}},
        },
    )
    assert response.status_code == 200, response.text
    issues = {(i["code"], i["field"]) for i in response.json()["issues"]}
    assert ("unknown_node_type", "on_failure.type") in issues
    assert ("unknown_reference", "on_failure.params.x") in issues
    response = await client.post(
        "/api/v1/workflows/validate",
        json={
            "name": "bad",
            "nodes": [{"id": "a", "type": "noop"}],
            "on_failure": {"type": "noop", "workflow_id": "wf"},
        },
    )
    codes = {(i["code"], i["field"]) for i in response.json()["issues"]}
    assert ("invalid_on_failure", "on_failure") in codes
