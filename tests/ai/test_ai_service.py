"""The AI service through real gRPC channels, against local scripted LLM HTTP servers."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest
from fake_llm import (
    FakeLLM,
    Reply,
    anthropic_reply,
    anthropic_stream,
    error_reply,
    openai_reply,
    openai_stream,
)
from heddle.v1 import ai_pb2, ai_pb2_grpc
from prometheus_client import REGISTRY

from libs.common.errors import NotFound, from_rpc_error
from libs.common.grpcutil import create_channel
from services.node.executors.base import NodeError
from services.node.grpc_clients import GrpcAiClient

FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.02}
TOOLS = [
    {
        "name": "calculator",
        "description": "Evaluate arithmetic.",
        "input_schema": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    }
]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def request(*models: str, **fields: Any) -> ai_pb2.CompleteRequest:
    for key in ("messages", "tools"):
        if key in fields:
            fields[f"{key}_json"] = json.dumps(fields.pop(key)).encode()
    return ai_pb2.CompleteRequest(models=list(models), **fields)


def openai_catalog(fake: FakeLLM, **provider: Any) -> dict[str, Any]:
    return {
        "providers": {
            "local": {
                "type": "openai",
                "base_url": fake.openai_url("local"),
                "api_key_env": "HEDDLE_TEST_OPENAI_KEY",
                **FAST,
                **provider,
            },
            "claude": {
                "type": "anthropic",
                "base_url": fake.anthropic_url("claude"),
                "api_key_env": "HEDDLE_TEST_ANTHROPIC_KEY",
                **FAST,
            },
        },
        "models": [
            {"name": "small", "provider": "local", "model": "llama-3.1-8b"},
            {"name": "sonnet", "provider": "claude", "model": "claude-sonnet-4"},
        ],
    }


def chain_catalog(fake: FakeLLM, threshold: int = 5, cooldown: float = 30.0) -> dict[str, Any]:
    flaky = {"breaker_failure_threshold": threshold, "breaker_cooldown_s": cooldown}
    return {
        "providers": {
            "primary": {"type": "openai", "base_url": fake.openai_url("primary"), **FAST, **flaky},
            "backup": {"type": "anthropic", "base_url": fake.anthropic_url("backup"), **FAST},
            "echo": {"type": "echo", **FAST},
        },
        "models": [
            {"name": "main", "provider": "primary"},
            {"name": "spare", "provider": "backup"},
        ],
    }


# ---------------------------------------------------------------------------- echo


async def test_echo_is_the_default_and_counts_whitespace_tokens(ai_service) -> None:
    stub = await ai_service()
    before = sample("heddle_llm_tokens_total", model="echo", kind="prompt")
    reply = await stub.Complete(request(prompt="hello  big world", system="be brief"), timeout=5)
    assert reply.text == "echo: hello  big world"
    assert (reply.model, reply.provider, reply.finish_reason) == ("echo", "echo", "stop")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 4)
    assert reply.usage.total_tokens == 9
    assert sample("heddle_llm_tokens_total", model="echo", kind="prompt") == before + 5


async def test_echo_scripted_tool_call_round_trip(ai_service) -> None:
    stub = await ai_service()
    prompt = 'What is 2+2? [[tool:calculator {"expression": "2+2"}]]'
    first = await stub.Complete(request("echo", prompt=prompt, tools=TOOLS), timeout=5)
    calls = json.loads(first.tool_calls_json)
    assert calls == [{"id": "echo_0_0", "name": "calculator", "arguments": {"expression": "2+2"}}]
    assert first.finish_reason == "tool_calls"
    history = [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "echo_0_0", "content": '{"result": 4}'},
    ]
    second = await stub.Complete(request("echo", messages=history, tools=TOOLS), timeout=5)
    assert second.text == 'echo: tool calculator returned {"result": 4}'
    assert json.loads(second.tool_calls_json or b"[]") == []


async def test_echo_streams_word_by_word(ai_service) -> None:
    stub = await ai_service()
    chunks = [c async for c in stub.StreamComplete(request(prompt="one two three"), timeout=5)]
    deltas = [c.delta for c in chunks if not c.HasField("final")]
    assert len(deltas) == 4
    assert "".join(deltas) == "echo: one two three"
    final = chunks[-1].final
    assert final.text == "echo: one two three"
    assert final.usage.completion_tokens == 4


async def test_echo_scripted_failure_falls_back(fake_llm, ai_service) -> None:
    stub = await ai_service(chain_catalog(fake_llm))
    reply = await stub.Complete(request("echo", "spare", prompt="x [[fail:503]]"), timeout=5)
    assert (reply.model, list(reply.fallbacks_tried)) == ("spare", ["echo"])


# ---------------------------------------------------------------------------- providers


async def test_openai_compatible_completion_with_tool_calls(
    fake_llm, ai_service, monkeypatch
) -> None:
    monkeypatch.setenv("HEDDLE_TEST_OPENAI_KEY", "sk-test-123")
    call = {"id": "call_9", "name": "calculator", "arguments": {"expression": "6*7"}}
    fake_llm.script("local", openai_reply("", tool_calls=[call], usage=(20, 8)))
    stub = await ai_service(openai_catalog(fake_llm))
    history = [
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "", "tool_calls": [{**call, "id": "call_1"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    reply = await stub.Complete(
        request(
            "small",
            prompt="6*7?",
            system="sys",
            tools=TOOLS,
            messages=history,
            temperature=0.2,
            max_tokens=50,
        ),
        timeout=5,
    )
    assert json.loads(reply.tool_calls_json) == [call]
    assert (reply.model, reply.provider, reply.finish_reason) == ("small", "local", "tool_calls")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (20, 8)
    seen = fake_llm.calls("local")[-1]
    assert seen.headers["authorization"] == "Bearer sk-test-123"
    body = seen.body
    assert body["model"] == "llama-3.1-8b"
    assert (body["temperature"], body["max_tokens"]) == (0.2, 50)
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assistant = body["messages"][2]["tool_calls"][0]
    assert assistant["function"] == {"name": "calculator", "arguments": '{"expression": "6*7"}'}
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    assert body["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]


async def test_openai_compatible_streaming(fake_llm, ai_service) -> None:
    fake_llm.script("local", openai_stream(["Hel", "lo", " world"], usage=(12, 3)))
    stub = await ai_service(openai_catalog(fake_llm))
    chunks = [c async for c in stub.StreamComplete(request("small", prompt="hi"), timeout=5)]
    assert [c.delta for c in chunks[:-1]] == ["Hel", "lo", " world"]
    final = chunks[-1].final
    assert (final.text, final.model, final.usage.total_tokens) == ("Hello world", "small", 15)
    assert fake_llm.calls("local")[-1].body["stream"] is True


async def test_anthropic_completion_maps_tools_and_history(
    fake_llm, ai_service, monkeypatch, tmp_path
) -> None:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("HEDDLE_TEST_ANTHROPIC_KEY: sk-ant-from-file\n")
    monkeypatch.delenv("HEDDLE_TEST_ANTHROPIC_KEY", raising=False)
    call = {"id": "toolu_1", "name": "calculator", "arguments": {"expression": "1+1"}}
    fake_llm.script("claude", anthropic_reply("Let me compute.", tool_calls=[call]))
    stub = await ai_service(openai_catalog(fake_llm), ai_secrets_file=str(secrets))
    history = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "thinking", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "2"},
    ]
    reply = await stub.Complete(
        request("sonnet", system="be exact", messages=history, tools=TOOLS), timeout=5
    )
    assert reply.text == "Let me compute."
    assert json.loads(reply.tool_calls_json) == [call]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (11, 6)
    assert reply.finish_reason == "tool_calls"
    seen = fake_llm.calls("claude")[-1]
    assert seen.headers["x-api-key"] == "sk-ant-from-file"
    assert seen.headers["anthropic-version"]
    body = seen.body
    assert (body["model"], body["system"], body["max_tokens"]) == (
        "claude-sonnet-4",
        "be exact",
        1024,
    )
    assert body["tools"] == TOOLS
    assert body["messages"][1]["content"][1] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "calculator",
        "input": {"expression": "1+1"},
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "2"}],
    }


async def test_anthropic_streaming_with_tool_use(fake_llm, ai_service) -> None:
    call = {"id": "toolu_2", "name": "calculator", "arguments": {"expression": "3*3"}}
    fake_llm.script("claude", anthropic_stream(["Sure", ", one moment"], tool_call=call))
    stub = await ai_service(openai_catalog(fake_llm))
    chunks = [c async for c in stub.StreamComplete(request("sonnet", prompt="3*3"), timeout=5)]
    assert "".join(c.delta for c in chunks[:-1]) == "Sure, one moment"
    final = chunks[-1].final
    assert json.loads(final.tool_calls_json) == [call]
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (9, 5)
    assert final.finish_reason == "tool_calls"


# ---------------------------------------------------------------------------- reliability


async def test_429_with_retry_after_is_retried(fake_llm, ai_service) -> None:
    fake_llm.script("local", error_reply(429, "slow down", retry_after="0.3"), openai_reply("ok"))
    stub = await ai_service(openai_catalog(fake_llm))
    retries = sample("heddle_llm_retries_total", model="small", provider="local")
    started = time.monotonic()
    reply = await stub.Complete(request("small", prompt="hi"), timeout=5)
    assert reply.text == "ok"
    assert time.monotonic() - started >= 0.3  # waited as Retry-After said, not the 10 ms backoff
    assert len(fake_llm.calls("local")) == 2
    assert list(reply.fallbacks_tried) == []
    assert sample("heddle_llm_retries_total", model="small", provider="local") == retries + 1


async def test_long_retry_after_moves_to_the_fallback_at_once(fake_llm, ai_service) -> None:
    fake_llm.script("primary", error_reply(429, "quota", retry_after="120"))
    stub = await ai_service(chain_catalog(fake_llm))
    started = time.monotonic()
    reply = await stub.Complete(request("main", "spare", prompt="hi"), timeout=5)
    assert time.monotonic() - started < 2
    assert (reply.model, list(reply.fallbacks_tried)) == ("spare", ["main"])


async def test_500_retries_then_falls_back_to_backup(fake_llm, ai_service) -> None:
    fake_llm.script("primary", *[error_reply(500) for _ in range(3)])
    stub = await ai_service(chain_catalog(fake_llm))
    errors = sample("heddle_llm_requests_total", model="main", provider="primary", outcome="error")
    reply = await stub.Complete(request("main", "spare", prompt="hi"), timeout=5)
    assert (reply.text, reply.model, reply.provider) == ("hello", "spare", "backup")
    assert list(reply.fallbacks_tried) == ["main"]
    assert len(fake_llm.calls("primary")) == 3  # max_attempts
    assert (
        sample("heddle_llm_requests_total", model="main", provider="primary", outcome="error")
        == errors + 1
    )
    assert sample("heddle_llm_tokens_total", model="spare", kind="completion") >= 6


async def test_streaming_falls_back_before_the_first_token(fake_llm, ai_service) -> None:
    fake_llm.script("primary", *[error_reply(503) for _ in range(3)])
    stub = await ai_service(chain_catalog(fake_llm))
    chunks = [c async for c in stub.StreamComplete(request("main", "spare", prompt="x"), timeout=5)]
    final = chunks[-1].final
    assert (final.text, final.model, list(final.fallbacks_tried)) == ("hi there", "spare", ["main"])


async def test_model_configured_fallbacks_apply(fake_llm, ai_service) -> None:
    catalog = chain_catalog(fake_llm)
    catalog["models"][0]["fallbacks"] = ["spare"]
    fake_llm.script("primary", *[error_reply(502) for _ in range(3)])
    stub = await ai_service(catalog)
    reply = await stub.Complete(request("main", prompt="hi"), timeout=5)
    assert (reply.model, list(reply.fallbacks_tried)) == ("spare", ["main"])


async def test_breaker_opens_then_half_opens_and_closes(fake_llm, ai_service) -> None:
    catalog = chain_catalog(fake_llm, threshold=2, cooldown=0.4)
    catalog["providers"]["primary"]["max_attempts"] = 1
    fake_llm.script("primary", error_reply(500), error_reply(500))
    stub = await ai_service(catalog)

    async def states() -> dict[str, tuple[bool, str]]:
        listed = await stub.ListModels(ai_pb2.ListModelsRequest(), timeout=5)
        return {m.name: (m.healthy, m.breaker_state) for m in listed.models}

    for _ in range(2):
        reply = await stub.Complete(request("main", "spare", prompt="hi"), timeout=5)
        assert reply.model == "spare"
    assert (await states())["main"] == (False, "open")
    skipped = sample(
        "heddle_llm_requests_total", model="main", provider="primary", outcome="breaker_open"
    )

    reply = await stub.Complete(request("main", "spare", prompt="hi"), timeout=5)
    assert (reply.model, list(reply.fallbacks_tried)) == ("spare", ["main"])
    assert len(fake_llm.calls("primary")) == 2  # the open breaker kept the call away
    assert (
        sample(
            "heddle_llm_requests_total", model="main", provider="primary", outcome="breaker_open"
        )
        == skipped + 1
    )

    time.sleep(0.45)  # noqa: ASYNC251 - the cool-down must pass; nothing else runs
    assert (await states())["main"] == (True, "half_open")
    reply = await stub.Complete(request("main", "spare", prompt="hi"), timeout=5)
    assert (reply.model, list(reply.fallbacks_tried)) == ("main", [])  # the probe succeeded
    assert (await states())["main"] == (True, "closed")


async def test_every_model_down_is_unavailable_with_details(fake_llm, ai_service) -> None:
    catalog = chain_catalog(fake_llm)
    catalog["providers"]["primary"]["max_attempts"] = 1
    catalog["providers"]["backup"]["max_attempts"] = 1
    fake_llm.script("primary", error_reply(500, "primary exploded"))
    fake_llm.script("backup", error_reply(529, "overloaded"))
    stub = await ai_service(catalog)
    # A plain channel: the shared one replays UNAVAILABLE answers, which would re-run the chain.
    async with grpc.aio.insecure_channel(stub.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai_pb2_grpc.AiServiceStub(channel).Complete(
                request("main", "spare", prompt="hi"), timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    error = from_rpc_error(caught.value)
    assert "primary exploded" in error.message
    assert [a["model"] for a in error.details["attempts"]] == ["main", "spare"]


async def test_client_error_is_not_retried_and_is_invalid_argument(fake_llm, ai_service) -> None:
    fake_llm.script("local", error_reply(400, "context length exceeded"))
    stub = await ai_service(openai_catalog(fake_llm))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(request("small", prompt="hi"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context length exceeded" in caught.value.details()
    assert len(fake_llm.calls("local")) == 1


async def test_timeout_is_retried(fake_llm, ai_service) -> None:
    fake_llm.script("local", Reply(delay_s=0.6, body={}))
    stub = await ai_service(openai_catalog(fake_llm, timeout_s=0.2, max_attempts=2))
    reply = await stub.Complete(request("small", prompt="hi"), timeout=5)
    assert reply.text == "hello"
    assert len(fake_llm.calls("local")) == 2


# ---------------------------------------------------------------------------- errors, catalog


async def test_unknown_model_is_not_found_and_names_the_known_ones(ai_service) -> None:
    stub = await ai_service()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(request("gpt-9", prompt="hi"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    error = from_rpc_error(caught.value)
    assert isinstance(error, NotFound)
    assert "gpt-9" in error.message and "echo" in error.message


async def test_bad_messages_are_invalid_argument(ai_service) -> None:
    stub = await ai_service()
    for bad in (
        ai_pb2.CompleteRequest(messages_json=b"{not json"),
        request(messages=[{"role": "robot", "content": "x"}]),
        request(messages=[{"role": "tool", "content": "x"}]),
        ai_pb2.CompleteRequest(),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(bad, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_models_shows_catalog_without_secrets(fake_llm, ai_service, monkeypatch) -> None:
    monkeypatch.setenv("HEDDLE_TEST_OPENAI_KEY", "sk-secret-value")
    stub = await ai_service(openai_catalog(fake_llm))
    listed = await stub.ListModels(ai_pb2.ListModelsRequest(), timeout=5)
    by_name = {m.name: m for m in listed.models}
    assert set(by_name) == {"small", "sonnet", "echo"}
    small = by_name["small"]
    assert (small.provider, small.healthy, small.breaker_state) == ("local", True, "closed")
    info = json.loads(small.info_json)
    assert info["upstream_model"] == "llama-3.1-8b" and info["type"] == "openai"
    assert b"sk-secret-value" not in listed.SerializeToString()


async def test_node_client_maps_results_and_errors(ai_service) -> None:
    stub = await ai_service()
    channel = create_channel(stub.address)
    try:
        client = GrpcAiClient(channel, deadline_s=5)
        reply = await client.complete("echo", prompt="[[tool:current_time]]", tools=TOOLS)
        assert reply["tool_calls"][0]["name"] == "current_time"
        assert reply["model"] == "echo" and reply["usage"]["total_tokens"] > 0
        pieces = [p async for p in client.stream(["echo"], prompt="a b")]
        last = pieces[-1]  # chunks, then the reply
        assert isinstance(last, dict) and last["text"] == "echo: a b"
        with pytest.raises(NodeError) as caught:
            await client.complete("nope", prompt="x")
        assert caught.value.retryable is False and "nope" in caught.value.message
        assert [m["name"] for m in await client.list_models()] == ["echo"]
    finally:
        await channel.close()
    await stub.server.stop(grace=0)
    channel = create_channel(stub.address)
    try:
        with pytest.raises(NodeError) as caught:
            await GrpcAiClient(channel, deadline_s=1).complete("echo", prompt="x")
        assert caught.value.retryable is True
    finally:
        await channel.close()


async def test_a_caller_that_retries_itself_gets_one_attempt_per_model_and_the_logs(
    fake_llm, ai_service, caplog
) -> None:
    """Issue #16 item 11: max_attempts 1 (a node with its own retry policy) makes no provider
    retries; every retry and failure is logged with the caller's ids and handed back."""
    fake_llm.script("local", *[error_reply(503, "overloaded")] * 3)
    stub = await ai_service(openai_catalog(fake_llm))
    ids = {"execution_id": "exec-1", "node_id": "ask"}
    async with grpc.aio.insecure_channel(stub.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai_pb2_grpc.AiServiceStub(channel).Complete(
                request("small", prompt="hi", max_attempts=1, **ids), timeout=5
            )
    assert len(fake_llm.calls("local")) == 1
    error = from_rpc_error(caught.value)
    assert error.message == (
        "no model of the chain could answer (small (local): HTTP 503: overloaded)"
    )
    assert [(r["level"], r["message"], r["service"]) for r in error.details["logs"]] == [
        ("warning", "LLM call to small (local) failed: HTTP 503: overloaded", "ai")
    ]

    # The provider's own attempts (3) when the caller does not retry: each retry is logged.
    reply = await stub.Complete(request("small", prompt="hi", **ids), timeout=5)
    assert reply.text == "hello" and len(fake_llm.calls("local")) == 4
    logs = json.loads(reply.logs_json)
    assert [r["fields"]["attempt"] for r in logs] == [1, 2]
    assert logs[0]["message"].startswith(
        "LLM call to small (local) failed (attempt 1 of 3): HTTP 503: overloaded; retrying in"
    )
    logged = [
        r for r in caplog.records if r.name == "services.ai.router" and r.levelname == "WARNING"
    ]
    assert len(logged) == 3
    assert all((r.execution_id, r.node_id) == ("exec-1", "ask") for r in logged)


async def test_node_client_moves_the_logs_of_a_failed_call_to_the_error(ai_service) -> None:
    stub = await ai_service()
    channel = create_channel(stub.address)
    try:
        with pytest.raises(NodeError) as caught:
            await GrpcAiClient(channel, deadline_s=5).complete(
                "echo", prompt="[[fail:400]]", max_attempts=1
            )
    finally:
        await channel.close()
    assert caught.value.message == (
        "ai: no model of the chain could answer (echo: scripted failure HTTP 400)"
    )
    assert [r["message"] for r in caught.value.logs or []] == [
        "LLM call to echo failed: scripted failure HTTP 400"
    ]
    assert "logs" not in caught.value.details["details"]


async def test_many_long_failures_still_come_back_as_the_error_with_its_details(
    fake_llm, ai_service
) -> None:
    """The error travels in a gRPC trailer: 30 failed attempts with 2,000-character messages
    must not outgrow it (it became RESOURCE_EXHAUSTED without details)."""
    catalog: dict[str, Any] = {"providers": {}, "models": []}
    for name in ("p1", "p2", "p3"):
        catalog["providers"][name] = {
            "type": "openai",
            "base_url": fake_llm.openai_url(name),
            "max_attempts": 10,
            "backoff_initial_s": 0,
            "backoff_max_s": 0,
            "breaker_failure_threshold": 100,
        }
        catalog["models"].append({"name": f"{name}-model", "provider": name})
        fake_llm.script(name, *[error_reply(500, "x" * 2000)] * 10)
    stub = await ai_service(catalog)
    async with grpc.aio.insecure_channel(stub.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai_pb2_grpc.AiServiceStub(channel).Complete(
                request("p1-model", "p2-model", "p3-model", prompt="hi"), timeout=10
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    error = from_rpc_error(caught.value)
    assert [a["model"] for a in error.details["attempts"]] == ["p1-model", "p2-model", "p3-model"]
    logs = error.details["logs"]
    assert logs[0]["message"].startswith("LLM call to p1-model (p1) failed (attempt 1 of 10)")
    assert logs[-1]["message"].endswith("more log records of this call are in the ai service's log")
