"""The ai and tool services through the HTTP API on the whole embedded stack: an MCP server's
tools in the catalog and called by `tool` and `agent` nodes, agents on the offline echo
provider and on a local OpenAI-compatible server, `llm` fallback chains, the model catalog
with health, and clear node errors for bad tool arguments, unknown tools and unknown models.

The local LLM server (tests/ai/fake_llm.py) listens on an ephemeral port, so this module
builds its own `stack` with a model catalog pointing at it, and the stdio MCP test server
(tests/tool/mcp_test_server.py) named ``kit``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack, start_stack
from services.node.registry import default_registry
from services.workflow.catalog import ToolCatalog
from services.workflow.validation import validate_definition
from tests.ai.fake_llm import FakeLLM, RunningServer, error_reply, openai_reply, openai_stream
from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, events, node, run, wait_final
from tests.tool.tool_testkit import stdio_mcp

# One attempt per call, no backoff: failures show at once and the module stays fast.
FAST = {"max_attempts": 1, "backoff_initial_s": 0, "timeout_s": 10, "connect_timeout_s": 5}


def catalog(fake: FakeLLM) -> dict[str, Any]:
    """Providers on the local server (one URL prefix each) and the models workflows name."""
    return {
        "providers": {
            "local": {"type": "openai", "base_url": fake.openai_url("local"), **FAST},
            "primary": {
                "type": "openai",
                "base_url": fake.openai_url("primary"),
                "breaker_failure_threshold": 1,
                "breaker_cooldown_s": 600,
                **FAST,
            },
            "backup": {"type": "openai", "base_url": fake.openai_url("backup"), **FAST},
            # Retries of its own, as a provider is configured by default (no model: nodes
            # name it with `provider`).
            "flaky": {
                "type": "openai",
                "base_url": fake.openai_url("flaky"),
                **FAST,
                "max_attempts": 3,
                "backoff_initial_s": 0.01,
                "backoff_max_s": 0.02,
                "breaker_failure_threshold": 100,
            },
        },
        "models": [
            {"name": "local-gpt", "provider": "local", "model": "llama-test-8b"},
            {"name": "main", "provider": "primary", "model": "big-model"},
            {"name": "spare", "provider": "backup", "model": "small-model"},
        ],
    }


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with RunningServer(FakeLLM()) as fake:
        yield fake


@pytest.fixture
async def stack(sqlite_url: str, fake_llm: FakeLLM) -> AsyncIterator[Stack]:
    """The embedded stack (as tests/conftest.py's) with the local LLM catalog and the MCP
    test server."""
    overrides = {
        "database_url": sqlite_url,
        "http_allow_hosts": ["127.0.0.1"],
        "ai_models": catalog(fake_llm),
        "mcp_servers": [stdio_mcp("kit")],
    }
    running = await start_stack(overrides, ephemeral_ports=True)
    try:
        yield running
    finally:
        await running.stop()


async def run_nodes(client: httpx.AsyncClient, name: str, *nodes: dict[str, Any]) -> dict[str, Any]:
    """Run a workflow of independent nodes to its end; the execution detail."""
    workflow_id = await create_workflow(client, {"name": name, "nodes": list(nodes)})
    return await wait_final(client, await run(client, workflow_id))


def agent_node(model: str, prompt: str, tools: list[str]) -> dict[str, Any]:
    return {
        "id": "agent",
        "type": "agent",
        "params": {
            "model": model,
            "instructions": "Use the tools; answer briefly.",
            "prompt": prompt,
            "tools": tools,
            "max_steps": 4,
        },
    }


def failed_node(execution: dict[str, Any], node_id: str) -> dict[str, Any]:
    """The error of a node that failed once (no retry of a non-retryable error)."""
    assert execution["status"] == "failed", execution
    entry = node(execution, node_id)
    assert entry["status"] == "failed", entry
    assert entry["attempts"] == 1
    error: dict[str, Any] = entry["error"]
    assert error["retryable"] is False
    return error


# ---------------------------------------------------------------------------- MCP


async def test_mcp_tools_are_listed_and_called_by_tool_and_agent_nodes(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/tools")
    assert response.status_code == 200, response.text
    tools = {tool["name"]: tool for tool in response.json()["tools"]}
    assert {"kit.add", "kit.shout", "kit.fail", "kit.crash"} <= set(tools)
    assert {"calculator", "http_request", "json_query", "template", "current_time"} <= set(tools)
    add = tools["kit.add"]
    assert add["source"] == "mcp:kit"
    assert add["description"] == "Add two integers."
    assert add["input_schema"]["required"] == ["a", "b"]
    assert add["input_schema"]["properties"]["a"]["type"] == "integer"
    assert tools["kit.shout"]["input_schema"]["properties"]["text"]["type"] == "string"
    assert tools["calculator"]["source"] == "builtin"

    execution = await run_nodes(
        client,
        "mcp",
        {
            "id": "add",
            "type": "tool",
            "params": {"name": "kit.add", "arguments": {"a": 2, "b": 40}},
        },
        agent_node("echo", 'Shout it. [[tool:kit.shout {"text": "heddle weaves"}]]', ["kit.shout"]),
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "add")["output"] == {"result": {"result": 42}}
    output = node(execution, "agent")["output"]
    assert output["steps"] == [
        {
            "type": "tool_call",
            "id": "echo_0_0",
            "name": "kit.shout",
            "arguments": {"text": "heddle weaves"},
        },
        {
            "type": "tool_result",
            "id": "echo_0_0",
            "name": "kit.shout",
            "result": {"result": "HEDDLE WEAVES"},
        },
        {"type": "final", "text": output["text"]},
    ]
    assert output["text"] == 'echo: tool kit.shout returned {"result": "HEDDLE WEAVES"}'


# ---------------------------------------------------------------------------- agents


AGENT_PROMPT = 'What is 6*7? [[tool:calculator {"expression": "6*7"}]]'


async def test_agent_end_to_end_on_echo_then_on_the_openai_compatible_server(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    """The same agent workflow, run on echo and then with its model set to the local server."""
    definition = {
        "name": "agent",
        "inputs": {"model": {"type": "string", "required": True}},
        "nodes": [agent_node("{{ inputs.model }}", AGENT_PROMPT, ["calculator"])],
        "outputs": {"answer": "{{ agent.text }}"},
    }
    workflow_id = await create_workflow(client, definition)

    on_echo = await wait_final(client, await run(client, workflow_id, {"model": "echo"}))
    assert on_echo["status"] == "succeeded", on_echo["error"]
    steps = node(on_echo, "agent")["output"]["steps"]
    call = {"expression": "6*7"}
    assert steps == [
        {"type": "tool_call", "id": "echo_0_0", "name": "calculator", "arguments": call},
        {"type": "tool_result", "id": "echo_0_0", "name": "calculator", "result": {"result": 42}},
        {"type": "final", "text": 'echo: tool calculator returned {"result": 42}'},
    ]
    assert on_echo["outputs"] == {"answer": 'echo: tool calculator returned {"result": 42}'}
    await assert_step_events(client, on_echo["id"], steps)

    # The local server asks for the calculator first, then answers from the tool's result.
    fake_llm.script(
        "local",
        openai_reply("", tool_calls=[{"id": "call_1", "name": "calculator", "arguments": call}]),
        openai_reply("6*7 is 42.", usage=(30, 5)),
    )
    on_local = await wait_final(client, await run(client, workflow_id, {"model": "local-gpt"}))
    assert on_local["status"] == "succeeded", on_local["error"]
    steps = node(on_local, "agent")["output"]["steps"]
    assert steps == [
        {"type": "tool_call", "id": "call_1", "name": "calculator", "arguments": call},
        {"type": "tool_result", "id": "call_1", "name": "calculator", "result": {"result": 42}},
        {"type": "final", "text": "6*7 is 42."},
    ]
    assert on_local["outputs"] == {"answer": "6*7 is 42."}
    await assert_step_events(client, on_local["id"], steps)

    first, second = (seen.body for seen in fake_llm.calls("local"))
    assert first["model"] == second["model"] == "llama-test-8b"
    assert [tool["function"]["name"] for tool in first["tools"]] == ["calculator"]
    assert first["messages"] == [
        {"role": "system", "content": "Use the tools; answer briefly."},
        {"role": "user", "content": AGENT_PROMPT},
    ]
    # The second turn carries the model's call and the tool's real result.
    assistant, tool_message = second["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == "call_1"
    assert tool_message == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": '{"result": 42}',
    }


async def assert_step_events(
    client: httpx.AsyncClient, execution_id: str, steps: list[dict[str, Any]]
) -> None:
    """The agent node publishes one event per step, carrying the step."""
    stream = await events(client, execution_id)
    published = [
        e["data"]["step"]
        for e in stream
        if e["node_id"] == "agent" and e["type"] == "log" and "step" in e["data"]
    ]
    assert published == steps


# ---------------------------------------------------------------------------- llm


async def test_llm_on_the_openai_compatible_server_and_a_fallback_chain(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    # The llm node streams its tokens (text_chunk events), so the server answers with SSE.
    fake_llm.script("local", openai_stream(["Looms", " weave", " cloth."], usage=(12, 4)))
    fake_llm.script("primary", error_reply(500, "primary is down"))
    fake_llm.script("backup", openai_stream(["Backup", " answer."], usage=(9, 2)))
    execution = await run_nodes(
        client,
        "llm",
        {
            "id": "ask",
            "type": "llm",
            "params": {"model": "local-gpt", "system": "Be brief.", "prompt": "What do looms do?"},
        },
        {
            "id": "chain",
            "type": "llm",
            "params": {"model": ["main", "spare"], "prompt": "Anyone there?"},
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "ask")["output"] == {
        "text": "Looms weave cloth.",
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
        "model": "local-gpt",
        "fallbacks_tried": [],
    }
    (seen,) = fake_llm.calls("local")
    assert seen.body["model"] == "llama-test-8b"
    assert seen.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What do looms do?"},
    ]
    # The primary answered 500 once; the backup served and the output names it.
    assert node(execution, "chain")["output"] == {
        "text": "Backup answer.",
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
        "model": "spare",
        "fallbacks_tried": ["main"],
    }
    assert len(fake_llm.calls("primary")) == 1
    assert [seen.body["model"] for seen in fake_llm.calls("backup")] == ["small-model"]
    assert node(execution, "chain")["attempts"] == 1

    # The primary's breaker (threshold 1) is now open: the catalog says so.
    response = await client.get("/api/v1/ai/models")
    assert response.status_code == 200, response.text
    models = {model["name"]: model for model in response.json()["models"]}
    assert set(models) == {"echo", "local-gpt", "main", "spare"}
    assert (models["main"]["healthy"], models["main"]["breaker_state"]) == (False, "open")
    for healthy in ("echo", "local-gpt", "spare"):
        assert (models[healthy]["healthy"], models[healthy]["breaker_state"]) == (True, "closed")


async def test_models_catalog_lists_the_configured_models_with_health(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    response = await client.get("/api/v1/ai/models")
    assert response.status_code == 200, response.text
    models = {model["name"]: model for model in response.json()["models"]}
    assert set(models) == {"echo", "local-gpt", "main", "spare"}
    assert {name: m["provider"] for name, m in models.items()} == {
        "echo": "echo",
        "local-gpt": "local",
        "main": "primary",
        "spare": "backup",
    }
    assert all(m["healthy"] is True and m["breaker_state"] == "closed" for m in models.values())
    local = models["local-gpt"]["info"]
    assert local["type"] == "openai"
    assert local["base_url"] == fake_llm.openai_url("local")
    assert local["upstream_model"] == "llama-test-8b"
    assert models["echo"]["info"]["type"] == "echo"


# ---------------------------------------------------------------------------- clear errors


def tool(node_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "tool", "params": {"name": name, "arguments": arguments}}


async def test_bad_tool_arguments_unknown_tool_and_unknown_model_fail_clearly(
    client: httpx.AsyncClient,
) -> None:
    def bad_field(error: dict[str, Any], path: str, problem: str) -> None:
        assert error["type"] == "InvalidArgumentError"
        assert error["details"]["code"] == "invalid_argument"
        assert error["details"]["details"] == [{"path": path, "message": problem}]

    # Literal arguments are checked when the workflow is saved (see the test below); these are
    # templated, so only the tool service sees them, at run time.
    missing = await run_nodes(client, "missing", tool("calc", "calculator", "{{ {} }}"))
    error = failed_node(missing, "calc")
    assert error["message"] == (
        "tool: invalid arguments for tool 'calculator': "
        "expression: 'expression' is a required property"
    )
    bad_field(error, "expression", "'expression' is a required property")

    wrong_type = await run_nodes(
        client, "wrong", tool("calc", "calculator", {"expression": "{{ 7 }}"})
    )
    error = failed_node(wrong_type, "calc")
    assert error["message"] == (
        "tool: invalid arguments for tool 'calculator': expression: 7 is not of type 'string'"
    )
    bad_field(error, "expression", "7 is not of type 'string'")

    unexpected = await run_nodes(
        client,
        "extra",
        tool("calc", "calculator", "{{ {'expression': '1+1', 'precision': 3} }}"),
    )
    error = failed_node(unexpected, "calc")
    problem = "Additional properties are not allowed ('precision' was unexpected)"
    assert (
        error["message"] == f"tool: invalid arguments for tool 'calculator': precision: {problem}"
    )
    bad_field(error, "precision", problem)

    # A value the tool itself refuses: the field is named in the details.
    refused = await run_nodes(client, "refused", tool("calc", "calculator", {"expression": "1/0"}))
    error = failed_node(refused, "calc")
    assert error["message"] == "tool: division by zero"
    bad_field(error, "expression", "division by zero")

    # An MCP tool's arguments are checked against the server's own schema.
    mcp_bad = await run_nodes(
        client, "mcp-bad", tool("add", "kit.add", {"a": "{{ 'two' }}", "b": 1})
    )
    error = failed_node(mcp_bad, "add")
    assert error["message"] == (
        "tool: invalid arguments for tool 'kit.add': a: 'two' is not of type 'integer'"
    )
    bad_field(error, "a", "'two' is not of type 'integer'")

    response = await client.post(
        "/api/v1/workflows", json={"name": "ghost", "nodes": [tool("ghost", "no.such_tool", {})]}
    )
    if response.status_code == 422:
        assert "no.such_tool" in response.text
    else:
        assert response.status_code == 201, response.text
        unknown = await wait_final(client, await run(client, response.json()["id"]))
        error = failed_node(unknown, "ghost")
        assert error["type"] == "NotFoundError"
        assert error["message"] == "tool: unknown tool 'no.such_tool'"
        assert error["details"]["details"]["tool"] == "no.such_tool"
        assert "kit.add" in error["details"]["details"]["known"]

    no_model = await run_nodes(
        client,
        "no-model",
        {"id": "ask", "type": "llm", "params": {"model": "gpt-nope", "prompt": "hi"}},
    )
    error = failed_node(no_model, "ask")
    assert error["type"] == "NotFoundError"
    assert error["message"] == (
        "ai: unknown model 'gpt-nope'; configured models: ['local-gpt', 'main', 'spare', 'echo']"
    )
    assert error["details"]["details"]["model"] == "gpt-nope"

    # An agent offered a tool that does not exist fails before calling the model.
    ghost_agent = await run_nodes(
        client, "ghost-agent", agent_node("echo", "hi", ["calculator", "no.such_tool"])
    )
    error = failed_node(ghost_agent, "agent")
    assert error["type"] == "ValidationError"
    assert error["message"] == "unknown tools: no.such_tool"


async def test_saving_checks_tool_names_and_literal_arguments_with_the_tool_service(
    client: httpx.AsyncClient,
) -> None:
    """Issue #16 item 10: what the tool service's catalog says is checked before a run."""
    definition = {
        "name": "tools-checked",
        "nodes": [
            tool("calc", "calculatr", {"expression": "1+1"}),
            tool("add", "kit.add", {"a": "two", "b": "{{ 1 }}"}),
            agent_node("echo", "hi", ["calculator", "kit.shot"]),
            tool("later", "offline.thing", {}),
        ],
    }
    report = (await client.post("/api/v1/workflows/validate", json=definition)).json()
    assert report["valid"] is False
    found = {(i["severity"], i["node_id"], i["field"]): i["message"] for i in report["issues"]}
    assert set(found) == {
        ("error", "calc", "nodes[0].params.name"),
        ("error", "add", "nodes[1].params.arguments.a"),
        ("error", "agent", "nodes[2].params.tools[1]"),
        # no tool of 'offline' is listed: maybe an MCP server that is down now
        ("warning", "later", "nodes[3].params.name"),
    }
    assert found["error", "calc", "nodes[0].params.name"].startswith(
        "nodes[0].params.name: unknown tool 'calculatr'; the tool service has: "
    )
    assert "kit.add" in found["error", "calc", "nodes[0].params.name"]  # MCP tools listed
    assert found["error", "add", "nodes[1].params.arguments.a"] == (
        "nodes[1].params.arguments.a: 'two' is not of type 'integer' (input schema of tool "
        "'kit.add')"
    )
    response = await client.post("/api/v1/workflows", json=definition)
    assert response.status_code == 422, response.text
    definition["nodes"] = definition["nodes"][3:]
    response = await client.post("/api/v1/workflows", json=definition)
    assert response.status_code == 201, response.text


async def test_a_tool_service_that_does_not_answer_does_not_fail_validation() -> None:
    """The workflow service's tool catalog against an address where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens
    catalog = ToolCatalog(f"127.0.0.1:{port}", deadline_s=2.0)
    tools = await catalog.get()
    assert tools is None
    assert catalog.error is not None and "did not answer" in catalog.error
    report = validate_definition(
        {"name": "w", "nodes": [tool("calc", "calculatr", {"expression": 7})]},
        {spec.type: spec for spec in default_registry().specs()},
        tools=tools,
        tools_unavailable=catalog.error,
    )
    assert report.valid
    assert [(w.code, w.node_id) for w in report.warnings] == [("tools_not_checked", "calc")]


# ---------------------------------------------------------------------------- retries


def flaky_llm(**node: Any) -> dict[str, Any]:
    return {
        "id": "ask",
        "type": "llm",
        "params": {"model": "m", "provider": "flaky", "prompt": "hi"},
        **node,
    }


async def run_logs(client: httpx.AsyncClient, execution_id: str, count: int) -> list[dict]:
    """The run's log records of node ask once there are `count` from the ai service."""

    async def from_ai() -> list[dict]:
        response = await client.get(
            f"/api/v1/executions/{execution_id}/logs", params={"node_id": "ask"}
        )
        assert response.status_code == 200, response.text
        return [r for r in response.json()["records"] if r["service"] == "ai"]

    await assert_eventually(
        lambda: _count_is(from_ai, count), timeout=10, message="ai records in the run's logs"
    )
    return sorted(await from_ai(), key=lambda r: (r["attempt"], r["ts"]))


async def _count_is(records: Any, count: int) -> bool:
    return len(await records()) >= count


async def test_a_node_retry_policy_is_not_multiplied_by_the_providers(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    """Issue #16 item 11: retry.max_attempts 3 against a failing provider made 3 x 3 calls."""
    fake_llm.script("flaky", *[error_reply(503, "overloaded")] * 20)
    retried = flaky_llm(retry={"max_attempts": 3, "initial_delay_s": 0, "max_delay_s": 0})
    execution = await run_nodes(client, "node-retries", retried)
    assert execution["status"] == "failed"
    entry = node(execution, "ask")
    assert entry["attempts"] == 3
    assert len(fake_llm.calls("flaky")) == 3  # one call per node attempt, not 3 each
    # the prefix once (the provider named itself and the router named it again)
    assert entry["error"]["message"] == (
        "ai: no model of the chain could answer (m (flaky): HTTP 503: overloaded)"
    )
    records = await run_logs(client, execution["id"], 3)
    assert [(r["attempt"], r["level"], r["node_id"]) for r in records] == [
        (1, "warning", "ask"),
        (2, "warning", "ask"),
        (3, "warning", "ask"),
    ]
    assert {r["message"] for r in records} == {"LLM call to m (flaky) failed: HTTP 503: overloaded"}


async def test_provider_retries_are_in_the_run_logs_with_the_node(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    """Without a node retry policy the provider's own retries apply, and the run shows them."""
    fake_llm.script("flaky", error_reply(503, "overloaded"), error_reply(429, "slow down"))
    execution = await run_nodes(client, "provider-retries", flaky_llm())
    assert execution["status"] == "succeeded", execution["error"]
    assert len(fake_llm.calls("flaky")) == 3
    records = await run_logs(client, execution["id"], 2)
    messages = [r["message"] for r in records]
    assert len(messages) == 2
    assert messages[0].startswith(
        "LLM call to m (flaky) failed (attempt 1 of 3): HTTP 503: overloaded; retrying in "
    )
    assert messages[1].startswith(
        "LLM call to m (flaky) failed (attempt 2 of 3): HTTP 429: slow down; retrying in "
    )
    assert all(r["node_id"] == "ask" and r["level"] == "warning" for r in records)
    assert records[0]["fields"]["provider"] == "flaky"
    assert records[0]["fields"]["attempt"] == 1


async def test_a_scripted_echo_failure_names_echo_once(client: httpx.AsyncClient) -> None:
    failing = {
        "id": "ask",
        "type": "llm",
        "params": {"model": "echo", "prompt": "[[fail:400]]"},
    }
    execution = await run_nodes(client, "echo-fails", failing)
    error = failed_node(execution, "ask")
    assert error["message"] == (
        "ai: no model of the chain could answer (echo: scripted failure HTTP 400)"
    )
