from __future__ import annotations

from typing import Any

import pytest

from services.node.executors.base import NodeError, Services
from tests.node.conftest import RunNode
from tests.node.fakes import FakeAi, FakeTools


async def test_llm_calls_the_ai_service(run_node: RunNode, services: Services) -> None:
    ai = FakeAi([{"text": "short", "model": "m2", "fallbacks_tried": ["m1"]}])
    services.ai = ai
    result = await run_node(
        "llm",
        {
            "model": ["m1", "m2"],
            "prompt": "Summarize: {{ fetch.body }}",
            "system": "be brief",
            "temperature": "{{ inputs.t }}",
            "max_tokens": 50,
        },
        context={"fetch": {"body": "long text"}, "inputs": {"t": 0.2}},
    )
    assert result.output == {
        "text": "short",
        "usage": {"input_tokens": 3, "output_tokens": 2},
        "model": "m2",
        "fallbacks_tried": ["m1"],
    }
    call = ai.calls[0]
    assert call["model"] == ["m1", "m2"]
    assert call["prompt"] == "Summarize: long text"
    assert (call["system"], call["temperature"], call["max_tokens"]) == ("be brief", 0.2, 50)
    assert call["tools"] is None and call["messages"] is None


async def test_llm_treats_an_unset_optional_param_as_absent(
    run_node: RunNode, services: Services
) -> None:
    ai = FakeAi()
    services.ai = ai
    result = await run_node(
        "llm", {"model": "echo", "prompt": "hi", "system": "{{ inputs.system }}"}
    )
    assert result.output["text"] == "echo: hi"
    assert ai.calls[0]["system"] is None


def _weather(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"city": arguments["city"], "temp_c": 21}


async def test_agent_calls_tools_until_a_final_answer(
    run_node: RunNode, services: Services
) -> None:
    ai = FakeAi([
        {"text": "",
         "tool_calls": [{"id": "c1", "name": "weather", "arguments": {"city": "Oslo"}}]},
        {"text": "", "tool_calls": [{"id": "c2", "type": "function",
                                     "function": {"name": "weather",
                                                  "arguments": '{"city": "Rome"}'}}]},
        {"text": "Rome is as warm as Oslo."},
    ])  # fmt: skip
    services.ai = ai
    services.tools = FakeTools({"weather": _weather, "unused": lambda a: None})
    result = await run_node(
        "agent",
        {
            "model": "echo",
            "instructions": "Use tools.",
            "prompt": "Compare {{ inputs.a }}",
            "tools": ["weather"],
        },
        context={"inputs": {"a": "Oslo and Rome"}},
    )
    assert result.output["text"] == "Rome is as warm as Oslo."
    assert [step["type"] for step in result.output["steps"]] == [
        "tool_call",
        "tool_result",
        "tool_call",
        "tool_result",
        "final",
    ]
    assert result.output["steps"][3]["result"] == {"city": "Rome", "temp_c": 21}
    # Only the requested tools are offered, and the transcript grows with each step.
    assert [tool["name"] for tool in ai.calls[0]["tools"]] == ["weather"]
    assert ai.calls[0]["system"] == "Use tools."
    assert ai.calls[0]["messages"] == [{"role": "user", "content": "Compare Oslo and Rome"}]
    last = ai.calls[2]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "tool", "assistant", "tool"]
    assert last[2] == {
        "role": "tool",
        "tool_call_id": "c1",
        "name": "weather",
        "content": '{"city": "Oslo", "temp_c": 21}',
    }


async def test_agent_stops_at_max_steps(run_node: RunNode, services: Services) -> None:
    loop_call = {"text": "again", "tool_calls": [{"name": "weather", "arguments": {"city": "X"}}]}
    services.ai = FakeAi([loop_call] * 10)
    services.tools = FakeTools({"weather": _weather})
    result = await run_node(
        "agent", {"model": "echo", "input": {"q": 1}, "tools": ["weather"], "max_steps": 2}
    )
    steps = result.output["steps"]
    assert len([s for s in steps if s["type"] == "tool_call"]) == 2
    assert steps[-1] == {"type": "final", "text": "again", "stopped": "max_steps"}


async def test_agent_reports_a_bad_tool_call_back_to_the_model(
    run_node: RunNode, services: Services
) -> None:
    services.ai = FakeAi([
        {"text": "", "tool_calls": [{"id": "c1", "name": "rm_rf", "arguments": {}}]},
        {"text": "sorry"},
    ])  # fmt: skip
    services.tools = FakeTools({"weather": _weather})
    result = await run_node("agent", {"model": "echo", "prompt": "go", "tools": ["weather"]})
    assert "unknown tool 'rm_rf'" in result.output["steps"][1]["result"]["error"]
    assert result.output["text"] == "sorry"


async def test_agent_rejects_unknown_tool_names(run_node: RunNode) -> None:
    with pytest.raises(NodeError) as caught:
        await run_node("agent", {"model": "echo", "prompt": "go", "tools": ["nope"]})
    assert caught.value.type == "ValidationError"
