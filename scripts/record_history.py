"""Record execution histories for the replay tests (tests/workflow/execution/histories/).

    python scripts/record_history.py [--only NAME ...] [--out DIR]

Starts the embedded stack on a throw-away SQLite database, turns on the runner's recording
hook (ExecutionRunner.recorder_factory), runs each scenario below through the HTTP API as a
client would (cancel, pause, input, a crash and takeover, ...) and writes one JSON history per
scenario: the core's starting state and every command it applied, with its effects. Re-record
only when a change to the rules is meant to alter behaviour, and review the diff. A history
holds what the core saw, resolved secret values included (StartAttempt.secret_values): record
with test secrets only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from libs.cli.stack import Stack, start_stack  # noqa: E402
from libs.common.node_types import NodeTypeSpec  # noqa: E402
from services.workflow.execution import ExecutionCore  # noqa: E402
from services.workflow.execution.history import HistoryRecorder  # noqa: E402
from services.workflow.models import ExecutionRow  # noqa: E402
from services.workflow.runner import ExecutionRunner  # noqa: E402

OUT = ROOT / "tests" / "workflow" / "execution" / "histories"
Client = httpx.AsyncClient


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _create(client: Client, definition: dict[str, Any]) -> str:
    response = await client.post("/api/v1/workflows", json=definition)
    response.raise_for_status()
    return str(response.json()["id"])


async def _start(client: Client, workflow_id: str, inputs: dict[str, Any] | None = None) -> str:
    response = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": inputs or {}}
    )
    response.raise_for_status()
    return str(response.json()["execution_id"])


async def _get(client: Client, execution_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/executions/{execution_id}")
    response.raise_for_status()
    execution: dict[str, Any] = response.json()
    return execution


async def _until(
    client: Client, execution_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    for _ in range(600):
        execution = await _get(client, execution_id)
        if check(execution):
            return execution
        await asyncio.sleep(0.05)
    raise TimeoutError(f"execution {execution_id} never got there: {execution['status']}")


def _final(execution: dict[str, Any]) -> bool:
    return execution["status"] in ("succeeded", "failed", "cancelled")


def _node_is(node_id: str, status: str) -> Callable[[dict[str, Any]], bool]:
    def check(execution: dict[str, Any]) -> bool:
        return any(n["node_id"] == node_id and n["status"] == status for n in execution["nodes"])

    return check


async def _run(client: Client, definition: dict[str, Any], inputs: Any = None) -> str:
    execution_id = await _start(client, await _create(client, definition), inputs)
    await _until(client, execution_id, _final)
    return execution_id


def _chain(n: int) -> dict[str, Any]:
    nodes = [{"id": f"n{i}", "type": "noop"} for i in range(n)]
    edges = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(n - 1)]
    return {"name": "chain", "nodes": nodes, "edges": edges}


def _failing(on_error: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"on-error-{on_error}",
        "nodes": [
            {"id": "start", "type": "input"},
            {
                "id": "bad",
                "type": "transform",
                "params": {"expression": "'text' + 1"},
                "on_error": on_error,
                **extra,
            },
            {"id": "after", "type": "transform", "params": {"expression": "bad"}},
        ],
        "edges": [{"source": "start", "target": "bad"}, {"source": "bad", "target": "after"}],
    }


# ---- scenarios: each runs executions and returns the id of the one to keep -----------------


async def chain_of_three(client: Client, stack: Stack) -> str:
    return await _run(client, _chain(3))


async def fan_out_fan_in(client: Client, stack: Stack) -> str:
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "input"}]
    nodes += [{"id": f"b{i}", "type": "noop"} for i in range(5)]
    nodes.append({"id": "join", "type": "merge", "params": {"mode": "all"}})
    edges = [{"source": "start", "target": f"b{i}"} for i in range(5)]
    edges += [{"source": f"b{i}", "target": "join"} for i in range(5)]
    return await _run(client, {"name": "fan", "nodes": nodes, "edges": edges})


async def join_with_skips(client: Client, stack: Stack) -> str:
    definition = {
        "name": "join-skips",
        "nodes": [
            {"id": "check", "type": "condition", "params": {"expression": "{{ 1 > 2 }}"}},
            {"id": "yes", "type": "transform", "params": {"expression": "'yes'"}},
            {"id": "yes_more", "type": "noop"},
            {"id": "no", "type": "transform", "params": {"expression": "'no'"}},
            {"id": "any", "type": "merge", "params": {"mode": "any"}},
            {"id": "all", "type": "merge", "params": {"mode": "all"}},
        ],
        "edges": [
            {"source": "check", "source_port": "true", "target": "yes"},
            {"source": "yes", "target": "yes_more"},
            {"source": "check", "source_port": "false", "target": "no"},
            {"source": "yes_more", "target": "any"},
            {"source": "no", "target": "any"},
            {"source": "yes_more", "target": "all"},
            {"source": "no", "target": "all"},
        ],
    }
    return await _run(client, definition)


async def retries_then_continue(client: Client, stack: Stack) -> str:
    url = f"http://127.0.0.1:{_closed_port()}/nothing-listens"
    definition = {
        "name": "retries",
        "nodes": [
            {
                "id": "call",
                "type": "http_request",
                "params": {"url": url},
                "retry": {"max_attempts": 3, "backoff": "fixed", "initial_delay_s": 0.05},
                "on_error": "continue",
                "default_output": {"fallback": True},
            },
            {"id": "after", "type": "transform", "params": {"expression": "call"}},
        ],
        "edges": [{"source": "call", "target": "after"}],
    }
    return await _run(client, definition)


async def on_error_fail(client: Client, stack: Stack) -> str:
    return await _run(client, _failing("fail"))


async def on_failure_handler(client: Client, stack: Stack) -> str:
    definition = _failing("fail")
    definition["on_failure"] = {"type": "transform", "params": {"expression": "error.message"}}
    return await _run(client, definition)


async def on_error_continue(client: Client, stack: Stack) -> str:
    return await _run(client, _failing("continue", default_output={"value": 0}))


async def on_error_skip(client: Client, stack: Stack) -> str:
    return await _run(client, _failing("skip"))


async def on_error_fail_branch(client: Client, stack: Stack) -> str:
    definition = _failing("fail_branch")
    definition["nodes"].append(
        {"id": "handler", "type": "transform", "params": {"expression": "bad.error.type"}}
    )
    definition["edges"].append({"source": "bad", "source_port": "error", "target": "handler"})
    return await _run(client, definition)


async def cancel_mid_run(client: Client, stack: Stack) -> str:
    definition = {
        "name": "cancel",
        "nodes": [
            {"id": "sleepy", "type": "delay", "params": {"seconds": 30}},
            {"id": "after", "type": "noop"},
        ],
        "edges": [{"source": "sleepy", "target": "after"}],
    }
    execution_id = await _start(client, await _create(client, definition))
    await _until(client, execution_id, _node_is("sleepy", "running"))
    (await client.post(f"/api/v1/executions/{execution_id}/cancel")).raise_for_status()
    await _until(client, execution_id, _final)
    return execution_id


async def pause_and_resume(client: Client, stack: Stack) -> str:
    definition = {
        "name": "pause",
        "nodes": [
            {"id": "first", "type": "delay", "params": {"seconds": 0.3}},
            {"id": "second", "type": "noop"},
        ],
        "edges": [{"source": "first", "target": "second"}],
    }
    execution_id = await _start(client, await _create(client, definition))
    await _until(client, execution_id, _node_is("first", "running"))
    (await client.post(f"/api/v1/executions/{execution_id}/pause")).raise_for_status()
    await _until(client, execution_id, _node_is("first", "succeeded"))
    await asyncio.sleep(0.2)
    (await client.post(f"/api/v1/executions/{execution_id}/resume")).raise_for_status()
    await _until(client, execution_id, _final)
    return execution_id


APPROVAL = {
    "name": "approval",
    "nodes": [
        {"id": "ask", "type": "human_input", "params": {"prompt": "Ship it?"}},
        {"id": "done", "type": "output", "params": {"value": {"ok": "{{ ask.data.approved }}"}}},
    ],
    "edges": [{"source": "ask", "target": "done"}],
}


async def human_input(client: Client, stack: Stack) -> str:
    execution_id = await _start(client, await _create(client, APPROVAL))
    await _until(client, execution_id, _node_is("ask", "waiting"))
    response = await client.post(
        f"/api/v1/executions/{execution_id}/input",
        json={"node_id": "ask", "data": {"approved": True}},
    )
    response.raise_for_status()
    await _until(client, execution_id, _final)
    return execution_id


async def human_input_timeout(client: Client, stack: Stack) -> str:
    definition = {
        "name": "impatient",
        "nodes": [
            {"id": "ask", "type": "human_input", "params": {"prompt": "Quick!", "timeout_s": 0.3}},
            {"id": "after", "type": "noop"},
        ],
        "edges": [{"source": "ask", "target": "after"}],
    }
    return await _run(client, definition)


async def node_timeout(client: Client, stack: Stack) -> str:
    definition = {
        "name": "slow",
        "nodes": [{"id": "slow", "type": "delay", "params": {"seconds": 5}, "timeout_s": 0.3}],
    }
    return await _run(client, definition)


async def cache_hit(client: Client, stack: Stack) -> str:
    definition = {
        "name": "cached",
        "nodes": [
            {"id": "start", "type": "input"},
            {
                "id": "compute",
                "type": "transform",
                "params": {"expression": "inputs.x * 2"},
                "cache": {"ttl_s": 600},
            },
        ],
        "edges": [{"source": "start", "target": "compute"}],
        "inputs": {"x": {"type": "integer", "required": True}},
    }
    workflow_id = await _create(client, definition)
    first = await _start(client, workflow_id, {"x": 21})
    await _until(client, first, _final)
    second = await _start(client, workflow_id, {"x": 21})
    await _until(client, second, _final)
    return second


async def when_gate(client: Client, stack: Stack) -> str:
    definition = {
        "name": "when",
        "nodes": [
            {"id": "gated", "type": "noop", "when": "{{ inputs.go == true }}"},
            {"id": "open", "type": "noop", "when": "{{ true }}"},
            {"id": "after_gated", "type": "noop"},
        ],
        "edges": [{"source": "gated", "target": "after_gated"}],
    }
    return await _run(client, definition, {"go": False})


async def switch(client: Client, stack: Stack) -> str:
    definition = {
        "name": "switch",
        "inputs": {"color": {"type": "string", "required": True}},
        "nodes": [
            {
                "id": "route",
                "type": "switch",
                "params": {"expression": "inputs.color", "cases": ["red", "green"]},
            },
            {"id": "on_red", "type": "transform", "params": {"expression": "'stop'"}},
            {"id": "on_green", "type": "transform", "params": {"expression": "'go'"}},
            {"id": "otherwise", "type": "transform", "params": {"expression": "'unknown'"}},
        ],
        "edges": [
            {"source": "route", "source_port": "red", "target": "on_red"},
            {"source": "route", "source_port": "green", "target": "on_green"},
            {"source": "route", "source_port": "default", "target": "otherwise"},
        ],
    }
    return await _run(client, definition, {"color": "green"})


async def map_inline(client: Client, stack: Stack) -> str:
    definition = {
        "name": "map",
        "nodes": [
            {
                "id": "each",
                "type": "map",
                "params": {
                    "items": [1, 2, 3],
                    "node": {"type": "transform", "params": {"expression": "item * 10"}},
                },
            },
            {"id": "total", "type": "transform", "params": {"expression": "each.results | length"}},
        ],
        "edges": [{"source": "each", "target": "total"}],
    }
    return await _run(client, definition)


async def subworkflow(client: Client, stack: Stack) -> str:
    child = await _create(
        client,
        {
            "name": "child",
            "inputs": {"item": {"type": "integer", "required": True}},
            "nodes": [
                {"id": "double", "type": "transform", "params": {"expression": "inputs.item * 2"}}
            ],
            "outputs": {"doubled": "{{ double }}"},
        },
    )
    definition = {
        "name": "parent",
        "nodes": [
            {
                "id": "sub",
                "type": "subworkflow",
                "params": {"workflow_id": child, "inputs": {"item": 21}},
            },
            {"id": "done", "type": "output", "params": {"value": "{{ sub.doubled }}"}},
        ],
        "edges": [{"source": "sub", "target": "done"}],
    }
    return await _run(client, definition)


async def missing_secret_beside_a_sibling(client: Client, stack: Stack) -> str:
    definition = {
        "name": "missing-secret",
        "nodes": [
            {"id": "start", "type": "input"},
            {"id": "t", "type": "template", "params": {"template": "{{ secrets.MISSING }}"}},
            {"id": "sibling", "type": "noop"},
        ],
        "edges": [{"source": "start", "target": "t"}, {"source": "start", "target": "sibling"}],
    }
    return await _run(client, definition)


async def takeover_after_a_crash(client: Client, stack: Stack) -> str:
    """The runner dies mid-attempt (its task cancelled, as when its replica stops); the lease
    is made to lapse and the engine takes the execution over from the database. The history
    kept is the takeover's: it starts from the persisted rows."""
    engine = stack.services["workflow"].engine
    definition = {
        "name": "takeover",
        "nodes": [
            {"id": "first", "type": "noop"},
            {"id": "slow", "type": "delay", "params": {"seconds": 0.5}},
            {"id": "last", "type": "noop"},
        ],
        "edges": [{"source": "first", "target": "slow"}, {"source": "slow", "target": "last"}],
    }
    execution_id = await _start(client, await _create(client, definition))
    await _until(client, execution_id, _node_is("slow", "running"))
    runner = engine.runners[execution_id]
    assert runner.task is not None
    runner.task.cancel()
    await asyncio.gather(runner.task, return_exceptions=True)
    RECORDED.pop(execution_id, None)  # the crashed runner's part is not the history kept
    async with engine.sessions() as session, session.begin():
        await session.execute(
            sa.update(ExecutionRow)
            .where(ExecutionRow.id == execution_id)
            .values(lease_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60))
        )
    taken = await engine.take_over(execution_id)
    assert taken is not None
    await _until(client, execution_id, _final)
    return execution_id


