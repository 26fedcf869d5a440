"""Issue 5 acceptance: a workflow replica or a node replica dies (SIGKILL) mid-run, and the
execution still completes, with every node exactly once in the record and the stream.

The tests share the module's topology: what a test killed is started again after it (one
replica, not a whole topology)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (
    E2E,
    LEASE_TTL_S,
    check_followed,
    check_history,
    check_nodes_succeeded_once,
    create_workflow,
    elapsed,
    execute,
    follow_sse,
    layered_delays,
    read_sse,
    run_sync,
    wait_final,
    wait_progress,
)
from tests.helpers import assert_eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def revived(topology: E2E) -> Iterator[E2E]:
    """The module's topology, whole again after the test: a killed process restarts."""
    yield topology
    dead = [spec.name for spec in topology.topology.specs]
    dead = [name for name in dead if not topology.topology.is_running(name)]
    for name in dead:
        topology.topology.start(name)
    if dead:
        run_sync(topology.topology.wait_healthy(timeout_s=90, names=dead))


async def test_kill_workflow_owner_mid_run(revived: E2E) -> None:
    """SIGKILL the replica owning a 200-node execution; the other one takes it over."""
    e2e = revived
    # 10 layers x 20 delays of 0.05-0.2 s, at most 8 at once: about 3-4 s of work.
    definition = layered_delays("two-hundred", 10, 20, seconds=0.1, max_concurrency=8)
    node_ids = [node["id"] for node in definition["nodes"]]
    assert len(node_ids) == 200
    async with e2e.client() as client:
        workflow_id = await create_workflow(client, definition)
        started = time.monotonic()
        execution_id = await execute(client, workflow_id)
        follower = asyncio.create_task(follow_sse(client, execution_id))
        await wait_progress(e2e, execution_id, completed=40)

        rows = await e2e.fetch("SELECT owner, status FROM executions WHERE id = $1", execution_id)
        owner, status = rows[0]["owner"], rows[0]["status"]
        assert status == "running", f"already {status} after {elapsed(started)}: too fast"
        assert owner in ("workflow-1", "workflow-2"), owner
        survivor = "workflow-2" if owner == "workflow-1" else "workflow-1"
        done_before = await e2e.fetch(
            "SELECT count(*) AS n FROM node_runs WHERE execution_id = $1 AND status = 'succeeded'",
            execution_id,
        )
        e2e.topology.kill(owner)
        killed_at = time.monotonic()

        # The survivor claims it within lease TTL + a recovery scan or two.
        async def taken_over() -> bool:
            found = await e2e.fetch("SELECT owner FROM executions WHERE id = $1", execution_id)
            return found[0]["owner"] in (survivor, None)

        await assert_eventually(taken_over, timeout=15, interval=0.1, message="no takeover")
        takeover_s = time.monotonic() - killed_at

        execution = await wait_final(client, execution_id, timeout=60)
        events = await read_sse(client, execution_id, timeout=30)
        followed = await asyncio.wait_for(follower, 60)

    assert 0 < done_before[0]["n"] < 200, "the kill did not land mid-run"
    assert takeover_s < 10, f"takeover took {takeover_s:.1f}s"
    check_nodes_succeeded_once(execution, node_ids)
    check_history(events, node_ids)
    assert len(events) == execution["last_seq"]
    check_followed(followed, events)
    # What was in flight at the kill was re-dispatched as a new attempt ("lost" before it).
    lost = [
        node["node_id"]
        for node in execution["nodes"]
        if any(a["status"] == "lost" for a in node["attempt_history"])
    ]
    assert lost, "no node was in flight when the owner died?"
    for node in execution["nodes"]:
        if node["node_id"] in lost:
            assert node["attempt_history"][-1]["status"] == "succeeded"
    finished = await e2e.fetch("SELECT owner, status FROM executions WHERE id = $1", execution_id)
    assert finished[0]["status"] == "succeeded" and finished[0]["owner"] is None
    survivor_log = e2e.topology.log_path(survivor).read_text()
    assert "took over execution" in survivor_log and execution_id in survivor_log
    assert e2e.topology.is_running(survivor)
    e2e.assert_no_crash()
    assert not e2e.internal_errors(followed), "a replica crash must answer 503, not 500"


async def test_kill_node_replica_mid_run(revived: E2E) -> None:
    """SIGKILL a node replica; what it was running is retried on the others."""
    e2e = revived
    # 4 layers x 24 delays of 0.2-0.8 s, 24 at once: every replica has attempts in flight.
    definition = layered_delays("node-kill", 4, 24, seconds=0.4, max_concurrency=24)
    node_ids = [node["id"] for node in definition["nodes"]]
    async with e2e.client() as client:
        workflow_id = await create_workflow(client, definition)
        execution_id = await execute(client, workflow_id)
        follower = asyncio.create_task(follow_sse(client, execution_id))
        await wait_progress(e2e, execution_id, completed=12)
        e2e.topology.kill("node-2")
        execution = await wait_final(client, execution_id, timeout=60)
        events = await read_sse(client, execution_id, timeout=30)
        followed = await asyncio.wait_for(follower, 60)

    check_nodes_succeeded_once(execution, node_ids)
    check_history(events, node_ids)
    check_followed(followed, events)
    retried = []
    for node in execution["nodes"]:
        history = node["attempt_history"]
        failures = [a for a in history if a["status"] == "failed"]
        if failures:
            # Only the dead replica's fault, and each followed by a success elsewhere.
            assert all(a["error"]["type"] == "NodeUnavailable" for a in failures), history
            assert history[-1]["status"] == "succeeded", history
            assert history[-1]["attempt"] > failures[-1]["attempt"], history
            retried.append(node["node_id"])
    assert retried, "no node was retried after its replica died"
    retrying = [e for e in events if e["type"] == "node.retrying"]
    assert {e["node_id"] for e in retrying} == set(retried)
    assert not e2e.topology.is_running("node-2")
    assert all(e2e.topology.is_running(name) for name in ("node-1", "node-3"))
    e2e.assert_no_crash()
    assert not e2e.internal_errors(followed)


async def test_a_quiet_execution_keeps_its_owner_past_the_lease_ttl(revived: E2E) -> None:
    """Writes no longer extend the lease each step: an execution that writes nothing for
    longer than the lease TTL (one long node) stays with its living owner, renewed by the
    lease loop, and is never taken over or re-dispatched."""
    e2e = revived
    definition = {
        "name": "quiet",
        "nodes": [
            {"id": "wait", "type": "delay", "params": {"seconds": 3 * LEASE_TTL_S}},
            {"id": "after", "type": "noop"},
        ],
        "edges": [{"source": "wait", "target": "after"}],
    }
    async with e2e.client() as client:
        workflow_id = await create_workflow(client, definition)
        execution_id = await execute(client, workflow_id)
        await assert_eventually(
            lambda: _owner(e2e, execution_id), timeout=10, message="never owned"
        )
        owner = await _owner(e2e, execution_id)
        execution = await wait_final(client, execution_id, timeout=30)
    assert execution["status"] == "succeeded", execution["error"]
    assert all(node["attempts"] == 1 for node in execution["nodes"]), execution["nodes"]
    for name in ("workflow-1", "workflow-2"):
        if name != owner:
            assert execution_id not in e2e.topology.log_path(name).read_text()
    e2e.assert_no_crash()


async def _owner(e2e: E2E, execution_id: str) -> str | None:
    rows = await e2e.fetch("SELECT owner FROM executions WHERE id = $1", execution_id)
    return rows[0]["owner"] if rows else None
