"""Acknowledged journal writes on the node service's Work stream: an agent's tool_call entry is
sent as a PROGRESS outcome with an "ack" number (with the model's reply before it) and the
tool acts only once the workflow service's JournalAck for it arrives (a tool_result is sent
without one); a refused write (accepted=false) fails the attempt as Fenced before its tool
runs. And the core publishes such a checkpoint as an agent.step event (the history codec
keeps the event name)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from heddle.v1 import node_pb2

from libs.common import jsonutil
from services.node.attempts import NodeRunner
from services.node.executors.base import Services
from services.node.registry import default_registry
from services.node.servicer import NodeServicer
from services.workflow.execution import Begin, Checkpoint, NodeResult, StartAttempt
from services.workflow.execution.history import decode_command, encode_command
from services.workflow.runner import GroupCommit
from tests.node.fakes import FakeAi, FakeTools
from tests.workflow.execution.test_execution_core import T0, chain, core_for

Outcome = node_pb2.NodeOutcome


def _call(n: int) -> dict[str, Any]:
    return {"text": "", "tool_calls": [{"id": f"c{n}", "name": "add", "arguments": {"n": n}}]}


async def test_a_journal_write_waits_for_its_ack_and_a_refusal_fences_the_attempt() -> None:
    ai = FakeAi([_call(1), _call(2), {"text": "done"}])
    tools = FakeTools({"add": lambda arguments: arguments["n"]})
    inbox: asyncio.Queue[node_pb2.WorkRequest | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[node_pb2.WorkRequest]:
        while (request := await inbox.get()) is not None:
            yield request

    async with httpx.AsyncClient() as http:
        services = Services(ai=ai, tools=tools, workflows=None, http=http)  # type: ignore[arg-type]
        servicer = NodeServicer(NodeRunner(default_registry(), services), 4)
        stream = servicer.Work(requests(), None)
        task = node_pb2.NodeTask(
            execution_id="e1",
            node_id="agent",
            node_type="agent",
            attempt=1,
            idempotency_key="e1/agent/1",
            params_json=json.dumps({"model": "m", "prompt": "go", "tools": ["add"]}).encode(),
            context_json=b'{"inputs": {}, "system": {}}',
        )
        inbox.put_nowait(node_pb2.WorkRequest(tasks=[task]))

        buffered: list[Outcome] = []

        async def next_outcome() -> tuple[Outcome, dict[str, Any]]:
            if not buffered:  # several reports may travel in one message
                response = await asyncio.wait_for(anext(stream), 10)
                buffered.extend(response.outcomes)
            outcome = buffered.pop(0)
            return outcome, jsonutil.loads(outcome.output_json) or {}

        def ack(seq: int, accepted: bool = True) -> None:
            inbox.put_nowait(
                node_pb2.WorkRequest(
                    acks=[
                        node_pb2.JournalAck(
                            execution_id="e1",
                            node_id="agent",
                            attempt=1,
                            seq=seq,
                            accepted=accepted,
                        )
                    ]
                )
            )

        def types(progress: dict[str, Any]) -> list[str]:
            return [entry["type"] for entry in progress["journal"]["entries"]]

        # The model's reply rides its tool_call's acknowledged write (one agent.step each).
        outcome, progress = await next_outcome()
        assert outcome.kind == Outcome.PROGRESS
        assert progress["event"] == "agent.step"
        assert (types(progress), progress["ack"]) == (["model_call", "tool_call"], 1)
        await asyncio.sleep(0.2)  # unacknowledged: the tool does not act
        assert tools.calls == [] and len(ai.calls) == 1
        ack(2)  # an ack of another write changes nothing
        await asyncio.sleep(0.1)
        assert tools.calls == []
        ack(1)
        outcome, progress = await next_outcome()
        assert types(progress) == ["tool_result"] and "ack" not in progress  # not waited for
        assert tools.calls == [("add", {"n": 1})]
        outcome, progress = await next_outcome()
        assert (types(progress), progress["ack"]) == (["model_call", "tool_call"], 2)
        ack(2, accepted=False)  # the owner fenced it off: the step's tool never runs
        outcome, _ = await next_outcome()
        assert outcome.kind == Outcome.FAILED and outcome.error.type == "Fenced"
        assert tools.calls == [("add", {"n": 1})]
        inbox.put_nowait(None)
        await stream.aclose()  # type: ignore[attr-defined]


def test_the_core_publishes_an_agent_step_checkpoint_as_agent_step() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    saved = {"journal": [{"type": "model_call", "step": "0"}]}
    command = Checkpoint("a", 1, saved, {"type": "model_call", "step": "0"}, "agent.step")
    fx = core.apply(command, T0)
    assert [(e["type"], e["data"]) for e in fx.events] == [
        ("agent.step", {"type": "model_call", "step": "0", "attempt": 1})
    ]
    assert fx.nodes["a"].row()["checkpoint"] == saved
    assert decode_command(encode_command(command)) == command
    # Any other name is published as node.progress (the event list is closed).
    other = core.apply(Checkpoint("a", 1, saved, {}, "made.up"), T0)
    assert [e["type"] for e in other.events] == ["node.progress"]


def test_the_core_publishes_a_step_not_kept_and_stores_nothing() -> None:
    # An agent run with HEDDLE_AGENT_JOURNAL=false: its steps are events, not a journal.
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    step = {"type": "model_call", "step": "0"}
    command = Checkpoint("a", 1, {"journal": [step]}, step, "agent.step", 0, kept=False)
    fx = core.apply(command, T0)
    assert [(e["type"], e["data"]) for e in fx.events] == [
        ("agent.step", {"type": "model_call", "step": "0", "attempt": 1})
    ]
    assert not fx.nodes and not fx.checkpointed and core.nodes["a"].checkpoint is None
    assert decode_command(encode_command(command)) == command
    # A stale attempt's step is not published.
    stale = core.apply(Checkpoint("a", 2, {}, step, "agent.step", kept=False), T0)
    assert not stale.events


def test_the_core_appends_a_journal_delta_and_refuses_a_gap() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    first, second = {"type": "model_call", "step": "0"}, {"type": "tool_call", "step": "0"}
    step = {"type": "model_call", "step": "0"}
    fx = core.apply(Checkpoint("a", 1, {"journal": [first]}, step, "agent.step", 0), T0)
    assert fx.checkpointed  # what the runner acknowledges as accepted
    node = fx.nodes["a"]
    assert node.checkpoint == {"journal": [first]}
    # Once that row is committed, the writer sends only what is new (no checkpoint column).
    node.journal_written = 1
    fx = core.apply(Checkpoint("a", 1, {"journal": [second]}, step, "agent.step", 1), T0)
    assert fx.nodes["a"].checkpoint == {"journal": [first, second]}
    row, length = fx.nodes["a"].write_row()
    assert (row["checkpoint"], row["journal_append"], length) == (None, [second], 2)
    # Once the whole row is committed (Engine.persist sets row_written), an append that
    # changed nothing else is written journal-only: the stored length and the new entries.
    node.journal_written, node.row_written = 2, True
    third = {"type": "tool_result", "step": "0"}
    core.apply(Checkpoint("a", 1, {"journal": [third]}, step, "agent.step", 2), T0)
    assert node.write_row() == ({"at": 2, "journal_append": [third]}, 3)
    # A delta that does not extend the journal held (a lost report): refused, nothing changes.
    gap = core.apply(Checkpoint("a", 1, {"journal": [first]}, step, "agent.step", 5), T0)
    assert not gap.nodes and not gap.events and not gap.checkpointed
    assert core.nodes["a"].checkpoint == {"journal": [first, second, third]}
    command = Checkpoint("a", 1, {"journal": [second]}, step, "agent.step", 2)
    assert decode_command(encode_command(command)) == command
    # A full checkpoint (a loop's, the old agent format) replaces it and is written whole.
    core.apply(Checkpoint("a", 1, {"journal": [first]}, {}, "agent.step"), T0)
    row, length = core.nodes["a"].write_row()
    assert (row["checkpoint"], row["journal_append"], length) == ({"journal": [first]}, None, 1)
    # Any other change of the row (here the attempt's failure) makes the next write whole.
    node.journal_written, node.row_written = 1, True
    failed = core.apply(NodeResult("a", 1, "failed", error={"type": "E", "message": "m"}), T0)
    row, length = failed.nodes["a"].write_row()
    assert (row["status"], row["checkpoint"], row["journal_append"]) == ("failed", None, [])


def test_group_commit_waits_for_the_next_write_only_while_it_came_within_the_cap() -> None:
    policy = GroupCommit(cap_s=0.010)
    # No gap seen yet: written at once, and the gap measured up to the next message.
    assert policy.wait_s(now=1.000) == 0
    policy.arrived(now=1.003)
    assert policy.gap_s == pytest.approx(0.003)
    # The next reply came within the cap: the following batch waits for it.
    assert policy.wait_s(now=2.000) == 0.010
    policy.waited(0.004)
    assert policy.wait_s(now=3.000) == 0.010
    # Nothing came within the cap (a slower model call): the next batch goes at once...
    policy.waited(math.inf)
    assert policy.wait_s(now=4.000) == 0
    policy.arrived(now=4.200)
    assert policy.wait_s(now=5.000) == 0  # ...and so on while replies take longer
    policy.arrived(now=5.002)
    assert policy.wait_s(now=6.000) == 0.010  # fast again: waits again
    assert GroupCommit(cap_s=0).wait_s(now=1.0) == 0  # HEDDLE_JOURNAL_LINGER_MS=0: never
