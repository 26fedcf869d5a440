"""Anthropic Messages API (``POST /v1/messages``), with tool use and SSE streaming."""

from __future__ import annotations

import json
from typing import Any

from services.ai.providers.base import (
    ChatRequest,
    ChatResult,
    HttpProvider,
    ProviderError,
    StreamAccumulator,
    Usage,
    parse_arguments,
)

API_VERSION = "2023-06-01"
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
}
_RETRYABLE_ERRORS = ("overloaded_error", "api_error", "rate_limit_error")


def to_anthropic(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(system, messages): system prompts are lifted out; tool results become user turns;
    consecutive turns of one role are merged, as the API wants them to alternate."""
    system: list[str] = []
    wire: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if wire and wire[-1]["role"] == role:
            wire[-1]["content"].extend(blocks)
        else:
            wire.append({"role": role, "content": blocks})

    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "system":
            system.append(content)
        elif role == "tool":
            result = {"type": "tool_result", "tool_use_id": message.get("tool_call_id", "")}
            add("user", [{**result, "content": content}])
        elif role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
            blocks += [
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": call["name"],
                    "input": call.get("arguments") or {},
                }
                for call in message.get("tool_calls") or []
            ]
            add("assistant", blocks)
        else:
            add("user", [{"type": "text", "text": content}])
    return "\n\n".join(system), wire


def to_anthropic_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": tool["name"],
            "description": tool.get("description", ""),
            "input_schema": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        for tool in tools
    ]


class AnthropicProvider(HttpProvider):
    kind = "anthropic"
    path = "/v1/messages"

    def __init__(self, name: str, *, default_max_tokens: int = 1024, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.default_max_tokens = default_max_tokens

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def build_body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        system, messages = to_anthropic(request.messages)
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "max_tokens": request.max_tokens or self.default_max_tokens,
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.tools:
            body["tools"] = to_anthropic_tools(request.tools)
        if stream:
            body["stream"] = True
        return body

    def parse_response(self, body: dict[str, Any]) -> ChatResult:
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in body.get("content") or []:
            if block.get("type") == "text":
                text.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                calls.append(
                    {
                        "id": block.get("id", ""),
                        "name": block.get("name", ""),
                        "arguments": parse_arguments(block.get("input")),
                    }
                )
        usage = body.get("usage") or {}
        return ChatResult(
            text="".join(text),
            tool_calls=calls,
            usage=Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)),
            finish_reason=_FINISH.get(body.get("stop_reason") or "end_turn", "stop"),
        )

    def new_stream(self) -> StreamAccumulator:
        return _AnthropicStream()


class _AnthropicStream(StreamAccumulator):
    def __init__(self) -> None:
        self.text: list[str] = []
        self.blocks: dict[int, dict[str, Any]] = {}
        self.usage = Usage()
        self.stop_reason = "end_turn"

    def feed(self, event: str, data: str) -> str | None:
        payload = json.loads(data)
        kind = payload.get("type", event)
        if kind == "error":
            error = payload.get("error") or {}
            raise ProviderError(
                f"stream error: {error.get('message', error)}",
                retryable=error.get("type") in _RETRYABLE_ERRORS,
            )
        if kind == "message_start":
            usage = (payload.get("message") or {}).get("usage") or {}
            self.usage.prompt_tokens = int(usage.get("input_tokens") or 0)
            self.usage.completion_tokens = int(usage.get("output_tokens") or 0)
        elif kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.blocks[int(payload.get("index", 0))] = {
                    "id": block.get("id", ""),
                    "name": block.get("name", ""),
                    "json": "",
                }
        elif kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta":
                self.text.append(delta.get("text", ""))
                return str(delta.get("text", "")) or None
            if delta.get("type") == "input_json_delta":
                block = self.blocks.get(int(payload.get("index", 0)))
                if block is not None:
                    block["json"] += delta.get("partial_json", "")
        elif kind == "message_delta":
            self.stop_reason = (payload.get("delta") or {}).get("stop_reason") or self.stop_reason
            usage = payload.get("usage") or {}
            if "output_tokens" in usage:
                self.usage.completion_tokens = int(usage["output_tokens"])
        elif kind == "message_stop":
            self.done = True
        return None

    def result(self) -> ChatResult:
        calls = [
            {"id": block["id"], "name": block["name"], "arguments": parse_arguments(block["json"])}
            for _, block in sorted(self.blocks.items())
        ]
        return ChatResult(
            text="".join(self.text),
            tool_calls=calls,
            usage=self.usage,
            finish_reason=_FINISH.get(self.stop_reason, "stop"),
        )
