"""The loop node: through the embedded stack (polling a local HTTP server until it answers
`done`, the max_iterations failure) and its executor directly (checkpoints reported after
every iteration, and a checkpoint handed back resumes at the next iteration)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack
from services.node.executors.base import NodeError, NodeRequest, NodeSettings, Services
from services.node.registry import default_registry
from tests.integration import helpers
from tests.integration.helpers import (
    ScriptedServer,
    create_workflow,
    events,
    node,
    run,
    wait_final,
)
from tests.node.fakes import FakeAi, FakeTools, FakeWorkflows

pytestmark = pytest.mark.integration
http_server = helpers.http_server


def _polling_loop(url: str, max_iterations: int) -> dict[str, Any]:
    """A workflow whose loop GETs url until it answers {"state": "done"} (its 6th call)."""
    return {
        "name": "poll-until-done",
        "nodes": [
            {"id": "start", "type": "input"},
            {
                "id": "poll",
                "type": "loop",
                "params": {
                    "max_iterations": max_iterations,
                    "node": {
                        "type": "http_request",
                        "params": {"url": url + "?i={{ loop.index }}", "method": "GET"},
                    },
                    "until": "{{ loop.output.json.call >= 6 }}",
                },
            },
        ],
        "edges": [{"source": "start", "target": "poll"}],
    }


async def test_a_loop_polls_until_the_server_answers_done(
    stack: Stack, client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    url = http_server.url("/status")
    workflow_id = await create_workflow(client, _polling_loop(url, 10))
    execution = await wait_final(client, await run(client, workflow_id), timeout=60)
    assert execution["status"] == "succeeded", execution
    output = node(execution, "poll")["output"]
    assert output["iterations"] == 6
    assert [item["json"]["call"] for item in output["outputs"]] == [1, 2, 3, 4, 5, 6]
    assert output["last"]["json"]["call"] == 6
    # Each iteration saw its own index.
    assert [r.query for r in http_server.received] == [f"i={i}" for i in range(6)]
    # The node detail shows the last durable checkpoint: iterations done, results so far.
    checkpoint = node(execution, "poll")["checkpoint"]
    assert checkpoint["index"] == 6
    assert [item["json"]["call"] for item in checkpoint["outputs"]] == [1, 2, 3, 4, 5, 6]
    # Each iteration is visible: in the node detail and as a node.iteration event.
    detail = node(execution, "poll")
    assert detail["iterations_total"] == 6
    iterations = detail["iterations"]
    assert [it["index"] for it in iterations] == list(range(6))
    assert {it["status"] for it in iterations} == {"succeeded"}
    assert [it["output"]["json"]["call"] for it in iterations] == [1, 2, 3, 4, 5, 6]
    assert all(it["duration_ms"] >= 0 and it["started_at"] for it in iterations)
    stream = await events(client, execution["id"])
    per_iteration = [e["data"] for e in stream if e["type"] == "node.iteration"]
    assert [e["index"] for e in per_iteration] == list(range(6))
    assert [e["output"]["json"]["call"] for e in per_iteration] == [1, 2, 3, 4, 5, 6]
    assert all(e["status"] == "succeeded" and "duration_ms" in e for e in per_iteration)
    assert all(e["node_id"] == "poll" for e in stream if e["type"] == "node.iteration")


async def test_a_failed_iteration_is_listed_with_its_error(
    stack: Stack, client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    # Iteration 2 GETs a path that answers 404 (not retryable): it fails, and so does the node.
    gone = http_server.route("/gone", fail_times=100, fail_status=404)
    definition = _polling_loop(http_server.url("/ok"), 10)
    inline = definition["nodes"][1]["params"]["node"]
    inline["params"]["url"] = (
        "{{ '" + http_server.url("/ok") + "' if loop.index < 2 else '" + gone + "' }}"
    )
    workflow_id = await create_workflow(client, definition)
    execution = await wait_final(client, await run(client, workflow_id), timeout=60)
    assert execution["status"] == "failed", execution
    detail = node(execution, "poll")
    assert detail["error"]["message"].startswith("iteration 2: ")
    assert [(it["index"], it["status"]) for it in detail["iterations"]] == [
        (0, "succeeded"),
        (1, "succeeded"),
        (2, "failed"),
    ]
    failed = detail["iterations"][2]
    assert failed["output"] is None and "iteration 2" in failed["error"]["message"]
    stream = await events(client, execution["id"])
    per_iteration = [e["data"] for e in stream if e["type"] == "node.iteration"]
    assert [(e["index"], e["status"]) for e in per_iteration] == [
        (0, "succeeded"),
        (1, "succeeded"),
        (2, "failed"),
    ]
    assert "iteration 2" in per_iteration[2]["error"]["message"]


async def test_max_iterations_reached_fails_naming_the_node(
    stack: Stack, client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    workflow_id = await create_workflow(client, _polling_loop(http_server.url("/slow"), 3))
    execution = await wait_final(client, await run(client, workflow_id), timeout=60)
    assert execution["status"] == "failed", execution
    error = node(execution, "poll")["error"]
    assert error["type"] == "LoopLimitError"
    assert "loop node 'poll' reached max_iterations (3)" in error["message"]
    assert http_server.calls["/slow"] == 3


@pytest.fixture
async def services() -> Any:
    async with httpx.AsyncClient() as http:
        yield Services(
            ai=FakeAi(),
            tools=FakeTools(),
            workflows=FakeWorkflows(),
            http=http,
            settings=NodeSettings(http_allow_hosts=["127.0.0.1"], loop_max_iterations=50),
        )


def _request(
    url: str, checkpoint: dict[str, Any] | None, reported: list[dict[str, Any]]
) -> NodeRequest:
    return NodeRequest(
        execution_id="ex1",
        node_id="poll",
        node_type="loop",
        attempt=2,
        idempotency_key="ex1/poll/2",
        params={
            "max_iterations": 6,
            "node": {"type": "http_request", "params": {"url": url + "?i={{ loop.index }}"}},
            "while": "{{ loop.index < 5 }}",
        },
        context={"inputs": {}, "system": {}},
        progress=reported.append,
        checkpoint=checkpoint,
    )


async def test_checkpoints_after_each_iteration_and_resume_from_one(
    services: Services, http_server: ScriptedServer
) -> None:
    loop = default_registry().get("loop")
    url = http_server.url("/step")
    first: list[dict[str, Any]] = []
    result = await loop.execute(_request(url, None, first), services)
    assert result.output["iterations"] == 6
    assert [update["iteration"] for update in first] == [0, 1, 2, 3, 4, 5]
    assert {update["event"] for update in first} == {"node.iteration"}
    third = first[2]["checkpoint"]
    assert [record["index"] for record in third["iterations"]] == [0, 1, 2]
    assert third["index"] == 3 and len(third["outputs"]) == 3

    # A new attempt handed the checkpoint of iteration 2 runs 3, 4 and 5 only.
    http_server.received.clear()
    resumed: list[dict[str, Any]] = []
    again = await loop.execute(_request(url, third, resumed), services)
    assert [r.query for r in http_server.received] == ["i=3", "i=4", "i=5"]
    assert again.output["iterations"] == 6
    assert len(again.output["outputs"]) == 6
    assert [update["iteration"] for update in resumed] == [3, 4, 5]
    # The resumed attempt's records go on from the checkpoint's.
    last = resumed[-1]["checkpoint"]["iterations"]
    assert [record["index"] for record in last] == [0, 1, 2, 3, 4, 5]


async def test_max_iterations_is_capped_by_the_setting(
    services: Services, http_server: ScriptedServer
) -> None:
    loop = default_registry().get("loop")
    request = _request(http_server.url("/x"), None, [])
    request.params["max_iterations"] = 51
    with pytest.raises(NodeError) as caught:
        await loop.execute(request, services)
    assert caught.value.type == "ValidationError"
    assert "HEDDLE_LOOP_MAX_ITERATIONS" in caught.value.message
