from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from services.node.executors.base import NodeError, Services
from tests.node.conftest import RunNode
from tests.node.fakes import FakeTools, FakeWorkflows


async def test_tool_renders_arguments(run_node: RunNode, services: Services) -> None:
    tools = FakeTools({"add": lambda args: args["a"] + args["b"]})
    services.tools = tools
    result = await run_node(
        "tool",
        {"name": "add", "arguments": {"a": "{{ inputs.a }}", "b": 2}},
        context={"inputs": {"a": 40}},
    )
    assert result.output == {"result": 42}
    assert tools.calls == [("add", {"a": 40, "b": 2})]


async def test_subworkflow_runs_a_child_once_per_node(
    run_node: RunNode, services: Services
) -> None:
    workflows = FakeWorkflows()
    services.workflows = workflows
    result = await run_node(
        "subworkflow",
        {"workflow_id": "child", "inputs": {"x": "{{ inputs.x }}"}},
        context={"inputs": {"x": [1]}},
        node_id="sub",
    )
    assert result.output == {"echo": {"x": [1]}}
    assert workflows.calls == [{
        "workflow_id": "child", "inputs": {"x": [1]}, "idempotency_key": "ex1/sub",
        "parent_execution_id": "ex1", "parent_node_id": "sub",
    }]  # fmt: skip


async def test_map_inline_node_keeps_item_order(run_node: RunNode, services: Services) -> None:
    running = peak = 0

    class SlowTools(FakeTools):
        async def call(
            self, name: str, arguments: dict[str, Any], idempotency_key: str = ""
        ) -> Any:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(random.uniform(0, 0.02))
            running -= 1
            return arguments["n"] * 2

    services.tools = SlowTools()
    result = await run_node(
        "map",
        {
            "items": "{{ inputs.numbers }}",
            "concurrency": 3,
            "node": {
                "type": "tool",
                "params": {"name": "double", "arguments": {"n": "{{ item }}", "i": "{{ index }}"}},
            },
        },
        context={"inputs": {"numbers": list(range(12))}},
    )
    assert result.output == {"results": [{"result": n * 2} for n in range(12)]}
    assert peak == 3


async def test_map_inline_transform_sees_item_and_index(run_node: RunNode) -> None:
    result = await run_node(
        "map",
        {
            "items": ["a", "b"],
            "node": {"type": "template", "params": {"template": "{{ index }}:{{ item }}"}},
        },
    )
    assert result.output == {"results": [{"text": "0:a"}, {"text": "1:b"}]}


async def test_map_over_a_workflow(run_node: RunNode, services: Services) -> None:
    async def child(workflow_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01 * (5 - inputs["index"]))  # later items finish first
        return {"out": inputs["item"].upper()}

    workflows = FakeWorkflows(child)
    services.workflows = workflows
    result = await run_node(
        "map",
        {"items": ["a", "b", "c", "d", "e"], "workflow_id": "wf2", "concurrency": 2},
        node_id="m",
    )
    assert result.output == {"results": [{"out": c} for c in "ABCDE"]}
    assert workflows.peak == 2
    assert sorted(call["idempotency_key"] for call in workflows.calls) == [
        f"ex1/m/{i}" for i in range(5)
    ]


async def test_map_item_failure_names_the_index(run_node: RunNode, services: Services) -> None:
    async def child(workflow_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if inputs["index"] == 2:
            raise NodeError("HttpError", "child failed", retryable=True)
        await asyncio.sleep(0.05)
        return {}

    services.workflows = FakeWorkflows(child)
    with pytest.raises(NodeError) as caught:
        await run_node("map", {"items": [1, 2, 3, 4], "workflow_id": "wf2", "concurrency": 4})
    assert caught.value.message == "item 2: child failed"
    assert caught.value.details["index"] == 2
    assert caught.value.retryable


async def test_map_needs_exactly_one_of_node_and_workflow(run_node: RunNode) -> None:
    with pytest.raises(NodeError, match="ValidationError"):
        await run_node("map", {"items": [1]})
    with pytest.raises(NodeError, match="unknown inline node type"):
        await run_node("map", {"items": [1], "node": {"type": "nope"}})
