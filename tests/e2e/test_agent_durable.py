"""Issue 15, durable agent steps on the production topology: a 6-step agent run (five tool calls,
then the answer) against a local OpenAI-compatible server that scripts the steps (tool calls in
OpenAI format) and counts the calls it gets, calling a counting HTTP server through the tool
service's http_request tool. The 4th model call is held open; then the node replica running
the attempt (first test) or the workflow replica owning the execution (second test) is
SIGKILLed. The run resumes at step 4: the three completed model calls are not made again
(their replies come from the journal), each tool call reaches the counting server exactly
once, and the steps are agent.step events. One topology serves both tests (the killed process
is started again after its test)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from libs.cli.topology import free_port
from tests.e2e.conftest import E2E, create_workflow, execute, wait_final
from tests.helpers import assert_eventually

pytestmark = pytest.mark.e2e

MODEL_PORT, TOOL_PORT = free_port(), free_port()
#: The 1-based model call held open until its process is killed, and the answering one.
HELD, LAST = 4, 6
CATALOG = {
    "providers": {
        "scripted": {
            "type": "openai",
            "base_url": f"http://127.0.0.1:{MODEL_PORT}/v1",
            "max_attempts": 1,
            "backoff_initial_s": 0,
            "timeout_s": 120,
        }
    },
    "models": [{"name": "scripted", "provider": "scripted", "model": "script-1"}],
}
EXTRA_ENV = {
    "HEDDLE_LEASE_TTL_S": "4",
    "HEDDLE_HTTP_ALLOW_HOSTS": "127.0.0.1",
    "HEDDLE_AI_MODELS": json.dumps(CATALOG),
}
NODE_REPLICAS = ("node-1", "node-2", "node-3")
WORKFLOW_REPLICAS = ("workflow-1", "workflow-2")


class Servers:
    """The scripted model (its step is 1 + the tool answers in the conversation) and the
    counting tool target, on the ports the topology was given."""

    def __init__(self) -> None:
        self.model_calls: collections.Counter[int] = collections.Counter()
        self.tool_calls: collections.Counter[int] = collections.Counter()
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        step = 1 + sum(1 for m in body["messages"] if m.get("role") == "tool")
        self.model_calls[step] += 1
        if step == HELD and self.model_calls[step] == 1:
            self.held.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 90)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if step < LAST:
            url = f"http://127.0.0.1:{TOOL_PORT}/count?step={step}"
            message["tool_calls"] = [
                {
                    "id": f"call-{step}",
                    "type": "function",
                    "function": {"name": "http_request", "arguments": json.dumps({"url": url})},
                }
            ]
        else:
            message["content"] = f"done after {LAST - 1} tool calls"
        return JSONResponse(
            {
                "id": f"cmpl-{step}",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    async def count(self, request: Request) -> JSONResponse:
        step = int(request.query_params["step"])
        self.tool_calls[step] += 1
        return JSONResponse({"step": step, "seen": self.tool_calls[step]})


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Servers]:
    servers = Servers()
    model = Starlette(routes=[Route("/v1/chat/completions", servers.completions, methods=["POST"])])
    tool = Starlette(routes=[Route("/count", servers.count)])
    running = []
    for app, port in ((model, MODEL_PORT), (tool, TOOL_PORT)):
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        running.append((server, asyncio.create_task(server.serve())))
    await assert_eventually(
        lambda: all(server.started for server, _ in running), timeout=10, message="no servers"
    )
    try:
        yield servers
    finally:
        servers.release.set()
        for server, task in running:
            server.should_exit = True
            await task


DEFINITION = {
    "name": "durable-agent",
    "nodes": [
        {
            "id": "agent",
            "type": "agent",
            "params": {
                "model": "scripted",
                "prompt": "Call the counter five times, then answer.",
                "tools": ["http_request"],
                "max_steps": 8,
            },
        }
    ],
}


async def _journal(e2e: E2E, execution_id: str) -> list[dict[str, Any]]:
    """The agent's journal as committed: its row's checkpoint, then what the journal-only
    writes appended since (node_journal rows, in order)."""
    rows = await e2e.fetch(
        "SELECT checkpoint, (SELECT jsonb_agg(entries ORDER BY at) FROM node_journal AS j"
        " WHERE j.execution_id = n.execution_id AND j.node_id = n.node_id) AS appended"
        " FROM node_runs AS n WHERE execution_id = $1 AND node_id = 'agent'",
        execution_id,
    )
    if not rows or rows[0]["checkpoint"] is None:
        return []
    journal: list[dict[str, Any]] = json.loads(rows[0]["checkpoint"])["journal"]
    for entries in json.loads(rows[0]["appended"] or "[]"):
        journal.extend(entries)
    return journal


async def _run_and_kill(e2e: E2E, victim: str) -> tuple[Servers, dict[str, Any], str]:
    """Start the run, wait for the held 4th model call, SIGKILL the `victim` ("node": the
    node replica running the attempt, "owner": the workflow replica owning the execution),
    and wait for the run's end; the killed process is started again."""
    async with serving() as servers, e2e.client() as client:
        workflow_id = await create_workflow(client, DEFINITION)
        execution_id = await execute(client, workflow_id)
        await asyncio.wait_for(servers.held.wait(), 60)
        # Steps 1-3 are journaled before the kill. Each tool_call was committed before its
        # tool acted (an acknowledged write); a tool_result is sent without waiting for its
        # commit, so the 3rd may land a few ms after the 4th model call went out: the kill
        # comes once it is in ("during the 4th step", not inside that window).
        expected = [
            (kind, str(step))
            for step in range(HELD - 1)
            for kind in ("model_call", "tool_call", "tool_result")
        ]

        seen: list[tuple[str, str]] = []

        async def journaled() -> bool:
            seen[:] = [(e["type"], e["step"]) for e in await _journal(e2e, execution_id)]
            return seen == expected

        await assert_eventually(journaled, timeout=10, message="steps 1-3 not journaled")
        if victim == "node":
            # The replica running the attempt says so in its log.
            needle = f"agent run of {execution_id}/agent attempt 1"
            running = [name for name in NODE_REPLICAS if e2e.log_lines(name, needle)]
            assert len(running) == 1, running
            name = running[0]
        else:
            rows = await e2e.fetch("SELECT owner FROM executions WHERE id = $1", execution_id)
            name = str(rows[0]["owner"])
            assert name in WORKFLOW_REPLICAS, name
        e2e.topology.kill(name)
        servers.release.set()
        execution = await wait_final(client, execution_id, timeout=90)
    e2e.topology.start(name)
    await e2e.topology.wait_healthy(timeout_s=60)
    return servers, execution, execution_id


