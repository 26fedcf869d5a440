"""An agent run that does not journal its steps (HEDDLE_AGENT_JOURNAL=false, the durable-step
bench's baseline) still streams them: every model call, tool call, tool result and the final
answer is an agent.step event (issue #15: "each step is an event"), while nothing of the
journal is stored (the node's checkpoint stays empty: a lost attempt starts the run again)."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.helpers import create_workflow, events, node, run, wait_final

AGENT = {
    "name": "unjournaled",
    "nodes": [
        {
            "id": "agent",
            "type": "agent",
            "params": {
                "model": "echo",
                # The echo model calls the tool on this directive, then answers with its result.
                "prompt": '[[tool:calculator {"expression": "1+2"}]]',
                "tools": ["calculator"],
            },
        }
    ],
}


@pytest.mark.parametrize("stack", [{"agent_journal": False}], indirect=True)
async def test_an_unjournaled_run_streams_its_steps_and_stores_no_journal(
    client: httpx.AsyncClient,
) -> None:
    execution_id = await run(client, await create_workflow(client, AGENT))
    execution = await wait_final(client, execution_id, timeout=30)
    assert execution["status"] == "succeeded", execution
    steps = [
        (event["data"]["type"], str(event["data"].get("step")), event["data"]["attempt"])
        for event in await events(client, execution_id)
        if event["type"] == "agent.step"
    ]
    assert steps == [
        ("model_call", "0", 1),
        ("tool_call", "0", 1),
        ("tool_result", "0", 1),
        ("model_call", "1", 1),
        ("final", "end", 1),
    ]
    assert not (node(execution, "agent").get("checkpoint") or {}).get("journal")
