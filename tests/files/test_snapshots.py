"""Snapshots: an execution's state and outputs stored as an artifact, and a re-run from it
that reuses the nodes that completed (their outputs as they were) and runs the others."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from libs.cli.stack import Stack
from libs.common import jsonutil
from libs.common.artifacts import is_ref
from tests.files.test_claim_check import node, run
from tests.security.support import bearer, new_key

pytestmark = pytest.mark.asyncio(loop_scope="package")

TWO_STEPS = {
    "inputs": {"x": {"type": "any"}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "first", "type": "transform", "params": {"expression": "{'seen': inputs.x}"}},
        {"id": "second", "type": "transform", "params": {"expression": "inputs.x + 1"}},
    ],
    "edges": [
        {"source": "start", "target": "first"},
        {"source": "first", "target": "second"},
    ],
}


async def test_snapshot_and_rerun_from_it(
    running: tuple[Stack, Path], http: httpx.AsyncClient
) -> None:
    stack, artifacts = running
    created = await http.post(
        "/api/v1/workflows", json={**TWO_STEPS, "name": f"snap-{uuid.uuid4().hex}"}
    )
    workflow_id = created.json()["id"]
    failed = await run(http, workflow_id, {"x": "oops"})  # 'oops' + 1 fails the second node
    assert failed["status"] == "failed"
    assert node(failed, "first")["status"] == "succeeded"
    taken = await http.post(f"/api/v1/executions/{failed['id']}/snapshot")
    assert taken.status_code == 201, taken.text
    snapshot = taken.json()
    ref = snapshot["ref"]
    assert is_ref(ref) and ref["$ref"].startswith("artifact://snapshots/")
    stored = jsonutil.loads((artifacts / ref["$ref"].removeprefix("artifact://")).read_bytes())
    assert stored["execution_id"] == failed["id"] and stored["inputs"] == {"x": "oops"}
    assert stored["nodes"]["first"] == {
        "status": "succeeded",
        "output": {"value": {"seen": "oops"}},
        "attempt": 1,
    }
    # Re-run from it with a fixed input: `first` is reused as it was, `second` runs.
    rerun = await http.post(
        f"/api/v1/workflows/{workflow_id}/run",
        params={"wait": 60},
        json={"inputs": {"x": 1}, "from_snapshot": ref["$ref"]},
    )
    assert rerun.status_code == 200, rerun.text
    again = (await http.get(f"/api/v1/executions/{rerun.json()['id']}")).json()
    assert again["status"] == "succeeded", again
    assert node(again, "first")["output"] == {"value": {"seen": "oops"}}  # reused
    assert node(again, "second")["output"] == {"value": 2}  # ran
    # Bad input: another tenant's snapshot is not found, another workflow's is refused.
    token, _ = await new_key(stack, tenant="snapshots-elsewhere")
    hidden = await http.post(
        f"/api/v1/workflows/{workflow_id}/execute",
        json={"from_snapshot": ref["$ref"]},
        headers=bearer(token),
    )
    assert hidden.status_code == 404, hidden.text
    other = await http.post("/api/v1/workflows", json={**TWO_STEPS, "name": "other-snap"})
    wrong = await http.post(
        f"/api/v1/workflows/{other.json()['id']}/execute", json={"from_snapshot": ref["$ref"]}
    )
    assert wrong.status_code == 422 and "not" in wrong.json()["error"]["message"], wrong.text
    gone = await http.post(
        f"/api/v1/workflows/{workflow_id}/execute",
        json={"from_snapshot": "artifact://snapshots/default/nothing-here"},
    )
    assert gone.status_code == 404, gone.text
    assert (await http.post(f"/api/v1/executions/{uuid.uuid4()}/snapshot")).status_code == 404
