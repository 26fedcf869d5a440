"""Issue 5 acceptance: SSE resume with Last-Event-ID (every event exactly once), and 50
concurrent executions over two workflow replicas (all complete, none runs twice)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import (
    E2E,
    check_history,
    check_nodes_succeeded_once,
    create_workflow,
    execute,
    layered_delays,
    read_sse,
    wait_final,
)

pytestmark = pytest.mark.e2e


async def test_sse_resume_with_last_event_id(topology: E2E) -> None:
    # 6 layers x 6 delays of 0.05-0.2 s, 3 at once: about 2 s of events to interrupt.
    definition = layered_delays("sse-resume", 6, 6, seconds=0.1, max_concurrency=3)
    node_ids = [node["id"] for node in definition["nodes"]]
    async with topology.client() as client:
        workflow_id = await create_workflow(client, definition)
        execution_id = await execute(client, workflow_id)
        # Read live from the start; hang up mid-run.
        first = await read_sse(client, execution_id, limit=15, timeout=30)
        status = (await client.get(f"/api/v1/executions/{execution_id}")).json()["status"]
        assert status == "running", "the execution ended before the client hung up"
        await asyncio.sleep(0.5)  # events keep coming while nobody listens
        resumed = await read_sse(client, execution_id, last_event_id=first[-1]["seq"], timeout=30)
        execution = await wait_final(client, execution_id, timeout=30)
        full = await read_sse(client, execution_id, timeout=30)
        # ?after= is the same resume point for clients that cannot set headers.
        after = await read_sse(client, execution_id, after=first[-1]["seq"], timeout=30)

    assert execution["status"] == "succeeded"
    check_history(full, node_ids)
    assert len(full) == execution["last_seq"]
    assert len(first) == 15
    union = first + resumed
    seqs = [event["seq"] for event in union]
    assert seqs == list(range(1, len(full) + 1)), f"duplicates or gaps across the resume: {seqs}"
    assert union == full
    assert after == resumed


async def test_fifty_concurrent_executions_two_replicas(topology: E2E) -> None:
    workflow_address = topology.topology.spec("gateway").env["HEDDLE_WORKFLOW_ADDRESS"]
    for name in ("workflow-1", "workflow-2"):
        port = topology.topology.spec(name).grpc_port
        assert f":{port}" in workflow_address, (name, workflow_address)

    definition: dict[str, Any] = {
        "name": "fan-out-in",
        "inputs": {"n": {"type": "integer", "required": True}},
        "nodes": [
            {"id": "start", "type": "input"},
            *(
                {"id": f"wait{i}", "type": "delay", "params": {"seconds": 0.3 + 0.1 * i}}
                for i in range(3)
            ),
            {
                "id": "done",
                "type": "output",
                "params": {"value": {"n": "{{ inputs.n }}", "waited": "{{ wait2.waited_s }}"}},
            },
        ],
        "edges": [
            *({"source": "start", "target": f"wait{i}"} for i in range(3)),
            *({"source": f"wait{i}", "target": "done"} for i in range(3)),
        ],
    }
    node_ids = ["start", "wait0", "wait1", "wait2", "done"]
    prefix = uuid.uuid4().hex[:8]
    keys = [f"e2e-{prefix}-{i}" for i in range(50)]

    # Who owns what, while it runs (a finished execution releases its owner).
    owners: dict[str, set[str]] = {}

    async def watch_owners() -> None:
        connection = await topology.db()
        try:
            while True:
                for row in await connection.fetch(
                    "SELECT id, owner FROM executions WHERE owner IS NOT NULL"
                ):
                    owners.setdefault(row["id"], set()).add(row["owner"])
                await asyncio.sleep(0.05)
        finally:
            await connection.close()

    async with topology.client(timeout=60) as client, topology.client(timeout=60) as streams:
        workflow_id = await create_workflow(client, definition)
        watcher = asyncio.create_task(watch_owners())
        live: asyncio.Future[list[list[dict[str, Any]]]] | None = None
        try:
            # Each key submitted twice at once: the second request must get the first's run.
            submissions = [(i, key) for i, key in enumerate(keys)] * 2
            ids = await asyncio.gather(
                *(
                    execute(client, workflow_id, {"n": i}, idempotency_key=key)
                    for i, key in submissions
                )
            )
            by_key: dict[str, set[str]] = {}
            for (_, key), execution_id in zip(submissions, ids, strict=True):
                by_key.setdefault(key, set()).add(execution_id)
            assert all(len(found) == 1 for found in by_key.values()), by_key
            execution_ids = [next(iter(by_key[key])) for key in keys]
            assert len(set(execution_ids)) == 50
            # A live SSE client per execution, from its start until the server ends the stream.
            live = asyncio.gather(
                *(read_sse(streams, execution_id, timeout=90) for execution_id in execution_ids)
            )
            executions = await asyncio.gather(
                *(wait_final(client, execution_id, timeout=90) for execution_id in execution_ids)
            )
            followed = await live
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if live is not None and not live.done():
                live.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await live

        histories = await asyncio.gather(
            *(read_sse(client, execution_id, timeout=30) for execution_id in execution_ids)
        )

    for i, execution in enumerate(executions):
        check_nodes_succeeded_once(execution, node_ids)
        assert execution["outputs"] == {"n": i, "waited": 0.5}
        # None ran twice: one attempt per node, nothing re-dispatched by a takeover.
        assert all(node["attempts"] == 1 for node in execution["nodes"]), execution["nodes"]
    for history, seen_live in zip(histories, followed, strict=True):
        check_history(history, node_ids)
        # A stream ends only after the execution's final event (none ended early).
        assert seen_live == history, (
            f"live stream of {history[0]['execution_id']} got {len(seen_live)} of "
            f"{len(history)} events; last: {seen_live[-1]['type'] if seen_live else None}"
        )
        assert sum(1 for e in history if e["type"] == "execution.started") == 1
        assert sum(1 for e in history if e["type"] == "node.started") == len(node_ids)

    rows = await topology.fetch(
        "SELECT idempotency_key, count(*) AS n FROM executions "
        "WHERE idempotency_key LIKE $1 GROUP BY idempotency_key",
        f"e2e-{prefix}-%",
    )
    assert len(rows) == 50 and all(row["n"] == 1 for row in rows)

    # Both replicas ran some (the gateway balances over both), each execution exactly one.
    seen = {execution_id: owners.get(execution_id, set()) for execution_id in execution_ids}
    assert all(len(found) <= 1 for found in seen.values()), seen
    per_replica: dict[str, int] = {}
    for found in seen.values():
        for owner in found:
            per_replica[owner] = per_replica.get(owner, 0) + 1
    assert set(per_replica) == {"workflow-1", "workflow-2"}, per_replica
    topology.assert_no_crash()
