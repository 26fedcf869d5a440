"""The ai nodes and retries (issue #16 item 11): a node with a retry policy of its own asks the
ai service for no retries of its own, and what the ai service went through (its retries, the
models that failed) comes back as the node's logs, on success and on failure."""

from __future__ import annotations

from typing import Any

import pytest

from services.node.executors.base import NodeError, Services
from tests.node.conftest import RunNode
from tests.node.fakes import FakeAi

RETRY_LOG = {
    "level": "warning",
    "message": "LLM call to m failed (attempt 1 of 3): ...",
    "service": "ai",
}


def system(max_attempts: int) -> dict[str, Any]:
    return {
        "system": {"execution_id": "e", "node_id": "n", "attempt": 1, "max_attempts": max_attempts}
    }


@pytest.mark.parametrize(("node_attempts", "asked"), [(1, None), (3, 1)])
async def test_llm_asks_for_no_provider_retries_when_the_node_retries(
    run_node: RunNode, services: Services, node_attempts: int, asked: int | None
) -> None:
    ai = FakeAi([{"text": "ok", "logs": [RETRY_LOG]}])
    services.ai = ai
    result = await run_node("llm", {"model": "m", "prompt": "hi"}, context=system(node_attempts))
    assert ai.calls[0]["max_attempts"] == asked
    assert result.logs == [RETRY_LOG]
    assert result.output["text"] == "ok"


class FailingAi(FakeAi):
    """Answers with a tool call first, then fails as the ai service does, with its logs."""

    async def complete(self, model: str | list[str], *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.calls:
            self.calls.append({"model": model, **kwargs})
            raise NodeError("UnavailableError", "ai: down", retryable=True, logs=[RETRY_LOG])
        return await super().complete(model, *args, **kwargs)


async def test_an_agent_that_fails_keeps_its_steps_and_the_ai_logs(
    run_node: RunNode, services: Services
) -> None:
    failing = FailingAi([{"text": "", "tool_calls": [{"id": "c1", "name": "clock"}]}])
    services.ai = failing
    services.tools.tools["clock"] = lambda arguments: "noon"  # type: ignore[attr-defined]
    with pytest.raises(NodeError) as caught:
        await run_node(
            "agent",
            {"model": "m", "prompt": "time?", "tools": ["clock"]},
            context=system(2),
        )
    messages = [record["message"] for record in caught.value.logs or []]
    assert messages == ["agent tool_call: clock", "agent tool_result: clock", RETRY_LOG["message"]]
    assert [call["max_attempts"] for call in failing.calls] == [1, 1]
