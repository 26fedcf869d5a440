"""Execution control through the HTTP API: cancel, pause/resume, idempotency keys, retry
from a failure (reusing what succeeded) and the result cache."""

from __future__ import annotations

import httpx

from tests.integration import helpers
from tests.integration.helpers import (
    ScriptedServer,
    create_workflow,
    event_types,
    events,
    get_execution,
    node,
    run,
    statuses,
    wait_final,
    wait_status,
)

http_server = helpers.http_server


async def test_cancel_stops_a_running_execution(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(
        client,
        {
            "name": "long",
            "nodes": [
                {"id": "sleepy", "type": "delay", "params": {"seconds": 30}},
                {"id": "after", "type": "noop"},
            ],
            "edges": [{"source": "sleepy", "target": "after"}],
        },
    )
    execution_id = await run(client, workflow_id)
    await wait_status(client, execution_id, "running", node_id="sleepy")

    response = await client.post(f"/api/v1/executions/{execution_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    execution = await wait_final(client, execution_id, timeout=5)
    assert execution["status"] == "cancelled"
    assert statuses(execution) == {"sleepy": "cancelled", "after": "cancelled"}
    assert execution["duration_ms"] < 5000
    sleepy = node(execution, "sleepy")
    assert sleepy["attempt_history"][-1]["status"] == "cancelled"
    assert node(execution, "after")["attempts"] == 0
    stream = await events(client, execution_id)
    types = event_types(stream)
    assert types[-1] == "execution.cancelled"
    assert "node.started" not in event_types(stream, "after")
    assert "node.completed" not in types

    # A finished execution cannot be cancelled again, nor resumed.
    again = await client.post(f"/api/v1/executions/{execution_id}/cancel")
    assert again.status_code == 409, again.text
    resumed = await client.post(f"/api/v1/executions/{execution_id}/resume")
    assert resumed.status_code == 409, resumed.text


async def test_pause_lets_running_nodes_finish_and_resume_continues(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(
        client,
        {
            "name": "pausable",
            "nodes": [
                {"id": "first", "type": "delay", "params": {"seconds": 0.5}},
                {"id": "second", "type": "transform", "params": {"expression": "'done'"}},
            ],
            "edges": [{"source": "first", "target": "second"}],
        },
    )
    execution_id = await run(client, workflow_id)
    await wait_status(client, execution_id, "running", node_id="first")

    paused = await client.post(f"/api/v1/executions/{execution_id}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"

    # The running node finishes; nothing new is dispatched while paused.
    execution = await wait_status(client, execution_id, "succeeded", node_id="first")
    assert execution["status"] == "paused"
    assert node(execution, "second")["status"] == "pending"
    # Still nothing after the batch that completed `first` has been applied.
    execution = await get_execution(client, execution_id)
    assert (execution["status"], node(execution, "second")["status"]) == ("paused", "pending")

    resumed = await client.post(f"/api/v1/executions/{execution_id}/resume")
    assert resumed.status_code == 200, resumed.text
    execution = await wait_final(client, execution_id)
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "second")["output"] == {"value": "done"}

    stream = await events(client, execution_id)
    seq = {(e["type"], e["node_id"]): e["seq"] for e in stream}
    assert seq[("execution.paused", None)] < seq[("node.completed", "first")]
    assert seq[("node.completed", "first")] < seq[("execution.resumed", None)]
    assert seq[("execution.resumed", None)] < seq[("node.started", "second")]


async def test_idempotency_key_starts_one_execution(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(
        client,
        {
            "name": "once",
            "nodes": [{"id": "t", "type": "transform", "params": {"expression": "1"}}],
        },
    )
    body = {"inputs": {}, "idempotency_key": "order-42"}
    first = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json=body)
    second = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json=body)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["execution_id"] == second.json()["execution_id"]
    assert (first.json()["created"], second.json()["created"]) == (True, False)
    # The header form is the same key.
    third = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute",
        json={"inputs": {}},
        headers={"Idempotency-Key": "order-42"},
    )
    assert third.json()["execution_id"] == first.json()["execution_id"]
    # Another key: another execution.
    other = await run(client, workflow_id, key="order-43")
    assert other != first.json()["execution_id"]

    await wait_final(client, first.json()["execution_id"])
    await wait_final(client, other)
    listed = (await client.get("/api/v1/executions", params={"workflow_id": workflow_id})).json()
    assert listed["total"] == 2
    assert sorted(e["idempotency_key"] for e in listed["items"]) == ["order-42", "order-43"]


async def test_retry_reuses_the_nodes_that_succeeded(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    one = http_server.route("/one", json={"n": 1})
    two = http_server.route("/two", json={"n": 2})
    flaky = http_server.route("/three", fail_times=1, fail_status=500, json={"n": 3})
    workflow_id = await create_workflow(
        client,
        {
            "name": "chain",
            "nodes": [
                {"id": "n1", "type": "http_request", "params": {"url": one}},
                {"id": "n2", "type": "http_request", "params": {"url": two}},
                {"id": "n3", "type": "http_request", "params": {"url": flaky}},
                {
                    "id": "n4",
                    "type": "output",
                    "params": {"value": "{{ n1.json.n + n2.json.n + n3.json.n }}"},
                },
            ],
            "edges": [
                {"source": "n1", "target": "n2"},
                {"source": "n2", "target": "n3"},
                {"source": "n3", "target": "n4"},
            ],
        },
    )
    failed = await wait_final(client, await run(client, workflow_id))
    assert failed["status"] == "failed"
    assert statuses(failed) == {
        "n1": "succeeded",
        "n2": "succeeded",
        "n3": "failed",
        "n4": "cancelled",
    }

    response = await client.post(f"/api/v1/executions/{failed['id']}/retry")
    assert response.status_code == 202, response.text
    retry_id = response.json()["execution_id"]
    assert retry_id != failed["id"]
    retried = await wait_final(client, retry_id)
    assert retried["status"] == "succeeded", retried["error"]
    assert retried["retry_of"] == failed["id"]
    assert retried["trigger"] == "retry"
    assert retried["outputs"] == {"n4": 6}
    for node_id in ("n1", "n2"):
        before, after = node(failed, node_id), node(retried, node_id)
        assert after["status"] == "succeeded"
        assert after["output"] == before["output"]
        assert after["attempts"] == before["attempts"] == 1
        assert after["started_at"] == before["started_at"]
        assert after["finished_at"] == before["finished_at"]
    assert node(retried, "n3")["attempts"] == 1
    assert node(retried, "n3")["output"]["json"] == {"n": 3}
    # Reused, not re-run: the server saw n1 and n2 once, n3 twice.
    assert http_server.calls == {"/one": 1, "/two": 1, "/three": 2}
    stream = await events(client, retry_id)
    assert "node.started" not in event_types(stream, "n1")
    assert "node.started" not in event_types(stream, "n2")

    # Only failed or cancelled executions can be retried.
    refused = await client.post(f"/api/v1/executions/{retry_id}/retry")
    assert refused.status_code == 409, refused.text


async def test_result_cache_hits_on_the_same_inputs_only(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    http_server.route("/lookup/a", json={"value": "A"})
    http_server.route("/lookup/b", json={"value": "B"})
    workflow_id = await create_workflow(
        client,
        {
            "name": "cached",
            "inputs": {"key": {"type": "string", "required": True}},
            "nodes": [
                {
                    "id": "lookup",
                    "type": "http_request",
                    "params": {"url": http_server.url("/lookup/{{ inputs.key }}")},
                    "cache": {"ttl_s": 60},
                },
                {
                    "id": "use",
                    "type": "template",
                    "params": {"template": "{{ lookup.json.value }}"},
                },
            ],
            "edges": [{"source": "lookup", "target": "use"}],
        },
    )
    first = await wait_final(client, await run(client, workflow_id, {"key": "a"}))
    assert first["status"] == "succeeded", first["error"]
    assert node(first, "lookup")["status"] == "succeeded"

    second = await wait_final(client, await run(client, workflow_id, {"key": "a"}))
    assert second["status"] == "succeeded", second["error"]
    lookup = node(second, "lookup")
    assert lookup["status"] == "cached"
    assert lookup["output"] == node(first, "lookup")["output"]
    assert node(second, "use")["output"] == {"text": "A"}
    assert http_server.calls["/lookup/a"] == 1
    stream = await events(client, second["id"])
    completed = [e for e in stream if e["type"] == "node.completed" and e["node_id"] == "lookup"]
    assert completed[0]["data"]["status"] == "cached"

    third = await wait_final(client, await run(client, workflow_id, {"key": "b"}))
    assert node(third, "lookup")["status"] == "succeeded"
    assert node(third, "use")["output"] == {"text": "B"}
    assert http_server.calls["/lookup/b"] == 1
