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
