"""Fork (time travel, issue #15): re-run an execution from a completed node, its output edited
or not, as a new execution linked to the old one; upstream is reused without an attempt."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack
from libs.common import jsonutil
from tests.files.test_claim_check import node, run
from tests.security.support import bearer, new_key

pytestmark = pytest.mark.asyncio(loop_scope="package")

CHAIN = {
    "inputs": {"x": {"type": "any"}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "first", "type": "transform", "params": {"expression": "{'n': inputs.x * 2}"}},
        {"id": "second", "type": "transform", "params": {"expression": "first.value.n + 1"}},
    ],
    "edges": [
        {"source": "start", "target": "first"},
        {"source": "first", "target": "second"},
    ],
}


async def finished(http: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    execution: dict[str, Any] = {}
    while time.monotonic() < deadline:
        execution = (await http.get(f"/api/v1/executions/{execution_id}")).json()
        if execution["status"] in ("succeeded", "failed", "cancelled"):
            break
        await asyncio.sleep(0.1)
    assert execution.get("status") in ("succeeded", "failed", "cancelled"), execution
    return execution


async def test_fork_with_an_edited_output_and_without(
    running: tuple[Stack, Path], http: httpx.AsyncClient
) -> None:
    stack, _ = running
    created = await http.post("/api/v1/workflows", json={**CHAIN, "name": f"fork-{uuid.uuid4()}"})
    workflow_id = created.json()["id"]
    old = await run(http, workflow_id, {"x": 1})
    assert old["status"] == "succeeded" and node(old, "second")["output"] == {"value": 3}, old

    # Edited output: `first` takes it without an attempt, `second` runs again from it.
    forked = await http.post(
        f"/api/v1/executions/{old['id']}/fork",
        json={"from_node": "first", "output": {"value": {"n": 10}}},
    )
    assert forked.status_code == 201, forked.text
    started = forked.json()
    assert started["forked_from"] == {"execution_id": old["id"], "node_id": "first"}
    assert started["reused"] == ["first", "start"]
    new = await finished(http, started["execution_id"])
    assert new["status"] == "succeeded", new
    assert new["forked_from"] == {"execution_id": old["id"], "node_id": "first"}
    assert new["workflow_version"] == old["workflow_version"]
    assert node(new, "first")["output"] == {"value": {"n": 10}}
    assert node(new, "first")["status"] == "succeeded"
    assert node(new, "first")["attempts"] == 1 and node(new, "first")["attempt_history"] == []
    assert node(new, "start")["attempt_history"] == []  # reused: no attempt dispatched
    assert node(new, "second")["output"] == {"value": 11}
    assert len(node(new, "second")["attempt_history"]) == 1  # ran again
    assert old["forked_from"] is None
    events = await http.get(f"/api/v1/executions/{new['id']}/events", params={"format": "json"})
    assert events.status_code == 200, events.text
    # Only `second` ran: no event of the reused nodes (none dispatched).
    nodes_seen = [
        (event["type"], event["node_id"])
        for event in (
            jsonutil.loads(line.removeprefix("data: "))
            for line in events.text.splitlines()
            if line.startswith("data: ")
        )
        if event["node_id"]
    ]
    assert nodes_seen == [("node.started", "second"), ("node.completed", "second")], nodes_seen

    # No output: `first` runs again (with the old inputs), upstream still reused.
    again = await http.post(f"/api/v1/executions/{old['id']}/fork", json={"from_node": "first"})
    assert again.status_code == 201, again.text
    assert again.json()["reused"] == ["start"]
    rerun = await finished(http, again.json()["execution_id"])
    assert len(node(rerun, "first")["attempt_history"]) == 1
    assert node(rerun, "second")["output"] == {"value": 3}

    # The old execution lists its two forks, newest first.
    forks = await http.get(f"/api/v1/executions/{old['id']}/forks")
    assert forks.status_code == 200, forks.text
    listed = forks.json()
    assert listed["total"] == 2, listed
    assert [item["id"] for item in listed["items"]] == [rerun["id"], new["id"]]
    assert (await http.get(f"/api/v1/executions/{new['id']}/forks")).json()["total"] == 0

    # Bad input.
    unknown = await http.post(f"/api/v1/executions/{uuid.uuid4()}/fork", json={"from_node": "a"})
    assert unknown.status_code == 404, unknown.text
    missing = await http.post(f"/api/v1/executions/{old['id']}/fork", json={"from_node": "nope"})
    assert missing.status_code == 422 and "'nope'" in missing.json()["error"]["message"]
    broken = await http.post(
        f"/api/v1/executions/{old['id']}/fork", json={"from_node": "first", "output": {"n": 1}}
    )
    assert broken.status_code == 422, broken.text
    problems = broken.json()["error"]["details"]
    assert {"field": "output", "message": "'value' is a required property"} in problems, problems
    # Nothing half-written: the refused fork started no execution.
    assert (await http.get(f"/api/v1/executions/{old['id']}/forks")).json()["total"] == 2
    failed = await run(http, workflow_id, {"x": "oops"})  # 'oopsoops' + 1 fails `second`
    assert node(failed, "second")["status"] == "failed", failed
    early = await http.post(f"/api/v1/executions/{failed['id']}/fork", json={"from_node": "second"})
    assert early.status_code == 409 and "'second'" in early.json()["error"]["message"], early.text
    token, _ = await new_key(stack, tenant="forks-elsewhere")
    hidden = await http.post(
        f"/api/v1/executions/{old['id']}/fork", json={"from_node": "first"}, headers=bearer(token)
    )
    assert hidden.status_code == 404, hidden.text


AGENT = {
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
        },
        {"id": "done", "type": "output", "params": {"value": "{{ agent.text }}"}},
    ],
    "edges": [{"source": "agent", "target": "done"}],
}


def agent_steps(events_text: str) -> list[tuple[str, str]]:
    """(type, step) of every agent.step event of a finished execution's stream."""
    frames = (
        jsonutil.loads(line.removeprefix("data: "))
        for line in events_text.splitlines()
        if line.startswith("data: ")
    )
    return [
        (event["data"]["type"], str(event["data"].get("step")))
        for event in frames
        if event["type"] == "agent.step"
    ]


