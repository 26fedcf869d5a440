"""Input and output nodes' attempts end in the workflow replica, in the turn they started
(services/workflow/runner.py, _run_here), with the node run and events a node replica's
answer gives; a node replica still gets such a node when it has a `when`, or an output
whose value is more than a literal or one `{{ a.b }}` path."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack, start_stack
from tests.integration import helpers


def chain(start: dict[str, Any], value: Any) -> dict[str, Any]:
    return {
        "name": "run-here",
        "inputs": {"x": {"type": "integer", "required": False}},
        "nodes": [
            {"id": "start", "type": "input", **start},
            {"id": "double", "type": "transform", "params": {"expression": "start.x * 2"}},
            {"id": "done", "type": "output", "params": {"value": value}},
        ],
        "edges": [
            {"source": "start", "target": "double"},
            {"source": "double", "target": "done"},
        ],
    }


@pytest.mark.parametrize(
    ("start", "value", "output", "sent"),
    [
        ({}, "{{ double.value }}", 42, 1),  # double only
        ({}, {"n": [1, "two"]}, {"n": [1, "two"]}, 1),  # a literal
        ({}, "{{ double.value + 1 }}", 43, 2),  # an operator: the replica renders it
        ({"when": "true"}, "{{ double.value }}", 42, 2),  # a gated input: the replica's
    ],
)
async def test_input_and_output_nodes_end_in_the_workflow_replica(
    stack: Stack,
    client: httpx.AsyncClient,
    start: dict[str, Any],
    value: Any,
    output: Any,
    sent: int,
) -> None:
    dispatcher = stack.services["workflow"].dispatcher
    workflow_id = await helpers.create_workflow(client, chain(start, value))
    before = sum(dispatcher.stats().values())
    execution = await helpers.wait_final(client, await helpers.run(client, workflow_id, {"x": 21}))
    assert execution["status"] == "succeeded", execution["error"]
    assert sum(dispatcher.stats().values()) - before == sent
    first, last = helpers.node(execution, "start"), helpers.node(execution, "done")
    assert (first["status"], first["output"], first["attempts"]) == ("succeeded", {"x": 21}, 1)
    assert (last["status"], last["output"], last["attempts"]) == ("succeeded", output, 1)
    stream = await helpers.events(client, execution["id"])
    for node_id in ("start", "done"):
        assert helpers.event_types(stream, node_id) == ["node.started", "node.completed"], node_id


async def test_an_execution_of_input_and_output_only_ends_in_its_first_batch(
    database_url: str,
) -> None:
    """Nothing goes to a node replica: the start's insert is also the execution's end (on
    both databases), and run-and-wait and the detail answer it."""
    running = await start_stack({"database_url": database_url}, ephemeral_ports=True)
    headers = {"Authorization": f"Bearer {running.admin_key}"} if running.admin_key else {}
    try:
        async with httpx.AsyncClient(
            base_url=running.gateway_url, timeout=30, headers=headers
        ) as client:
            workflow_id = await helpers.create_workflow(
                client,
                {
                    "name": "inputs-back",
                    "nodes": [
                        {"id": "start", "type": "input"},
                        {"id": "done", "type": "output", "params": {"value": "{{ start.x }}"}},
                    ],
                    "edges": [{"source": "start", "target": "done"}],
                },
            )
            dispatcher = running.services["workflow"].dispatcher
            before = sum(dispatcher.stats().values())
            response = await client.post(
                f"/api/v1/workflows/{workflow_id}/run", json={"inputs": {"x": [7]}}
            )
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "succeeded"
            assert response.json()["outputs"] == {"done": [7]}
            execution = await helpers.wait_final(client, response.json()["id"])
            assert helpers.node(execution, "done")["output"] == [7]
            assert sum(dispatcher.stats().values()) == before
    finally:
        await running.stop()
