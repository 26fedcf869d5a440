"""Tool approval through the HTTP API (issue #15) on the embedded stack with the offline echo
model: a tool marked requires_approval makes the agent wait (`waiting`, the node.waiting event
carries the tool name and arguments) until POST /executions/{id}/input approves it, edits its
arguments, or rejects it (the rejection goes to the model as the tool's answer). The model's
completed call is not made again when the run resumes: its reply comes from the journal."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.helpers import (
    create_workflow,
    events,
    node,
    run,
    wait_final,
    wait_status,
)

PROMPT = '[[tool:calculator {"expression": "1+2"}]]'


def definition(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "nodes": [
            {
                "id": "agent",
                "type": "agent",
                "params": {
                    "model": "echo",
                    "prompt": PROMPT,
                    "tools": [{"name": "calculator", "requires_approval": True}],
                },
            }
        ],
    }


async def _waiting(client: httpx.AsyncClient, workflow_id: str) -> str:
    execution_id = await run(client, workflow_id)
    execution = await wait_status(client, execution_id, "waiting", node_id="agent", timeout=30)
    waiting = node(execution, "agent")["waiting"]
    assert waiting["approval"]["tool"] == "calculator"
    assert waiting["approval"]["arguments"] == {"expression": "1+2"}
    return execution_id


async def _decide(client: httpx.AsyncClient, execution_id: str, data: Any) -> httpx.Response:
    return await client.post(
        f"/api/v1/executions/{execution_id}/input", json={"node_id": "agent", "data": data}
    )


async def test_a_tool_call_waits_for_approve_edit_or_reject(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, definition("approval"))
    answers: dict[str, str] = {}
    for action, data in (
        ("approve", {"action": "approve"}),
        ("edit", {"action": "edit", "arguments": {"expression": "20+22"}}),
        ("reject", {"action": "reject", "message": "not today"}),
    ):
        execution_id = await _waiting(client, workflow_id)
        if action == "approve":
            # Bad decisions are refused, naming the problem, and change nothing.
            refused = await _decide(client, execution_id, {"action": "maybe"})
            assert refused.status_code in (400, 422), refused.text
            assert "action" in refused.text
            refused = await _decide(client, execution_id, {"action": "edit"})
            assert refused.status_code in (400, 409, 422), refused.text
            assert "arguments" in refused.text
        response = await _decide(client, execution_id, data)
        assert response.status_code == 200, response.text
        execution = await wait_final(client, execution_id, timeout=30)
        assert execution["status"] == "succeeded", execution
        agent = node(execution, "agent")
        answers[action] = agent["output"]["text"]
        result = next(s for s in agent["output"]["steps"] if s["type"] == "tool_result")
        assert result["approval"] == action
        stream = await events(client, execution_id)
        waited = [e["data"] for e in stream if e["type"] == "node.waiting"]
        assert [w["approval"]["tool"] for w in waited] == ["calculator"]
        assert waited[0]["approval"]["arguments"] == {"expression": "1+2"}
        model_calls = [
            e for e in stream if e["type"] == "agent.step" and e["data"]["type"] == "model_call"
        ]
        # The first call's reply came from the journal on resume: two calls in all.
        assert len(model_calls) == 2, [e["data"] for e in model_calls]
    assert "returned" in answers["approve"] and "3" in answers["approve"]
    assert "42" in answers["edit"]
    assert "rejected" in answers["reject"] and "not today" in answers["reject"]
    assert len(set(answers.values())) == 3  # the three answers differ by the decision
