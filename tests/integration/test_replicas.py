"""Two node replicas behind one workflow service: load is spread over both, and a replica
that dies mid-call costs a retry on the other one, not the execution."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack, start_stack
from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, node, run, wait_final


@pytest.fixture
async def stack(sqlite_url: str) -> AsyncIterator[Stack]:
    """The embedded stack with two node replicas ("node" and "node-2"); `client` uses it."""
    running = await start_stack(
        {"database_url": sqlite_url, "http_allow_hosts": ["127.0.0.1"]},
        ephemeral_ports=True,
        node_replicas=2,
    )
    try:
        yield running
    finally:
        await running.stop()


def fan_out(width: int, seconds: float) -> dict[str, Any]:
    branches = [
        {"id": f"d{i}", "type": "delay", "params": {"seconds": seconds}} for i in range(width)
    ]
    return {
        "name": f"fan-out-{width}",
        "nodes": [
            {"id": "start", "type": "transform", "params": {"expression": "1"}},
            *branches,
            {"id": "join", "type": "merge", "params": {"mode": "all"}},
        ],
        "edges": [
            *({"source": "start", "target": b["id"]} for b in branches),
            *({"source": b["id"], "target": "join"} for b in branches),
        ],
    }


def replica_addresses(stack: Stack) -> list[str]:
    return [f"127.0.0.1:{stack.ports['node']}", f"127.0.0.1:{stack.ports['node-2']}"]


async def test_a_wide_fan_out_uses_both_replicas(stack: Stack, client: httpx.AsyncClient) -> None:
    dispatcher = stack.services["workflow"].dispatcher
    assert sorted(dispatcher.stats()) == sorted(replica_addresses(stack))
    before = dispatcher.stats()
    workflow_id = await create_workflow(client, fan_out(40, 0.05))
    execution = await wait_final(client, await run(client, workflow_id))
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "join")["output"] == {"items": [{"waited_s": 0.05}] * 40}
    assert all(n["attempts"] == 1 for n in execution["nodes"])
    after = dispatcher.stats()
    calls = {address: after[address] - before.get(address, 0) for address in after}
    assert all(count > 0 for count in calls.values()), calls


async def test_a_replica_dying_mid_call_costs_a_retry_not_the_execution(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    doomed = stack.services["node-2"]
    workflow_id = await create_workflow(client, fan_out(30, 0.3))
    execution_id = await run(client, workflow_id)
    # Both replicas are running delays of this wave: kill the second one under them.
    await assert_eventually(
        lambda: doomed.servicer.in_flight > 0 and stack.services["node"].servicer.in_flight > 0,
        message="the fan-out never reached both replicas",
    )
    await doomed.grpc.stop(grace=0)

    execution = await wait_final(client, execution_id, timeout=30)
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "join")["output"] == {"items": [{"waited_s": 0.3}] * 30}
    moved = [n for n in execution["nodes"] if n["attempts"] > 1]
    assert moved, "no attempt was lost with the replica"
    for entry in moved:
        history = entry["attempt_history"]
        assert entry["status"] == "succeeded"
        assert [a["status"] for a in history] == ["failed"] * (len(history) - 1) + ["succeeded"]
        assert {a["error"]["type"] for a in history[:-1]} == {"NodeUnavailable"}
    # Every branch that ran on the dead replica was retried on the live one.
    assert all(n["status"] == "succeeded" for n in execution["nodes"])
