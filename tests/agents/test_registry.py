"""The agent registry, sessions and chat through the HTTP API (issue #15), on one embedded
stack whose model catalog points at a local OpenAI-compatible server (tests/ai/fake_llm.py):
the requests that server receives prove what the model was sent.

Covers: register / version / read / delete; bad input (unknown tool or model, an output schema
that is not a JSON Schema, an unknown agent id in a workflow, another tenant's agent and
session) refused with a located 4xx and nothing written; an agent used by id in a workflow
calling two tools and answering; a 200-message session cut to the memory policy; chat keeping
its context over three turns; a paused agent taking no new work.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from libs.cli.stack import Stack, start_stack
from libs.common.memory import estimate_tokens
from tests.ai.fake_llm import FakeLLM, RunningServer, openai_reply, openai_stream
from tests.integration.helpers import create_workflow, node, run, wait_final
from tests.security.support import ADMIN_SCOPES, bearer, new_key

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST = {"max_attempts": 1, "backoff_initial_s": 0, "timeout_s": 10, "connect_timeout_s": 5}
#: Two tenants with a daily agent budget of one model call (the fake model's reply is 10 tokens).
BUDGETED = [f"budget-{name}-{uuid.uuid4().hex[:8]}" for name in ("a", "b")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with RunningServer(FakeLLM()) as fake:
        yield fake


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLLM
) -> AsyncIterator[Stack]:
    database = tmp_path_factory.mktemp("agents") / "heddle.db"
    overrides = {
        "database_url": f"sqlite+aiosqlite:///{database}",
        "ai_models": {
            "providers": {
                "local": {"type": "openai", "base_url": fake_llm.openai_url("local"), **FAST},
                "tiny": {"type": "openai", "base_url": fake_llm.openai_url("tiny"), **FAST},
            },
            "models": [
                {"name": "local-gpt", "provider": "local", "model": "llama-test-8b"},
                {"name": "tiny-ctx", "provider": "tiny", "model": "tiny-1b"},
                {"name": "echo", "provider": "echo"},
                {"name": "counted", "provider": "counted", "model": "counted-1"},
            ],
        },
        "tenant_quotas": {tenant: {"max_agent_tokens_per_day": 10} for tenant in BUDGETED},
    }
    overrides["ai_models"]["providers"]["counted"] = {  # type: ignore[index]
        "type": "openai",
        "base_url": fake_llm.openai_url("counted"),
        **FAST,
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


def agent_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"helper-{uuid.uuid4().hex[:6]}",
        "description": "answers with tools",
        "instructions": "You are a careful assistant.",
        "type": "react",
        "model": "local-gpt",
        "tools": ["calculator", "current_time"],
        "max_steps": 4,
        "memory": {"last_n": 20},
    }
    body.update(changes)
    return body


async def register(client: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/agents", json=agent_body(**changes))
    assert response.status_code == 201, response.text
    agent: dict[str, Any] = response.json()
    return agent


async def agent_count(client: httpx.AsyncClient) -> int:
    response = await client.get("/api/v1/agents")
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def user_turns(seen_body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in seen_body["messages"] if m["role"] in ("user", "assistant")]


async def test_register_version_read_and_delete(client: httpx.AsyncClient) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    created = await register(client, output_schema=schema, fallback_models=["echo"])
    agent_id = created["id"]
    assert created["version"] == 1
    assert created["status"] == "active"
    assert created["output_schema"] == schema

    updated = await client.put(
        f"/api/v1/agents/{agent_id}",
        json=agent_body(name=created["name"], instructions="Be terse.", status="paused"),
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    current = (await client.get(f"/api/v1/agents/{agent_id}")).json()
    assert (current["version"], current["instructions"], current["status"]) == (
        2,
        "Be terse.",
        "paused",
    )
    first = await client.get(f"/api/v1/agents/{agent_id}/versions/1")
    assert first.status_code == 200, first.text
    assert first.json()["instructions"] == "You are a careful assistant."
    versions = (await client.get(f"/api/v1/agents/{agent_id}/versions")).json()
    assert [v["version"] for v in versions] == [2, 1]
    assert (await client.get(f"/api/v1/agents/{agent_id}/versions/3")).status_code == 404

    # Paused: no new work, neither a chat nor a workflow node naming it.
    chat = await client.post(f"/api/v1/agents/{agent_id}/chat", json={"message": "hi"})
    assert chat.status_code == 409, chat.text
    assert "paused" in chat.json()["error"]["message"]
    workflow_id = await create_workflow(
        client,
        {
            "name": "paused-agent",
            "nodes": [
                {"id": "ask", "type": "llm", "params": {"agent_id": agent_id, "prompt": "x"}}
            ],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id))
    assert execution["status"] == "failed"
    error = node(execution, "ask")["error"]
    # Its own error type (not the secrets' one), the message naming the agent.
    assert error["type"] == "agent_paused", error
    assert error["message"] == f"agent {agent_id!r} is paused: it takes no new work", error

    audit = await client.get("/api/v1/audit", params={"object_type": "agent"})
    assert audit.status_code == 200, audit.text
    actions = {(r["action"], r["object_id"]) for r in audit.json()["items"]}
    assert {("create", agent_id), ("update", agent_id)} <= actions

    deleted = await client.delete(f"/api/v1/agents/{agent_id}")
    assert deleted.status_code == 204, deleted.text
    assert (await client.get(f"/api/v1/agents/{agent_id}")).status_code == 404
    assert (await client.get(f"/api/v1/agents/{agent_id}/versions/1")).status_code == 404


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"tools": ["calculator", "no.such.tool"]}, "tools[1]", "unknown tool 'no.such.tool'"),
        ({"model": "gpt-nowhere"}, "model", "unknown model 'gpt-nowhere'"),
        ({"fallback_models": ["echo", "ghost"]}, "fallback_models[1]", "unknown model 'ghost'"),
        ({"output_schema": {"type": 12}}, "output_schema.type", "not a JSON Schema"),
        ({"output_schema": {"required": "answer"}}, "output_schema.required", "not a JSON"),
        ({"tools": [f"agent:{uuid.uuid4()}"]}, "tools[0]", "unknown agent"),
    ],
)
async def test_a_bad_definition_is_a_located_422_and_writes_nothing(
    client: httpx.AsyncClient, changes: dict[str, Any], field: str, words: str
) -> None:
    before = await agent_count(client)
    response = await client.post("/api/v1/agents", json=agent_body(**changes))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert words in error["message"]
    assert [d["field"] for d in error["details"]] == [field]
    assert await agent_count(client) == before


async def test_unknown_agent_in_a_workflow_and_another_tenants_objects_are_refused(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    ghost = str(uuid.uuid4())
    definition = {
        "name": "ghost-agent",
        "nodes": [
            {"id": "start", "type": "input"},
            {"id": "think", "type": "llm", "params": {"agent_id": ghost, "prompt": "hi"}},
        ],
    }
    before = (await client.get("/api/v1/workflows")).json()["total"]
    for path in ("/api/v1/workflows/validate", "/api/v1/workflows"):
        response = await client.post(path, json=definition)
        if path.endswith("validate"):
            assert response.status_code == 200, response.text
            report = response.json()
            assert report["valid"] is False
            errors = report["issues"]
        else:
            assert response.status_code == 422, response.text
            errors = response.json()["error"]["details"]
        assert [(e["node_id"], e["code"]) for e in errors] == [("think", "unknown_agent")]
        assert f"node 'think': agent '{ghost}' not found" in errors[0]["message"]
    assert (await client.get("/api/v1/workflows")).json()["total"] == before

    agent = await register(client)
    opened = await client.post(f"/api/v1/agents/{agent['id']}/sessions", json={"title": "mine"})
    assert opened.status_code == 201, opened.text
    session_id = opened.json()["id"]
    token, _ = await new_key(stack, tenant="elsewhere", scopes=ADMIN_SCOPES, name="other")
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=30, headers=bearer(token)
    ) as other:
        base = f"/api/v1/agents/{agent['id']}"
        for method, path, body in [
            ("GET", base, None),
            ("PUT", base, agent_body()),
            ("DELETE", base, None),
            ("GET", f"{base}/sessions/{session_id}", None),
            ("DELETE", f"{base}/sessions/{session_id}", None),
            ("POST", f"{base}/chat", {"message": "hello", "session_id": session_id}),
        ]:
            response = await other.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
        # Its own workflow naming our session: not found at validation, located.
        response = await other.post(
            "/api/v1/workflows/validate",
            json={
                "name": "steal",
                "nodes": [
                    {
                        "id": "ask",
                        "type": "llm",
                        "params": {"model": "echo", "prompt": "x", "session_id": session_id},
                    }
                ],
            },
        )
        assert response.status_code == 200, response.text
        errors = response.json()["issues"]
        assert [(e["node_id"], e["code"]) for e in errors] == [("ask", "unknown_session")]
    detail = await client.get(f"/api/v1/agents/{agent['id']}/sessions/{session_id}")
    assert detail.status_code == 200, detail.text
    assert detail.json()["messages"] == []
    assert (await client.get(f"/api/v1/agents/{agent['id']}")).json()["version"] == 1


async def test_a_200_message_session_is_cut_to_the_policy(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    # A model with a small context: the agent keeps what fits 300 estimated tokens.
    agent = await register(client, model="tiny-ctx", tools=[], memory={"max_tokens": 300})
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i:03d} " + "x" * 60}
        for i in range(200)
    ]
    opened = await client.post(
        f"/api/v1/agents/{agent['id']}/sessions", json={"title": "long", "messages": history}
    )
    assert opened.status_code == 201, opened.text
    session_id = opened.json()["id"]
    assert opened.json()["message_count"] == 200

    fake_llm.script("tiny", openai_stream(["the short", " answer"]))
    workflow_id = await create_workflow(
        client,
        {
            "name": "long-session",
            "nodes": [
                {
                    "id": "ask",
                    "type": "llm",
                    "params": {
                        "agent_id": agent["id"],
                        "session_id": session_id,
                        "prompt": "And now?",
                    },
                }
            ],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id))
    assert execution["status"] == "succeeded", execution
    assert node(execution, "ask")["output"]["text"] == "the short answer"

    sent = fake_llm.calls("tiny")[-1].body["messages"]
    kept: list[dict[str, Any]] = []
    used = 0
    for message in reversed(history):  # what the policy keeps: the newest that fit
        if used + estimate_tokens(message) > 300:
            break
        used += estimate_tokens(message)
        kept.insert(0, message)
    assert 0 < len(kept) < 20
    assert sent[0] == {"role": "system", "content": "You are a careful assistant."}
    assert sent[1:-1] == kept
    assert sent[-1] == {"role": "user", "content": "And now?"}

    detail = (await client.get(f"/api/v1/agents/{agent['id']}/sessions/{session_id}")).json()
    assert detail["message_count"] == 202
    assert [(m["role"], m["content"]) for m in detail["messages"][-2:]] == [
        ("user", "And now?"),
        ("assistant", "the short answer"),
    ]
    assert detail["messages"][-1]["execution_id"] == execution["id"]


def sse_events(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


@pytest.mark.parametrize("kind", ["react", "chat"])
async def test_chat_keeps_its_context_over_three_turns(
    client: httpx.AsyncClient, fake_llm: FakeLLM, kind: str
) -> None:
    # A react agent (with its tools) chats through an agent node, which calls the model
    # whole; a chat agent through an llm node, which streams.
    agent = await register(client, type=kind, tools=["calculator"] if kind == "react" else [])
    answers = ["Nice to meet you, Ada.", "You like otters.", "Ada, who likes otters."]
    if kind == "react":
        fake_llm.script("local", *(openai_reply(a) for a in answers))
    else:
        fake_llm.script("local", *(openai_stream([a[:4], a[4:]]) for a in answers))
    said = ["My name is Ada.", "I like otters.", "Who am I?"]
    session_id = None
    for turn, message in enumerate(said):
        body: dict[str, Any] = {"message": message}
        if session_id is not None:
            body["session_id"] = session_id
        async with client.stream("POST", f"/api/v1/agents/{agent['id']}/chat", json=body) as r:
            assert r.status_code == 200, await r.aread()
            assert r.headers["content-type"].startswith("text/event-stream")
            session_id = session_id or r.headers["x-session-id"]
            assert r.headers["x-session-id"] == session_id
            events = sse_events((await r.aread()).decode())
        types = [e["type"] for e in events]
        assert types[-1] == "execution.completed", (turn, types)
        assert "node.completed" in types
        if kind == "react":  # the steps stream
            assert "agent.step" in types, types
        else:  # the tokens stream
            chunks = [e for e in events if e["type"] == "node.text_chunk"]
            assert "".join(e["data"]["delta"] for e in chunks) == answers[turn], chunks
    third = fake_llm.calls("local")[-1].body
    assert user_turns(third) == [
        "My name is Ada.",
        "Nice to meet you, Ada.",
        "I like otters.",
        "You like otters.",
        "Who am I?",
    ]
    assert third["messages"][0] == {"role": "system", "content": "You are a careful assistant."}
    detail = (await client.get(f"/api/v1/agents/{agent['id']}/sessions/{session_id}")).json()
    assert [m["content"] for m in detail["messages"]] == [
        "My name is Ada.",
        "Nice to meet you, Ada.",
        "I like otters.",
        "You like otters.",
        "Who am I?",
        "Ada, who likes otters.",
    ]
    listed = (await client.get(f"/api/v1/agents/{agent['id']}/sessions")).json()
    assert [s["id"] for s in listed["items"]] == [session_id]
    gone = await client.delete(f"/api/v1/agents/{agent['id']}/sessions/{session_id}")
    assert gone.status_code == 204, gone.text
    missing = await client.get(f"/api/v1/agents/{agent['id']}/sessions/{session_id}")
    assert missing.status_code == 404


async def test_an_agent_used_by_id_in_a_workflow_calls_two_tools_and_answers(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    agent = await register(client, instructions="Use the tools, then answer.")
    fake_llm.script(
        "local",
        openai_reply(
            "", tool_calls=[{"id": "c1", "name": "calculator", "arguments": {"expression": "6*7"}}]
        ),
        openai_reply("", tool_calls=[{"id": "c2", "name": "current_time", "arguments": {}}]),
        openai_reply("42, and I know the time."),
    )
    before = len(fake_llm.calls("local"))
    workflow_id = await create_workflow(
        client,
        {
            "name": "agent-by-id",
            "inputs": {"question": {"type": "string", "required": True}},
            "nodes": [
                {
                    "id": "helper",
                    "type": "agent",
                    "params": {"agent_id": agent["id"], "prompt": "{{ inputs.question }}"},
                }
            ],
        },
    )
    execution = await wait_final(
        client, await run(client, workflow_id, {"question": "What is 6*7, and the time?"})
    )
    assert execution["status"] == "succeeded", execution
    output = node(execution, "helper")["output"]
    assert output["text"] == "42, and I know the time."
    calls = [s for s in output["steps"] if s["type"] == "tool_call"]
    assert [s["name"] for s in calls] == ["calculator", "current_time"]
    results = [s for s in output["steps"] if s["type"] == "tool_result"]
    assert results[0]["result"]["result"] == 42
    seen = fake_llm.calls("local")[before:]
    assert len(seen) == 3
    # The registered definition reached the model: its instructions and exactly its tools.
    assert seen[0].body["messages"][0] == {
        "role": "system",
        "content": "Use the tools, then answer.",
    }
    assert seen[0].body["messages"][-1]["content"] == "What is 6*7, and the time?"
    assert sorted(t["function"]["name"] for t in seen[0].body["tools"]) == [
        "calculator",
        "current_time",
    ]


async def test_chat_over_the_websocket_with_send_input(
    stack: Stack, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    agent = await register(client, type="chat", tools=[])
    fake_llm.script("local", openai_stream(["Hello", " Bo."]), openai_stream(["Bo", "."]))
    ws_base = stack.gateway_url.replace("http://", "ws://")
    url = f"{ws_base}/ws/v1/stream?access_token={stack.admin_key}"
    async with connect(url) as ws:

        async def say(frame: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            await ws.send(json.dumps(frame))
            frames: list[dict[str, Any]] = []
            async with asyncio.timeout(20):
                while not any(f.get("type") == "execution.completed" for f in frames):
                    frames.append(json.loads(await ws.recv()))
            acks = [f for f in frames if f.get("type") == "ack" and f.get("id") == frame["id"]]
            assert len(acks) == 1, frames
            return acks[0], frames

        first, frames = await say(
            {"type": "send_input", "id": 1, "agent_id": agent["id"], "message": "I am Bo."}
        )
        session_id = first["session_id"]
        chunks = [f["data"]["delta"] for f in frames if f.get("type") == "node.text_chunk"]
        assert "".join(chunks) == "Hello Bo."
        second, _ = await say(
            {
                "type": "send_input",
                "id": 2,
                "agent_id": agent["id"],
                "message": "Who am I?",
                "session_id": session_id,
            }
        )
        assert second["session_id"] == session_id
        unknown = {"type": "send_input", "id": 3, "agent_id": str(uuid.uuid4()), "message": "x"}
        await ws.send(json.dumps(unknown))
        async with asyncio.timeout(20):  # past the followed runs' last frames
            while (error := json.loads(await ws.recv())).get("type") not in ("ack", "error"):
                pass
        assert (error["type"], error["id"], error["error"]["code"]) == ("error", 3, "not_found")
    assert user_turns(fake_llm.calls("local")[-1].body) == ["I am Bo.", "Hello Bo.", "Who am I?"]
    detail = (await client.get(f"/api/v1/agents/{agent['id']}/sessions/{session_id}")).json()
    said = [m["content"] for m in detail["messages"]]
    assert said == ["I am Bo.", "Hello Bo.", "Who am I?", "Bo."]


APPROVAL_PROMPT = '[[tool:calculator {"expression": "1+2"}]]'


def assert_asks_for_approval(frames: list[dict[str, Any]], execution_id: str) -> dict[str, Any]:
    """The one user_input_required frame of a chat run's frames, checked: right after its
    node.waiting, naming the tool call, its arguments and its key."""
    types = [f.get("type") for f in frames]
    assert types.count("user_input_required") == 1, types
    asked = frames[types.index("user_input_required")]
    waiting = frames[types.index("user_input_required") - 1]
    assert waiting["type"] == "node.waiting", types
    assert (asked["execution_id"], asked["node_id"], asked["seq"]) == (
        execution_id,
        "agent",
        waiting["seq"],
    )
    data = asked["data"]
    assert (data["tool"], data["arguments"]) == ("calculator", {"expression": "1+2"})
    assert data["key"] == waiting["data"]["approval"]["key"]
    assert data["key"].startswith(f"{execution_id}/agent/")
    return asked


def final_text(frames: list[dict[str, Any]]) -> str:
    completed = [f for f in frames if f.get("type") == "node.completed"]
    assert len(completed) == 1, [f.get("type") for f in frames]
    return str(completed[0]["data"]["output"]["text"])


async def test_chat_asks_for_tool_approval_on_sse_and_the_websocket_alike(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    # A tool that needs approval: the chat's SSE and the WebSocket both follow the run's
    # node.waiting with a user_input_required frame; the answer lets the chat go on.
    agent = await register(
        client, model="echo", tools=["calculator"], approval_tools=["calculator"]
    )
    url = f"/api/v1/agents/{agent['id']}/chat"
    sse: list[dict[str, Any]] = []
    async with client.stream("POST", url, json={"message": APPROVAL_PROMPT}) as r:
        assert r.status_code == 200, await r.aread()
        execution_id, session_id = r.headers["x-execution-id"], r.headers["x-session-id"]
        event_type = ""
        async with asyncio.timeout(30):
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    event_type = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    frame = json.loads(line.removeprefix("data: "))
                    assert frame["type"] == event_type
                    sse.append(frame)
                    if frame["type"] == "user_input_required":
                        answer = await client.post(
                            f"/api/v1/executions/{execution_id}/input",
                            json={"node_id": frame["node_id"], "data": {"action": "approve"}},
                        )
                        assert answer.status_code == 200, answer.text
    assert_asks_for_approval(sse, execution_id)
    assert sse[-1]["type"] == "execution.completed", [f["type"] for f in sse]
    assert "returned" in final_text(sse) and "3" in final_text(sse)

    ws_base = stack.gateway_url.replace("http://", "ws://")
    frames: list[dict[str, Any]] = []
    async with connect(f"{ws_base}/ws/v1/stream?access_token={stack.admin_key}") as ws:
        chat = {"type": "send_input", "id": 1, "agent_id": agent["id"]}
        await ws.send(json.dumps({**chat, "message": APPROVAL_PROMPT, "session_id": session_id}))
        answered: dict[str, Any] = {}
        async with asyncio.timeout(30):
            # The answer's ack may come after the run's last events (the model is instant).
            while not (
                any(f.get("type") == "execution.completed" for f in frames)
                and any(f.get("type") == "ack" and f.get("id") == 2 for f in frames)
            ):
                frames.append(json.loads(await ws.recv()))
                if frames[-1].get("type") == "user_input_required" and not answered:
                    answered = frames[-1]
                    await ws.send(
                        json.dumps(
                            {
                                "type": "send_input",
                                "id": 2,
                                "execution_id": answered["execution_id"],
                                "node_id": answered["node_id"],
                                "data": {"action": "edit", "arguments": {"expression": "20+22"}},
                            }
                        )
                    )
    acks = {f["id"]: f for f in frames if f.get("type") == "ack"}
    assert acks[1]["session_id"] == session_id
    ws_execution = acks[1]["execution_id"]
    assert acks[2]["execution_id"] == ws_execution
    events = [f for f in frames if f.get("type") not in ("ack", "unsubscribed")]
    assert_asks_for_approval(events, ws_execution)
    assert "42" in final_text(events)
    # The same frames, in the same order, on both streams.
    assert [f["type"] for f in events] == [f["type"] for f in sse]
    detail = (await client.get(f"/api/v1/agents/{agent['id']}/sessions/{session_id}")).json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 2


async def test_only_the_creator_or_an_admin_changes_an_agent(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    agent = await register(client)
    token, _ = await new_key(stack, name="member")  # a member of the tenant, not an admin
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=30, headers=bearer(token)
    ) as member:
        assert (await member.get(f"/api/v1/agents/{agent['id']}")).status_code == 200
        put = await member.put(f"/api/v1/agents/{agent['id']}", json=agent_body())
        assert put.status_code == 403, put.text
        assert "creator or a tenant admin" in put.json()["error"]["message"]
        assert (await member.delete(f"/api/v1/agents/{agent['id']}")).status_code == 403
        own = await member.post("/api/v1/agents", json=agent_body())
        assert own.status_code == 201, own.text
        changed = await member.put(
            f"/api/v1/agents/{own.json()['id']}", json=agent_body(instructions="Mine.")
        )
        assert changed.status_code == 200, changed.text
    versions = (await client.get(f"/api/v1/agents/{agent['id']}/versions")).json()
    assert [v["version"] for v in versions] == [1]


async def test_the_summary_policy_folds_what_the_window_drops_into_one_system_message(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    agent = await register(
        client, model="tiny-ctx", tools=[], instructions="", memory={"last_n": 2, "summary": True}
    )
    history = [{"role": "user", "content": f"fact {i}"} for i in range(6)]
    opened = await client.post(f"/api/v1/agents/{agent['id']}/sessions", json={"messages": history})
    assert opened.status_code == 201, opened.text
    fake_llm.script(
        "tiny", openai_reply("facts 0 to 3 were said"), openai_stream(["all", " clear"])
    )
    before = len(fake_llm.calls("tiny"))
    workflow_id = await create_workflow(
        client,
        {
            "name": "summarised",
            "nodes": [
                {
                    "id": "ask",
                    "type": "llm",
                    "params": {
                        "agent_id": agent["id"],
                        "session_id": opened.json()["id"],
                        "prompt": "Go on.",
                    },
                }
            ],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id))
    assert execution["status"] == "succeeded", execution
    summary_call, main_call = (seen.body for seen in fake_llm.calls("tiny")[before:])
    asked = summary_call["messages"][-1]["content"]
    assert all(f"user: fact {i}" in asked for i in range(4)) and "fact 4" not in asked
    summary = "Summary of the earlier conversation: facts 0 to 3 were said"
    assert main_call["messages"] == [
        {"role": "system", "content": summary},
        {"role": "user", "content": "fact 4"},
        {"role": "user", "content": "fact 5"},
        {"role": "user", "content": "Go on."},
    ]


async def test_a_tenant_over_its_daily_token_budget_stops_and_another_tenant_runs(
    stack: Stack, fake_llm: FakeLLM
) -> None:
    from prometheus_client import REGISTRY

    stopped = REGISTRY.get_sample_value(
        "heddle_agent_budget_exceeded_total", {"budget": "tenant_tokens"}
    )
    definition = {
        "name": "budgeted",
        "nodes": [{"id": "ask", "type": "agent", "params": {"model": "counted", "prompt": "hi"}}],
    }
    executions: list[dict[str, Any]] = []
    for tenant in (BUDGETED[0], BUDGETED[0], BUDGETED[1]):
        token, _ = await new_key(stack, tenant=tenant, scopes=ADMIN_SCOPES, name="budget")
        async with httpx.AsyncClient(
            base_url=stack.gateway_url, timeout=30, headers=bearer(token)
        ) as http:
            workflow_id = await create_workflow(http, definition)
            executions.append(await wait_final(http, await run(http, workflow_id)))
    first, over, other = executions
    # The first run uses the day's 10 tokens; the next one stops before its model call.
    assert first["status"] == "succeeded", first
    assert over["status"] == "failed", over
    error = node(over, "ask")["error"]
    assert error["type"] == "budget_exceeded", error
    assert error["details"]["budget"] == "tenant_tokens"
    assert (error["details"]["tenant_id"], error["details"]["limit"]) == (BUDGETED[0], 10)
    assert error["details"]["used"] == 10
    assert f"tenant {BUDGETED[0]!r} is over its daily agent token budget" in error["message"]
    assert len(fake_llm.calls("counted")) == 2  # the first tenant's first run, the other's
    # Another tenant with the same budget is unaffected.
    assert other["status"] == "succeeded", other
    assert (
        REGISTRY.get_sample_value("heddle_agent_budget_exceeded_total", {"budget": "tenant_tokens"})
        == (stopped or 0) + 1
    )
    for tenant in BUDGETED:
        used = REGISTRY.get_sample_value("heddle_agent_tenant_tokens_today", {"tenant": tenant})
        assert used == 10, (tenant, used)
