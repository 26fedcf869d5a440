"""The agent executor's journal (issue #15): every step is written (and acknowledged) before the
next act, a resumed attempt replays the journal instead of calling again, a tool call whose
result was not journaled is re-made with the same key, and a refused write stops the run.
Also: per-run budgets, structured output with one repair, plan_execute with one re-plan."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest

from services.node.executors.agent import AgentExecutor
from services.node.executors.base import (
    NodeError,
    NodeRequest,
    NodeResult,
    NodeSettings,
    Services,
)
from tests.node.conftest import make_request
from tests.node.fakes import FakeAi, FakeTools, FakeWorkflows


def tool_reply(n: int) -> dict[str, Any]:
    return {
        "text": "",
        "tool_calls": [{"id": f"c{n}", "name": "add", "arguments": {"a": n, "b": 1}}],
    }


def report_steps(report: dict[str, Any]) -> list[dict[str, Any]]:
    """A report's agent.step events, as the workflow service derives them from its entries."""
    fields = report["step_fields"]
    return [{k: e[k] for k in fields if k in e} for e in report["journal"]["entries"]]


class Recorder:
    """The attempt's channel: keeps every report (acknowledged ones through `journal`, the
    others through `progress`), in order with the tool calls, and appends each report's
    delta to the journal it holds (as the workflow service does: the delta must extend it)."""

    def __init__(self, order: list[str], refuse: bool = False, held: int = 0) -> None:
        self.writes: list[dict[str, Any]] = []
        self.order = order
        self.refuse = refuse
        #: The journal appended so far (`held` entries handed back to the attempt before).
        self.entries: list[dict[str, Any]] = [{}] * held

    def _append(self, report: dict[str, Any]) -> None:
        delta = report["journal"]
        assert delta["at"] == len(self.entries), (delta["at"], len(self.entries))
        self.entries += delta["entries"]
        self.writes.append(report)

    async def journal(self, report: dict[str, Any]) -> None:
        if self.refuse:
            raise NodeError("Fenced", "refused")
        self._append(report)
        self.order.append(f"acked {self.named(report)}")

    def progress(self, report: dict[str, Any]) -> None:
        self._append(report)
        self.order.append(f"sent {self.named(report)}")

    @staticmethod
    def named(report: dict[str, Any]) -> str:
        """The report's entries by their agent.step events (one each): "type step + ..."."""
        steps = report_steps(report)
        return " + ".join(f"{step['type']} {step['step']}" for step in steps)

    @property
    def last(self) -> dict[str, Any]:
        return {"journal": self.entries}


async def run_agent(
    params: dict[str, Any],
    ai: FakeAi,
    tools: FakeTools,
    journal: Recorder | None = None,
    checkpoint: dict[str, Any] | None = None,
    attempt: int = 1,
) -> NodeResult:
    request: NodeRequest = make_request("agent", {"model": "m", "prompt": "go", **params})
    request = dataclasses.replace(
        request,
        attempt=attempt,
        checkpoint=checkpoint,
        journal=journal.journal if journal else None,
        progress=journal.progress if journal else None,
    )
    async with httpx.AsyncClient() as http:
        services = Services(ai=ai, tools=tools, workflows=None, http=http)  # type: ignore[arg-type]
        return await AgentExecutor().execute(request, services)


def counting_tools(order: list[str]) -> FakeTools:
    def add(arguments: dict[str, Any]) -> int:
        order.append(f"tool {arguments['a']}")
        return int(arguments["a"]) + int(arguments["b"])

    return FakeTools({"add": add})


async def test_each_step_is_journaled_before_the_next_act() -> None:
    order: list[str] = []
    journal = Recorder(order)
    ai = FakeAi([tool_reply(1), tool_reply(2), {"text": "3"}])
    result = await run_agent({"tools": ["add"]}, ai, counting_tools(order), journal)
    assert result.output["text"] == "3"
    assert order == [
        # One report: the reply with its tool_call, committed before the tool acts.
        "acked model_call 0 + tool_call 0",
        "tool 1",
        "sent tool_result 0",
        "acked model_call 1 + tool_call 1",
        "tool 2",
        "sent tool_result 1",
        "sent model_call 2 + final end",  # before the outcome
    ]
    # Append-only: each report carries its new entries and the length they extend.
    assert [(w["journal"]["at"], len(w["journal"]["entries"])) for w in journal.writes] == [
        (0, 2), (2, 1), (3, 2), (5, 1), (6, 2)
    ]  # fmt: skip
    assert [e["type"] for e in journal.entries[:2]] == ["model_call", "tool_call"]
    first = journal.writes[0]
    assert first["event"] == "agent.step"
    model_call = report_steps(first)[0]
    assert model_call["tokens"] == 5 and model_call["duration_ms"] >= 0
    # No event beside the entries: the workflow service derives them from the fields named.
    assert set(first) == {"journal", "event", "step_fields"}
    assert journal.last["journal"][0]["reply"]["tool_calls"] == tool_reply(1)["tool_calls"]