async def test_fork_an_agent_with_a_step_of_its_journal_edited(
    running: tuple[Stack, Path], http: httpx.AsyncClient
) -> None:
    created = await http.post("/api/v1/workflows", json={**AGENT, "name": f"fork-{uuid.uuid4()}"})
    workflow_id = created.json()["id"]
    old = await run(http, workflow_id, {})
    assert old["status"] == "succeeded", old
    journal = node(old, "agent")["checkpoint"]["journal"]
    assert [e["type"] for e in journal] == [
        "model_call",
        "tool_call",
        "tool_result",
        "model_call",
        "final",
    ], journal
    assert journal[2]["result"] == {"result": 3}

    # The tool's result edited (journal position 2): the first model call and the tool call
    # are replayed (no event, nothing paid or called), the model answers from the edit live.
    forked = await http.post(
        f"/api/v1/executions/{old['id']}/fork",
        json={"from_node": "agent", "step": 2, "entry": {"result": {"result": 99}}},
    )
    assert forked.status_code == 201, forked.text
    assert forked.json()["reused"] == []  # the agent runs again, from its edited journal
    new = await finished(http, forked.json()["execution_id"])
    assert new["status"] == "succeeded", new
    assert new["forked_from"] == {"execution_id": old["id"], "node_id": "agent"}
    assert "99" in node(new, "agent")["output"]["text"], node(new, "agent")
    assert "99" in node(new, "done")["output"]
    replayed = node(new, "agent")["checkpoint"]["journal"]
    assert replayed[:2] == journal[:2]
    assert replayed[2]["result"] == {"result": 99} and replayed[2]["edited"] is True
    events = await http.get(f"/api/v1/executions/{new['id']}/events", params={"format": "json"})
    assert agent_steps(events.text) == [("model_call", "1"), ("final", "end")]

    # A tool call's arguments edited (position 1): the tool is called with them.
    rerun = await http.post(
        f"/api/v1/executions/{old['id']}/fork",
        json={"from_node": "agent", "step": 1, "entry": {"arguments": {"expression": "6*7"}}},
    )
    assert rerun.status_code == 201, rerun.text
    called = await finished(http, rerun.json()["execution_id"])
    result = node(called, "agent")["checkpoint"]["journal"][2]
    assert result["type"] == "tool_result" and result["result"] == {"result": 42}, result
    events = await http.get(f"/api/v1/executions/{called['id']}/events", params={"format": "json"})
    assert agent_steps(events.text) == [
        ("tool_result", "0"),
        ("model_call", "1"),
        ("final", "end"),
    ]

    # Bad edits: located 422s, and no execution started.
    for body, field in (
        ({"from_node": "agent", "step": 9, "entry": {"result": 1}}, "step"),
        ({"from_node": "agent", "step": 2, "entry": {"name": "other"}}, "entry.name"),
        ({"from_node": "agent", "step": 0, "entry": {"reply": {"tool_calls": []}}}, "entry.reply"),
        ({"from_node": "agent", "step": 1, "entry": {"arguments": "6*7"}}, "entry.arguments"),
        ({"from_node": "agent", "step": 2}, "entry"),
        ({"from_node": "agent", "step": 2, "entry": {"result": 1}, "output": {}}, "output"),
        ({"from_node": "done", "step": 0, "entry": {"text": "x"}}, "step"),
    ):
        refused = await http.post(f"/api/v1/executions/{old['id']}/fork", json=body)
        assert refused.status_code == 422, (body, refused.text)
        fields = [p["field"] for p in refused.json()["error"]["details"]]
        assert field in fields, (body, refused.json())
    assert (await http.get(f"/api/v1/executions/{old['id']}/forks")).json()["total"] == 2
