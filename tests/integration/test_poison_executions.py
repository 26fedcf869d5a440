"""Issue 12 item 2: an exception in an execution's runner ends in a recorded failure of that
execution, never in a loop of takeovers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack, start_stack
from services.workflow.engine import Engine
from services.workflow.runner import ExecutionRunner
from tests.integration.helpers import (
    create_workflow,
    event_types,
    events,
    node,
    run,
    wait_final,
)


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    """The embedded stack on SQLite and on PostgreSQL; a crashed execution is released at
    once and claimed by the next recovery scan (every 0.2 s)."""
    running = await start_stack(
        {"database_url": database_url, "recovery_interval_s": 0.2}, ephemeral_ports=True
    )
    try:
        yield running
    finally:
        await running.stop()


async def test_a_missing_secret_beside_a_sibling_fails_the_execution(
    client: httpx.AsyncClient,
) -> None:
    """The reproduction of the issue: the template's SecretError failed the execution while
    `_take_ready` still meant to start the sibling, and popped an empty deque; the runner
    crashed and the execution stayed `running`, taken over again and again."""
    workflow_id = await create_workflow(
        client,
        {
            "name": "missing-secret",
            "nodes": [
                {"id": "start", "type": "input"},
                {"id": "t", "type": "template", "params": {"template": "{{ secrets.MISSING }}"}},
                {"id": "sibling", "type": "noop"},
            ],
            "edges": [{"source": "start", "target": "t"}, {"source": "start", "target": "sibling"}],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id), timeout=30)
    assert execution["status"] == "failed", execution
    assert node(execution, "t")["status"] == "failed"
    assert node(execution, "t")["error"]["type"] == "SecretError"
    assert node(execution, "sibling")["status"] == "cancelled"
    assert node(execution, "start")["attempts"] == 1
    stream = await events(client, execution["id"])
    assert event_types(stream)[-1] == "execution.failed"


async def test_a_runner_that_keeps_crashing_fails_its_execution_after_the_limit(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault injected into the runner (applying the outcome of node `boom` raises): each
    run of the execution crashes; it is released and taken over until it has crashed
    HEDDLE_MAX_RUNNER_CRASHES (3) times, then it fails with the last error."""
    original = ExecutionRunner._apply_outcome

    def faulty(self: ExecutionRunner, outcome: Any) -> None:
        if outcome.node_id == "boom":
            raise RuntimeError("injected fault in the runner")
        original(self, outcome)

    monkeypatch.setattr(ExecutionRunner, "_apply_outcome", faulty)
    workflow_id = await create_workflow(
        client,
        {
            "name": "poison",
            "nodes": [
                {"id": "start", "type": "noop"},
                {"id": "boom", "type": "noop"},
                {"id": "end", "type": "noop"},
            ],
            "edges": [{"source": "start", "target": "boom"}, {"source": "boom", "target": "end"}],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id), timeout=60)

    assert execution["status"] == "failed", execution
    error = execution["error"]
    assert error["type"] == "ExecutionCrashed", error
    assert "crashed 3 times" in error["message"], error
    assert "RuntimeError: injected fault in the runner" in error["message"], error
    # Three runs: the first one and two takeovers, each re-dispatching `boom` (lost).
    boom = node(execution, "boom")
    assert boom["status"] == "cancelled", boom
    assert [a["status"] for a in boom["attempt_history"]] == ["lost", "lost"], boom
    assert node(execution, "start")["attempts"] == 1  # finished work is never redone
    assert node(execution, "end")["status"] == "cancelled"
    stream = await events(client, execution["id"])
    types = event_types(stream)
    assert types[-1] == "execution.failed"
    assert stream[-1]["data"]["error"]["message"] == error["message"]
    assert event_types(stream, "boom").count("node.started") == 3
    assert [e["seq"] for e in stream] == list(range(1, len(stream) + 1))


async def test_a_takeover_that_keeps_failing_counts_as_a_crash(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner crashes once (injected), and then every takeover fails before a runner
    starts (injected into resuming): those count too, so the execution fails after the
    limit rather than being claimed and dropped forever."""
    original = ExecutionRunner._apply_outcome

    def faulty(self: ExecutionRunner, outcome: Any) -> None:
        if outcome.node_id == "boom":
            raise RuntimeError("injected fault in the runner")
        original(self, outcome)

    async def cannot_resume(self: Engine, execution_id: str) -> None:
        raise RuntimeError("injected fault in the takeover")

    monkeypatch.setattr(ExecutionRunner, "_apply_outcome", faulty)
    monkeypatch.setattr(Engine, "_resume", cannot_resume)
    workflow_id = await create_workflow(
        client,
        {
            "name": "unresumable",
            "nodes": [{"id": "boom", "type": "noop"}, {"id": "end", "type": "noop"}],
            "edges": [{"source": "boom", "target": "end"}],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id), timeout=60)

    assert execution["status"] == "failed", execution
    error = execution["error"]
    assert error["type"] == "ExecutionCrashed", error
    assert "crashed 3 times" in error["message"], error
    assert "RuntimeError: injected fault in the takeover" in error["message"], error
    stream = await events(client, execution["id"])
    assert event_types(stream, "boom").count("node.started") == 1  # never resumed
    assert event_types(stream)[-1] == "execution.failed"