async def test_a_resumed_attempt_replays_its_journal_and_remakes_an_unfinished_tool_call() -> None:
    order: list[str] = []
    # What a crash left: step 0 complete, step 1's tool_call journaled, its result not.
    journal = [
        {"type": "model_call", "step": "0", "reply": {**tool_reply(1), "usage": {}}, "tokens": 5},
        {"type": "tool_call", "step": "0", "index": 0, "id": "c1", "name": "add",
         "arguments": {"a": 1, "b": 1}, "key": "ex1/n1/0.0"},
        {"type": "tool_result", "step": "0", "index": 0, "id": "c1", "name": "add", "result": 2},
        {"type": "model_call", "step": "1", "reply": {**tool_reply(2), "usage": {}}, "tokens": 5},
        {"type": "tool_call", "step": "1", "index": 0, "id": "c2", "name": "add",
         "arguments": {"a": 2, "b": 1}, "key": "ex1/n1/1.0"},
    ]  # fmt: skip
    ai = FakeAi([{"text": "done"}])
    tools = counting_tools(order)
    resumed = Recorder(order, held=len(journal))
    result = await run_agent(
        {"tools": ["add"]}, ai, tools, resumed, checkpoint={"journal": journal}, attempt=2
    )
    # The resumed attempt reports only what it adds, after the 5 entries it was given.
    assert resumed.writes[0]["journal"]["at"] == len(journal)
    assert result.output["text"] == "done"
    # Only the 3rd model call is made; the journaled ones are replayed.
    assert len(ai.calls) == 1
    sent = ai.calls[0]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "tool"]
    assert sent[2]["content"] == "2" and sent[4]["content"] == "3"
    # Step 0's tool is not called again; step 1's (no result journaled) is, with its key.
    assert tools.keys == ["ex1/n1/1.0"]
    assert order == ["tool 2", "sent tool_result 1", "sent model_call 2 + final end"]
    assert [s["type"] for s in result.output["steps"]] == [
        "tool_call", "tool_result", "tool_call", "tool_result", "final"
    ]  # fmt: skip
    assert any("resumed: 5 steps" in record["message"] for record in result.logs)


async def test_a_refused_journal_write_stops_the_run_before_the_tool_acts() -> None:
    order: list[str] = []
    with pytest.raises(NodeError) as caught:
        await run_agent(
            {"tools": ["add"]},
            FakeAi([tool_reply(1), {"text": "x"}]),
            counting_tools(order),
            Recorder(order, refuse=True),  # the tool_call write is refused
        )
    assert caught.value.type == "Fenced"
    assert order == []  # the write (reply + tool_call) refused: the tool never ran


async def test_token_and_step_budgets_stop_the_run_with_budget_exceeded() -> None:
    many = [tool_reply(n) for n in range(1, 9)]
    with pytest.raises(NodeError) as caught:
        await run_agent({"tools": ["add"], "budget": {"steps": 2}}, FakeAi(many), FakeTools(
            {"add": lambda a: 1}))  # fmt: skip
    assert caught.value.type == "budget_exceeded"
    assert caught.value.details == {"budget": "steps", "limit": 2, "used": 3}
    with pytest.raises(NodeError) as caught:
        # 5 tokens per call: the 3rd call brings 15 > 12.
        await run_agent(
            {"tools": ["add"], "budget": {"tokens": 12}, "max_steps": 8},
            FakeAi(many),
            FakeTools({"add": lambda a: 1}),
        )
    assert caught.value.type == "budget_exceeded"
    assert caught.value.details["budget"] == "tokens" and caught.value.details["used"] == 15


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}


async def test_output_schema_is_validated_and_repaired_once() -> None:
    ai = FakeAi([{"text": '{"city": "Oslo"}'}, {"text": '{"city": "Oslo", "days": 3}'}])
    result = await run_agent({"output_schema": SCHEMA}, ai, FakeTools())
    assert result.output["output"] == {"city": "Oslo", "days": 3}
    assert len(ai.calls) == 2
    repair = ai.calls[1]["messages"][-1]["content"]
    assert "'days' is a required property" in repair and ai.calls[1]["tools"] is None

    ai = FakeAi([{"text": "not json"}, {"text": '{"city": 5, "days": 1}'}])
    with pytest.raises(NodeError) as caught:
        await run_agent({"output_schema": SCHEMA}, ai, FakeTools())
    assert caught.value.type == "OutputValidationError"
    assert caught.value.details["problems"] == ["/city: 5 is not of type 'string'"]