async def _check_resumed(
    e2e: E2E, servers: Servers, execution: dict[str, Any], execution_id: str
) -> None:
    assert execution["status"] == "succeeded", execution["error"]
    # No completed model call made again: only the held one (never answered) twice.
    assert dict(servers.model_calls) == {1: 1, 2: 1, 3: 1, 4: 2, 5: 1, 6: 1}
    assert dict(servers.tool_calls) == {step: 1 for step in range(1, LAST)}
    agent = next(node for node in execution["nodes"] if node["node_id"] == "agent")
    assert agent["output"]["text"] == f"done after {LAST - 1} tool calls"
    assert [s["type"] for s in agent["output"]["steps"]] == [
        *(["tool_call", "tool_result"] * (LAST - 1)),
        "final",
    ]
    assert len(agent["attempt_history"]) == 2, agent["attempt_history"]
    assert agent["attempt_history"][-1]["status"] == "succeeded"
    rows = await e2e.fetch(
        "SELECT data FROM execution_events WHERE execution_id = $1 AND type = 'agent.step'"
        " ORDER BY seq",
        execution_id,
    )
    steps = [json.loads(row["data"]) for row in rows]
    kinds = collections.Counter(step["type"] for step in steps)
    assert kinds == {"model_call": LAST, "tool_call": LAST - 1, "tool_result": LAST - 1, "final": 1}
    assert all(step["tokens"] == 15 for step in steps if step["type"] == "model_call")
    assert all("duration_ms" in step for step in steps if step["type"] == "model_call")
    # Derived from the journal entries by the workflow service: the event's fields, not the
    # whole entry (no model reply, no tool arguments or result).
    event_fields = {"step", "index", "type", "name", "tokens", "duration_ms", "text", "attempt"}
    assert {key for step in steps for key in step} <= event_fields | {"child_execution_id"}
    assert {"step", "type", "name", "attempt"} <= {key for step in steps for key in step}
    e2e.assert_no_crash()


async def test_an_agent_resumes_at_step_4_after_its_node_replica_is_killed(
    topology: E2E,
) -> None:
    servers, execution, execution_id = await _run_and_kill(topology, "node")
    await _check_resumed(topology, servers, execution, execution_id)
    resumed = [
        line
        for name in NODE_REPLICAS
        for line in topology.log_lines(name, f"agent run of {execution_id}/agent attempt 2")
    ]
    # 3 model calls, 3 tool calls, 3 tool results: replayed, not made again
    assert len(resumed) == 1 and "9 journaled steps" in resumed[0], resumed


async def test_an_agent_resumes_at_step_4_after_its_owning_workflow_replica_is_killed(
    topology: E2E,
) -> None:
    servers, execution, execution_id = await _run_and_kill(topology, "owner")
    await _check_resumed(topology, servers, execution, execution_id)