async def deadline(client: Client, stack: Stack) -> str:
    settings = stack.services["workflow"].engine.settings
    before = settings.quota_max_execution_duration_s
    settings.quota_max_execution_duration_s = 0.5
    try:
        definition = {
            "name": "deadline",
            "nodes": [{"id": "long", "type": "delay", "params": {"seconds": 10}}],
        }
        return await _run(client, definition)
    finally:
        settings.quota_max_execution_duration_s = before


SCENARIOS: dict[str, Callable[[Client, Stack], Awaitable[str]]] = {
    f.__name__: f
    for f in (
        chain_of_three,
        fan_out_fan_in,
        join_with_skips,
        retries_then_continue,
        on_error_fail,
        on_failure_handler,
        on_error_continue,
        on_error_skip,
        on_error_fail_branch,
        cancel_mid_run,
        pause_and_resume,
        human_input,
        human_input_timeout,
        node_timeout,
        cache_hit,
        when_gate,
        switch,
        map_inline,
        subworkflow,
        missing_secret_beside_a_sibling,
        takeover_after_a_crash,
        deadline,
    )
}
RECORDED: dict[str, dict[str, Any]] = {}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="scenario names")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    names = args.only or list(SCENARIOS)
    with tempfile.TemporaryDirectory() as tmp:
        stack = await start_stack(
            {
                "database_url": f"sqlite+aiosqlite:///{tmp}/record.db",
                "http_allow_hosts": ["127.0.0.1"],
            },
            ephemeral_ports=True,
        )
        try:
            engine = stack.services["workflow"].engine
            node_types: dict[str, NodeTypeSpec] = await engine.catalog.for_tenant("")

            def factory(core: ExecutionCore) -> HistoryRecorder:
                def keep(recorder: HistoryRecorder) -> None:
                    RECORDED[recorder.execution_id] = recorder.history

                return HistoryRecorder(core, node_types, on_close=keep)

            ExecutionRunner.recorder_factory = factory
            headers = {"Authorization": f"Bearer {stack.admin_key}"} if stack.admin_key else {}
            async with httpx.AsyncClient(
                base_url=stack.gateway_url, timeout=30, headers=headers
            ) as client:
                for name in names:
                    execution_id = await SCENARIOS[name](client, stack)
                    for _ in range(100):  # the runner closes its recorder as it ends
                        if execution_id in RECORDED:
                            break
                        await asyncio.sleep(0.02)
                    history = {"name": name, **RECORDED[execution_id]}
                    # A history must be the whole run (a takeover's only where meant to be).
                    started = history["execution"]["status"]
                    if started != "pending" and name != "takeover_after_a_crash":
                        raise RuntimeError(f"{name}: the runner recorded was not the first")
                    final = (await _get(client, execution_id))["status"]
                    ended = [
                        s["effects"]["status"] for s in history["steps"] if "status" in s["effects"]
                    ]
                    if not ended or ended[-1] != final:
                        raise RuntimeError(f"{name}: the history does not end {final}")
                    path = args.out / f"{name}.json"
                    path.write_text(json.dumps(history, indent=1, sort_keys=True) + "\n")
                    print(f"{name}: {len(history['steps'])} steps -> {path}")
        finally:
            ExecutionRunner.recorder_factory = None
            await stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
