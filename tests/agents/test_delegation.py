"""Multi-agent delegation through the HTTP API (issue #15), on one embedded stack whose models
are prefixes of a local OpenAI-compatible server (tests/ai/fake_llm.py): each agent has its
own model, so each one's scripted replies and received requests are its own.

Covers: a supervisor delegating to two registered agents and one workflow-as-tool (child
executions linked both ways in the API, in the agent.step events and in the trace; the
workflow tool's schema the model received is the workflow's inputs; the children's tokens
count in the supervisor's usage); an A -> B -> A loop stopped at the depth limit with the
chain named, every execution of it terminal; agent:/workflow: tools naming nothing refused
at registration; the hidden chat and delegation workflows kept out of the listing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.cli.stack import Stack, start_stack
from libs.common.tracing import configure_tracing, remove_span_processor
from services.node.executors.agent import AgentExecutor
from services.node.executors.base import NodeError, Services
from tests.agents.test_registry import FAST, agent_body, agent_count, register, sse_events
from tests.ai.fake_llm import FakeLLM, RunningServer, openai_reply
from tests.integration.helpers import create_workflow, get_execution, node, run, wait_final
from tests.node.conftest import make_request
from tests.node.fakes import FakeAi, FakeTools, FakeWorkflows

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Each agent's own model (and fake-server prefix).
PREFIXES = ("sup", "res", "wri", "loopa", "loopb")
DEPTH_LIMIT = 2


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    processor = SimpleSpanProcessor(memory)
    configure_tracing("heddle", processor=processor)
    try:
        yield memory
    finally:
        remove_span_processor(processor)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with RunningServer(FakeLLM()) as fake:
        yield fake


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
    fake_llm: FakeLLM,
    exporter: InMemorySpanExporter,
) -> AsyncIterator[Stack]:
    database = tmp_path_factory.mktemp("delegation") / "heddle.db"
    overrides = {
        "database_url": f"sqlite+aiosqlite:///{database}",
        "agent_max_delegation_depth": DEPTH_LIMIT,
        "ai_models": {
            "providers": {
                name: {"type": "openai", "base_url": fake_llm.openai_url(name), **FAST}
                for name in PREFIXES
            },
            "models": [
                *({"name": f"{name}-gpt", "provider": name, "model": "m"} for name in PREFIXES),
                {"name": "echo", "provider": "echo"},
            ],
        },
    }
    running = await start_stack(overrides, ephemeral_ports=True)
    try:
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {stack.admin_key}"} if stack.admin_key else {}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=headers) as http:
        yield http


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"id": f"c-{uuid.uuid4().hex[:6]}", "name": name, "arguments": arguments}


async def events_of(client: httpx.AsyncClient, execution_id: str) -> list[dict[str, Any]]:
    async with client.stream("GET", f"/api/v1/executions/{execution_id}/events") as stream:
        assert stream.status_code == 200, await stream.aread()
        return sse_events((await stream.aread()).decode())


async def workflow_ids_listed(client: httpx.AsyncClient) -> set[str]:
    listed = await client.get("/api/v1/workflows", params={"page_size": 200})
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["total"] == len(page["items"])
    return {item["id"] for item in page["items"]}


def _descends(span: Any, ancestor: Any, spans: list[Any]) -> bool:
    by_id = {s.context.span_id: s for s in spans}
    parent = span.parent
    while parent is not None:
        if parent.span_id == ancestor.context.span_id:
            return True
        above = by_id.get(parent.span_id)
        parent = above.parent if above is not None else None
    return False


async def test_a_supervisor_delegates_to_two_agents_and_a_workflow(
    client: httpx.AsyncClient, fake_llm: FakeLLM, exporter: InMemorySpanExporter
) -> None:
    suffix = uuid.uuid4().hex[:4]
    researcher = await register(
        client, name=f"researcher{suffix}", description="Finds facts.", model="res-gpt", tools=[]
    )
    writer = await register(
        client, name=f"writer{suffix}", description="Writes verse.", model="wri-gpt", tools=[]
    )
    adder_inputs = {
        "a": {"type": "integer", "required": True, "description": "The first term."},
        "b": {"type": "integer", "default": 0, "description": "The second term."},
    }
    adder = await create_workflow(
        client,
        {
            "name": f"adder{suffix}",
            "description": "Adds two integers.",
            "inputs": adder_inputs,
            "nodes": [{"id": "start", "type": "input"}],
            "outputs": {"sum": "{{ inputs.a + inputs.b }}"},
        },
    )
    supervisor = await register(
        client,
        name=f"boss{suffix}",
        model="sup-gpt",
        tools=[f"agent:{researcher['id']}", f"agent:{writer['id']}", f"workflow:{adder}"],
    )
    fake_llm.script(
        "sup",
        openai_reply(
            "",
            tool_calls=[
                call(f"researcher{suffix}", task="Find a fact about otters."),
                call(f"writer{suffix}", task="Write a line on otters."),
                call(f"adder{suffix}", a=2, b=3),
            ],
        ),
        openai_reply("Otters hold hands; a line; 5."),
    )
    fake_llm.script("res", openai_reply("Otters hold hands."))
    fake_llm.script("wri", openai_reply("Paws linked, they drift."))
    seen_before = len(fake_llm.calls("sup"))
    workflow_id = await create_workflow(
        client,
        {
            "name": f"supervised{suffix}",
            "nodes": [
                {
                    "id": "boss",
                    "type": "agent",
                    "params": {"agent_id": supervisor["id"], "prompt": "Tell me about otters."},
                }
            ],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id))
    assert execution["status"] == "succeeded", execution
    output = node(execution, "boss")["output"]
    assert output["text"] == "Otters hold hands; a line; 5."
    results = [s for s in output["steps"] if s["type"] == "tool_result"]
    assert [r["result"] for r in results] == [
        "Otters hold hands.",
        "Paws linked, they drift.",
        {"sum": 5},
    ]
    # The supervisor's two model calls (10 tokens each) and the two agents' (10 each).
    assert output["usage"] == {"total_tokens": 40}

    # What the model was offered: the agents by name with their descriptions, and the
    # workflow with its inputs as the schema.
    offered = {
        t["function"]["name"]: t["function"]
        for t in fake_llm.calls("sup")[seen_before].body["tools"]
    }
    assert offered[f"researcher{suffix}"]["description"] == "Finds facts."
    assert offered[f"researcher{suffix}"]["parameters"]["required"] == ["task"]
    assert offered[f"adder{suffix}"]["description"] == "Adds two integers."
    assert offered[f"adder{suffix}"]["parameters"] == {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "description": "The first term."},
            "b": {"type": "integer", "description": "The second term.", "default": 0},
        },
        "required": ["a"],
    }
    # The delegated agents got their tasks.
    assert fake_llm.calls("res")[-1].body["messages"][-1] == {
        "role": "user",
        "content": "Find a fact about otters.",
    }

    # Linked both ways: the node lists its children, each child names its parent and node.
    children = node(execution, "boss")["children"]
    assert len(children) == 3
    assert [r["child_execution_id"] for r in results] == children
    hidden: set[str] = set()
    for child_id in children:
        child = await get_execution(client, child_id)
        assert child["status"] == "succeeded", child
        assert child["parent"] == {"execution_id": execution["id"], "node_id": "boss"}
        assert child["parent_execution_id"] == execution["id"]
        hidden.add(child["workflow_id"])
    assert adder in hidden
    hidden.discard(adder)
    assert len(hidden) == 2  # one task workflow per delegated agent

    # The agent.step events name the child before it starts and when it answered.
    events = [e for e in await events_of(client, execution["id"]) if e["type"] == "agent.step"]
    for kind in ("tool_call", "tool_result"):
        named = [e["data"].get("child_execution_id") for e in events if e["data"]["type"] == kind]
        assert named == children, (kind, events)

    # The trace: each child's execution.start descends from the delegating tool-call span.
    spans = list(exporter.get_finished_spans())
    for child_id in children:
        tool_spans = [
            s
            for s in spans
            if s.name == "agent.tool_call"
            and (s.attributes or {}).get("heddle.child_execution_id") == child_id
        ]
        assert len(tool_spans) == 1, child_id
        starts = [
            s
            for s in spans
            if s.name == "execution.start"
            and (s.attributes or {}).get("heddle.execution_id") == child_id
        ]
        assert len(starts) == 1, child_id
        assert _descends(starts[0], tool_spans[0], spans)

    # The delegation workflows run, but are not listed; the saved workflow is.
    listed = await workflow_ids_listed(client)
    assert adder in listed and workflow_id in listed
    assert not hidden & listed
    for hidden_id in hidden:
        assert (await client.get(f"/api/v1/workflows/{hidden_id}")).status_code == 200


async def test_a_delegation_loop_stops_at_the_depth_limit(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    suffix = uuid.uuid4().hex[:4]
    a = await register(client, name=f"A{suffix}", model="loopa-gpt", tools=[])
    b = await register(client, name=f"B{suffix}", model="loopb-gpt", tools=[f"agent:{a['id']}"])
    again = await client.put(
        f"/api/v1/agents/{a['id']}",
        json=agent_body(name=a["name"], model="loopa-gpt", tools=[f"agent:{b['id']}"]),
    )
    assert again.status_code == 200, again.text
    # Every agent hands the task on; the third hand-over is past the limit of 2.
    fake_llm.script(
        "loopa",
        openai_reply("", tool_calls=[call(b["name"], task="go")]),
        openai_reply("", tool_calls=[call(b["name"], task="go")]),
    )
    fake_llm.script("loopb", openai_reply("", tool_calls=[call(a["name"], task="go")]))
    calls_before = {p: len(fake_llm.calls(p)) for p in ("loopa", "loopb")}
    workflow_id = await create_workflow(
        client,
        {
            "name": f"loop{suffix}",
            "nodes": [
                {
                    "id": "a",
                    "type": "agent",
                    "params": {"agent_id": a["id"], "prompt": "Loop forever."},
                }
            ],
        },
    )
    root = await wait_final(client, await run(client, workflow_id), timeout=40)
    chain = f"A{suffix} -> B{suffix} -> A{suffix} -> B{suffix}"
    message = f"delegation depth 3 exceeded (limit {DEPTH_LIMIT}): {chain}"
    assert root["status"] == "failed", root
    error = node(root, "a")["error"]
    assert (error["type"], error["message"]) == ("delegation_depth_exceeded", message)

    # Every execution of the chain ended the same way; nothing keeps running.
    def agent_node(execution: dict[str, Any]) -> dict[str, Any]:
        return node(execution, "a" if execution is root else "agent")

    seen = [root]
    while agent_node(seen[-1])["children"]:
        (child_id,) = agent_node(seen[-1])["children"]
        seen.append(await wait_final(client, child_id))
    assert len(seen) == 3  # A, B, A: the last hand-over was refused before it started
    for execution in seen:
        assert execution["status"] == "failed", execution
        error = agent_node(execution)["error"]
        assert (error["type"], error["message"]) == ("delegation_depth_exceeded", message)
    assert seen[1]["parent"] == {"execution_id": root["id"], "node_id": "a"}
    assert seen[2]["parent"] == {"execution_id": seen[1]["id"], "node_id": "agent"}
    assert {p: len(fake_llm.calls(p)) - calls_before[p] for p in calls_before} == {
        "loopa": 2,
        "loopb": 1,
    }


@pytest.mark.parametrize("kind", ["agent", "workflow"])
async def test_a_tool_naming_an_unknown_agent_or_workflow_is_refused(
    client: httpx.AsyncClient, kind: str
) -> None:
    before = await agent_count(client)
    ghost = str(uuid.uuid4())
    response = await client.post(
        "/api/v1/agents", json=agent_body(model="echo", tools=["calculator", f"{kind}:{ghost}"])
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert [d["field"] for d in error["details"]] == ["tools[1]"]
    assert f"unknown {kind} {ghost!r}" in error["message"]
    assert await agent_count(client) == before

    if kind == "agent":  # a version it does not have
        real = await register(client, model="echo", tools=[])
        response = await client.post(
            "/api/v1/agents", json=agent_body(model="echo", tools=[f"agent:{real['id']}@7"])
        )
        assert response.status_code == 422, response.text
        assert [d["field"] for d in response.json()["error"]["details"]] == ["tools[0]"]
        assert "has no version '7'" in response.json()["error"]["message"]


async def test_a_workflow_tool_pinned_to_a_version_runs_that_version(
    client: httpx.AsyncClient,
) -> None:
    name = f"pinned{uuid.uuid4().hex[:6]}"

    def version(answer: str) -> dict[str, Any]:
        nodes = [{"id": "start", "type": "input"}]
        return {"name": name, "nodes": nodes, "outputs": {"answer": answer}}

    target = await create_workflow(client, version("from v1"))
    updated = await client.put(f"/api/v1/workflows/{target}", json=version("from v2"))
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    # echo calls the workflow's tool (its function name is the workflow's name) once.
    prompt = f"[[tool:{name} {{}}]]"
    answers: dict[str, Any] = {}
    for ref in (f"workflow:{target}@1", f"workflow:{target}"):
        boss = await register(client, model="echo", tools=[ref])
        workflow_id = await create_workflow(
            client,
            {
                "name": f"boss{uuid.uuid4().hex[:4]}",
                "nodes": [
                    {
                        "id": "boss",
                        "type": "agent",
                        "params": {"agent_id": boss["id"], "prompt": prompt},
                    }
                ],
            },
        )
        execution = await wait_final(client, await run(client, workflow_id))
        assert execution["status"] == "succeeded", execution
        output = node(execution, "boss")["output"]
        result = next(s for s in output["steps"] if s["type"] == "tool_result")
        child = await get_execution(client, result["child_execution_id"])
        assert (child["workflow_id"], child["status"]) == (target, "succeeded")
        answers[ref] = (child["workflow_version"], result["result"])
    assert answers == {
        f"workflow:{target}@1": (1, {"answer": "from v1"}),
        f"workflow:{target}": (2, {"answer": "from v2"}),
    }

    # A version the workflow does not have: refused naming the tool, at the agent's
    # registration and in an inline agent node, and nothing is written.
    before = await agent_count(client)
    for bad in ("7", "0", "x"):
        response = await client.post(
            "/api/v1/agents",
            json=agent_body(model="echo", tools=["calculator", f"workflow:{target}@{bad}"]),
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert [d["field"] for d in error["details"]] == ["tools[1]"]
        assert f"workflow {target!r} has no version {bad!r}" in error["message"]
    assert await agent_count(client) == before
    listed = await workflow_ids_listed(client)
    params = {"model": "echo", "prompt": "go", "tools": [f"workflow:{target}@7"]}
    response = await client.post(
        "/api/v1/workflows",
        json={"name": "inline", "nodes": [{"id": "boss", "type": "agent", "params": params}]},
    )
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [(d["code"], d["field"]) for d in details] == [
        ("unknown_tool", "nodes[0].params.tools[0]")
    ]
    assert f"workflow {target!r} has no version '7'" in details[0]["message"]
    assert await workflow_ids_listed(client) == listed


async def test_chat_workflows_are_not_listed(client: httpx.AsyncClient) -> None:
    agent = await register(client, type="chat", model="echo", tools=[])
    async with client.stream(
        "POST", f"/api/v1/agents/{agent['id']}/chat", json={"message": "hi"}
    ) as response:
        assert response.status_code == 200, await response.aread()
        execution_id = response.headers["x-execution-id"]
        frames = sse_events((await response.aread()).decode())
    assert frames[-1]["type"] == "execution.completed", json.dumps(frames)[:2000]
    chat_workflow = (await get_execution(client, execution_id))["workflow_id"]
    assert (await client.get(f"/api/v1/workflows/{chat_workflow}")).status_code == 200
    assert chat_workflow not in await workflow_ids_listed(client)


async def executions_listed(client: httpx.AsyncClient, **params: Any) -> set[str]:
    listed = await client.get("/api/v1/executions", params={"page_size": 100, **params})
    assert listed.status_code == 200, listed.text
    return {item["id"] for item in listed.json()["items"]}


async def test_hidden_workflows_executions_are_listed_only_when_asked_for(
    client: httpx.AsyncClient,
) -> None:
    helper = await register(client, name=f"helper{uuid.uuid4().hex[:6]}", model="echo", tools=[])
    boss = await register(client, model="echo", tools=[f"agent:{helper['id']}"])
    prompt = f'[[tool:{helper["name"]} {{"task": "say hi"}}]]'
    workflow_id = await create_workflow(
        client,
        {
            "name": f"boss{uuid.uuid4().hex[:4]}",
            "nodes": [
                {
                    "id": "boss",
                    "type": "agent",
                    "params": {"agent_id": boss["id"], "prompt": prompt},
                }
            ],
        },
    )
    parent = await wait_final(client, await run(client, workflow_id))
    assert parent["status"] == "succeeded", parent
    [child] = node(parent, "boss")["children"]  # the delegated run, in a hidden workflow
    chatter = await register(client, type="chat", model="echo", tools=[])
    async with client.stream(
        "POST", f"/api/v1/agents/{chatter['id']}/chat", json={"message": "hi"}
    ) as response:
        assert response.status_code == 200, await response.aread()
        chat = response.headers["x-execution-id"]
        await response.aread()

    listed = await executions_listed(client)
    assert parent["id"] in listed
    assert not {child, chat} & listed
    assert {parent["id"], child, chat} <= await executions_listed(client, include_hidden="true")
    assert await executions_listed(client, parent_execution_id=parent["id"]) == {child}
    chat_workflow = (await get_execution(client, chat))["workflow_id"]
    assert await executions_listed(client, workflow_id=chat_workflow) == {chat}
    # Still linked from the parent, and readable.
    assert node(await get_execution(client, parent["id"]), "boss")["children"] == [child]
    assert (await get_execution(client, child))["parent_execution_id"] == parent["id"]


async def test_an_inline_agent_node_naming_unknown_delegates_is_refused(
    client: httpx.AsyncClient,
) -> None:
    target = await create_workflow(
        client,
        {"name": f"target{uuid.uuid4().hex[:4]}", "nodes": [{"id": "start", "type": "input"}]},
    )
    ghost = str(uuid.uuid4())

    def definition(tools: list[str]) -> dict[str, Any]:
        params = {"model": "echo", "prompt": "go", "tools": tools}
        return {"name": "inline", "nodes": [{"id": "boss", "type": "agent", "params": params}]}

    before = await workflow_ids_listed(client)
    response = await client.post(
        "/api/v1/workflows",
        json=definition([f"workflow:{target}", f"agent:{ghost}", f"workflow:{ghost}"]),
    )
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [(d["code"], d["field"]) for d in details] == [
        ("unknown_tool", "nodes[0].params.tools[1]"),
        ("unknown_tool", "nodes[0].params.tools[2]"),
    ]
    assert f"unknown agent {ghost!r}" in details[0]["message"]
    assert f"unknown workflow {ghost!r}" in details[1]["message"]
    assert await workflow_ids_listed(client) == before
    # The known one alone is accepted.
    accepted = await client.post("/api/v1/workflows", json=definition([f"workflow:{target}"]))
    assert accepted.status_code == 201, accepted.text


async def test_a_delegate_gone_since_registration_is_a_clear_node_error(
    client: httpx.AsyncClient,
) -> None:
    helper = await register(client, model="echo", tools=[])
    boss = await register(client, model="echo", tools=[f"agent:{helper['id']}"])
    deleted = await client.delete(f"/api/v1/agents/{helper['id']}")
    assert deleted.status_code == 204, deleted.text
    workflow_id = await create_workflow(
        client,
        {
            "name": f"orphaned{uuid.uuid4().hex[:4]}",
            "nodes": [
                {"id": "boss", "type": "agent", "params": {"agent_id": boss["id"], "prompt": "x"}}
            ],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id))
    assert execution["status"] == "failed", execution
    error = node(execution, "boss")["error"]
    assert error["type"] == "unknown_tool", error
    assert error["message"] == (f"tool 'agent:{helper['id']}': agent {helper['id']!r} not found"), (
        error
    )


async def test_a_chain_stopped_by_the_call_depth_limit_is_a_delegation_error() -> None:
    # A chain through saved workflows carries no delegation chain: the workflow service's
    # max_call_depth refuses the child, and the agent fails as clearly as on a loop.
    async def refuse(workflow_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        raise NodeError(
            "SubworkflowError",
            "failed_precondition: sub-workflow call depth 11 exceeds the limit of 10",
        )

    delegates = {
        "workflow:w1": {
            "kind": "workflow",
            "name": "deep",
            "description": "d",
            "input_schema": {"type": "object"},
            "workflow_id": "w1",
            "label": "deep",
        }
    }
    ai = FakeAi([{"text": "", "tool_calls": [{"id": "x", "name": "deep", "arguments": {}}]}])
    params = {
        "model": "m",
        "prompt": "go",
        "tools": ["workflow:w1"],
        "delegates": delegates,
        "agent_name": "top",
    }
    async with httpx.AsyncClient() as http:
        services = Services(ai=ai, tools=FakeTools(), workflows=FakeWorkflows(refuse), http=http)
        with pytest.raises(NodeError) as raised:
            await AgentExecutor().execute(make_request("agent", params), services)
    assert raised.value.type == "delegation_depth_exceeded"
    assert raised.value.message.startswith(
        "delegation stopped by the call depth limit: top -> deep (failed_precondition"
    )
    assert ai.calls[0]["tools"] == [
        {"name": "deep", "description": "d", "input_schema": {"type": "object"}}
    ]