async def test_plan_execute_runs_each_step_and_replans_once_on_failure() -> None:
    ai = FakeAi(
        [
            {"text": json.dumps(["find", "sum"])},
            {"text": "found"},  # step 1
            {"text": "", "tool_calls": [{"id": "x", "name": "nope", "arguments": {}}]},
            {"text": "", "tool_calls": [{"id": "y", "name": "nope", "arguments": {}}]},
            {"text": json.dumps(["sum it"])},  # step 2 did not finish in max_steps: re-plan
            {"text": "summed"},
            {"text": "the answer"},
        ]
    )
    result = await run_agent({"agent_type": "plan_execute", "max_steps": 2}, ai, FakeTools())
    assert result.output["text"] == "the answer"
    assert result.output["plan"] == ["sum it"]
    assert "The previous plan failed: step 2 failed" in ai.calls[4]["messages"][0]["content"]
    assert "summed" in ai.calls[6]["messages"][0]["content"]


async def test_a_workflow_tool_runs_a_child_execution_keyed_by_the_step() -> None:
    workflows = FakeWorkflows()
    ai = FakeAi(
        [
            {
                "text": "",
                "tool_calls": [{"id": "w", "name": "workflow:wf-sum", "arguments": {"n": 2}}],
            },
            {"text": "delegated"},
        ]
    )
    # The workflow tool as dispatch resolves it (services/workflow/delegation.py).
    delegate = {
        "kind": "workflow",
        "name": "workflow:wf-sum",
        "description": "Sum.",
        "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "workflow_id": "wf-sum",
        "label": "wf-sum",
    }
    request: NodeRequest = make_request(
        "agent",
        {
            "model": "m",
            "prompt": "go",
            "tools": ["workflow:wf-sum"],
            "delegates": {"workflow:wf-sum": delegate},
        },
    )
    async with httpx.AsyncClient() as http:
        services = Services(ai=ai, tools=FakeTools(), workflows=workflows, http=http)
        result = await AgentExecutor().execute(request, services)
    assert result.output["text"] == "delegated"
    assert ai.calls[0]["tools"][0]["name"] == "workflow:wf-sum"
    assert workflows.calls == [
        {
            "workflow_id": "wf-sum",
            "inputs": {"n": 2},
            "idempotency_key": "ex1/n1/0.0",
            "parent_execution_id": "ex1",
            "parent_node_id": "n1",
        }
    ]
    tool_result = next(s for s in result.output["steps"] if s["type"] == "tool_result")
    assert tool_result["result"] == {"echo": {"n": 2}}


async def test_a_workflow_tool_dispatch_did_not_resolve_fails_the_node_clearly() -> None:
    ai = FakeAi([{"text": "never asked"}])
    request: NodeRequest = make_request(
        "agent", {"model": "m", "prompt": "go", "tools": ["workflow:wf-sum"]}
    )
    async with httpx.AsyncClient() as http:
        services = Services(ai=ai, tools=FakeTools(), workflows=FakeWorkflows(), http=http)
        with pytest.raises(NodeError) as raised:
            await AgentExecutor().execute(request, services)
    assert raised.value.details == {"unknown_tools": ["workflow:wf-sum"]}
    assert "not resolved by dispatch" in raised.value.message
    assert ai.calls == []


async def test_a_journal_that_is_not_durable_reports_its_steps_for_their_events_only() -> None:
    # HEDDLE_AGENT_JOURNAL=false: every step still reaches the workflow service (its
    # agent.step events stream), marked not durable (published, nothing kept), and no write
    # is waited for (the tool acts without an acknowledged commit).
    order: list[str] = []
    recorder = Recorder(order)
    request: NodeRequest = make_request("agent", {"model": "m", "prompt": "go", "tools": ["add"]})
    request = dataclasses.replace(request, journal=recorder.journal, progress=recorder.progress)
    ai = FakeAi([tool_reply(1), {"text": "2"}])
    async with httpx.AsyncClient() as http:
        services = Services(
            ai=ai,
            tools=counting_tools(order),
            workflows=None,  # type: ignore[arg-type]
            http=http,
            settings=NodeSettings(agent_journal=False),
        )
        result = await AgentExecutor().execute(request, services)
    assert result.output["text"] == "2"
    assert order == [
        "sent model_call 0 + tool_call 0",  # not acknowledged: the tool does not wait
        "tool 1",
        "sent tool_result 0",
        "sent model_call 1 + final end",
    ]
    assert all(write["durable"] is False for write in recorder.writes)
    assert [e["type"] for e in recorder.entries] == [
        "model_call", "tool_call", "tool_result", "model_call", "final"
    ]  # fmt: skip
