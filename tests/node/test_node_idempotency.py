"""Issue 12 item 7: an attempt's idempotency key reaches downstream services (the
http_request header, tool calls), and the workflow side keeps one key per logical dispatch."""

from __future__ import annotations

from typing import Any

import pytest

from services.node.executors.base import NodeError, NodeSettings, Services
from services.workflow.execution.state import NodeStatus
from services.workflow.runner import NodeState, dispatch_key
from tests.node.conftest import RunNode
from tests.node.fakes import FakeAi, FakeTools


@pytest.fixture
def allow_local(services: Services) -> None:
    services.settings = NodeSettings(http_allow_hosts=["127.0.0.1"])


async def _echoed_headers(run_node: RunNode, **params: Any) -> dict[str, str]:
    result = await run_node("http_request", params)
    headers: dict[str, str] = result.output["json"]["headers"]
    return headers


@pytest.mark.usefixtures("allow_local")
async def test_http_request_sends_the_key_on_unsafe_methods(
    run_node: RunNode, http_server: str
) -> None:
    url = f"{http_server}/echo"
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        headers = await _echoed_headers(run_node, method=method, url=url)
        assert headers["idempotency-key"] == "ex1/n1/1", method
    for method in ("GET", "OPTIONS"):
        assert "idempotency-key" not in await _echoed_headers(run_node, method=method, url=url)


@pytest.mark.usefixtures("allow_local")
async def test_http_request_key_header_is_configurable(run_node: RunNode, http_server: str) -> None:
    url = f"{http_server}/echo"
    renamed = await _echoed_headers(
        run_node, method="POST", url=url, idempotency_header="X-Request-Key"
    )
    assert renamed["x-request-key"] == "ex1/n1/1"
    assert "idempotency-key" not in renamed
    off = await _echoed_headers(run_node, method="POST", url=url, idempotency_header="")
    assert "idempotency-key" not in off
    # A key the params set themselves is kept.
    own = await _echoed_headers(
        run_node, method="POST", url=url, headers={"idempotency-key": "mine"}
    )
    assert own["idempotency-key"] == "mine"


@pytest.mark.usefixtures("allow_local")
async def test_a_409_under_a_key_is_a_retryable_conflict(
    run_node: RunNode, http_server: str
) -> None:
    with pytest.raises(NodeError) as keyed:
        await run_node("http_request", {"method": "POST", "url": f"{http_server}/status/409"})
    assert keyed.value.type == "IdempotencyConflict" and keyed.value.retryable
    with pytest.raises(NodeError) as plain:
        await run_node("http_request", {"url": f"{http_server}/status/409"})
    assert plain.value.type == "HttpError" and not plain.value.retryable


async def test_tool_calls_carry_the_key(run_node: RunNode, services: Services) -> None:
    tools = FakeTools({"add": lambda args: args["a"] + args["b"]})
    services.tools = tools
    await run_node("tool", {"name": "add", "arguments": {"a": 1, "b": 2}})
    assert tools.keys == ["ex1/n1/1"]


async def test_agent_tool_calls_get_a_key_per_step_and_call(
    run_node: RunNode, services: Services
) -> None:
    services.ai = FakeAi([
        {"text": "", "tool_calls": [{"id": "a", "name": "add", "arguments": {"a": 1, "b": 2}},
                                    {"id": "b", "name": "add", "arguments": {"a": 3, "b": 4}}]},
        {"text": "", "tool_calls": [{"id": "c", "name": "add", "arguments": {"a": 5, "b": 6}}]},
        {"text": "done"},
    ])  # fmt: skip
    tools = FakeTools({"add": lambda args: args["a"] + args["b"]})
    services.tools = tools
    await run_node("agent", {"model": "echo", "prompt": "add", "tools": ["add"]})
    # execution/node/step.call, without the attempt: a later attempt that re-makes a call
    # whose result was not journaled (issue #15) repeats its key.
    assert tools.keys == ["ex1/n1/0.0", "ex1/n1/0.1", "ex1/n1/1.0"]


def _node(attempt: int, *history: tuple[str, str | None]) -> NodeState:
    records = [
        {"attempt": index, "status": status, "error": {"type": error} if error else None}
        for index, (status, error) in enumerate(history, start=1)
    ]
    return NodeState(
        "n", "http_request", status=NodeStatus.RUNNING, attempt=attempt, attempts=records
    )


def test_dispatch_key_is_kept_while_the_outcome_is_unknown() -> None:
    assert dispatch_key("ex", _node(1)) == "ex/n/1"
    # Lost in a takeover, twice: still the first attempt's key.
    assert dispatch_key("ex", _node(3, ("lost", None), ("lost", None))) == "ex/n/1"
    # The node replica failed the call, or the call timed out: the outcome is unknown.
    assert dispatch_key("ex", _node(2, ("failed", "NodeUnavailable"))) == "ex/n/1"
    assert dispatch_key("ex", _node(3, ("failed", "Timeout"), ("lost", None))) == "ex/n/1"
    # A reported failure ends the logical dispatch: its retry is a new one.
    assert dispatch_key("ex", _node(2, ("failed", "HttpError"))) == "ex/n/2"
    assert dispatch_key("ex", _node(3, ("failed", "HttpError"), ("lost", None))) == "ex/n/2"
