"""OpenAI-compatible chat completions: OpenAI itself, vLLM, Ollama, LM Studio, llama.cpp...

Only the base URL (and a key, where one is needed) differs between them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from yarl import URL

from services.ai.providers.base import (
    ChatRequest,
    ChatResult,
    EmbedResult,
    HttpProvider,
    ProviderError,
    StreamAccumulator,
    Usage,
    parse_arguments,
)

_FINISH = {"tool_calls": "tool_calls", "function_call": "tool_calls"}


def to_openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role == "tool":
            wire.append(
                {
                    "role": "tool",
                    "tool_call_id": message.get("tool_call_id", ""),
                    "content": message.get("content", ""),
                }
            )
        elif role == "assistant" and message.get("tool_calls"):
            wire.append(
                {
                    "role": "assistant",
                    "content": message.get("content") or None,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {
                                "name": call["name"],
                                "arguments": json.dumps(call.get("arguments") or {}),
                            },
                        }
                        for call in message["tool_calls"]
                    ],
                }
            )
        else:
            wire.append({"role": role, "content": message.get("content", "")})
    return wire


def to_openai_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description", ""),
                "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
            },
        }
        for tool in tools
    ]


def _tool_call(raw: dict[str, Any]) -> dict[str, Any]:
    function = raw.get("function") or {}
    return {
        "id": raw.get("id", ""),
        "name": function.get("name", ""),
        "arguments": parse_arguments(function.get("arguments")),
    }


def _usage(raw: dict[str, Any] | None) -> Usage:
    raw = raw or {}
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
    )


def _finish(reason: str | None, has_tool_calls: bool) -> str:
    if has_tool_calls:
        return "tool_calls"
    return _FINISH.get(reason or "stop", reason or "stop")


class OpenAIProvider(HttpProvider):
    kind = "openai"
    path = "/chat/completions"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def build_body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request.messages),
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.tools:
            body["tools"] = to_openai_tools(request.tools)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def parse_response(self, body: dict[str, Any]) -> ChatResult:
        choices = body.get("choices") or []
        if not choices:
            raise ProviderError("response has no choices", retryable=True)
        message = choices[0].get("message") or {}
        calls = [_tool_call(call) for call in message.get("tool_calls") or []]
        return ChatResult(
            text=message.get("content") or "",
            tool_calls=calls,
            usage=_usage(body.get("usage")),
            finish_reason=_finish(choices[0].get("finish_reason"), bool(calls)),
        )

    def new_stream(self) -> StreamAccumulator:
        return _OpenAIStream()

    async def embed(
        self, model: str, texts: Sequence[str], dimensions: int | None = None
    ) -> EmbedResult:
        """``POST /embeddings``, as OpenAI, vLLM, Ollama (``/v1``) and TEI serve it."""
        body: dict[str, Any] = {"model": model, "input": list(texts), "encoding_format": "float"}
        if dimensions:
            body["dimensions"] = dimensions
        data = await self.post_json(URL(self.base_url + "/embeddings"), body)
        try:
            rows = sorted(data["data"], key=lambda item: int(item.get("index", 0)))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            message = f"malformed embeddings response: {type(error).__name__}: {error}"
            raise ProviderError(message, retryable=True) from error
        if len(vectors) != len(texts):
            message = f"asked for {len(texts)} embeddings, got {len(vectors)}"
            raise ProviderError(message, retryable=True)
        usage = data.get("usage") or {}
        return EmbedResult(vectors, int(usage.get("prompt_tokens") or 0))


class _OpenAIStream(StreamAccumulator):
    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.usage = Usage()
        self.finish_reason: str | None = None

    def feed(self, event: str, data: str) -> str | None:
        if data.strip() == "[DONE]":
            self.done = True
            return None
        chunk = json.loads(data)
        if chunk.get("error"):
            raise ProviderError(f"stream error: {chunk['error']}", retryable=True)
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        delta_text = None
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                delta_text = delta["content"]
                self.text.append(delta_text)
            for fragment in delta.get("tool_calls") or []:
                call = self.calls.setdefault(
                    int(fragment.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                )
                function = fragment.get("function") or {}
                call["id"] = fragment.get("id") or call["id"]
                call["name"] = function.get("name") or call["name"]
                call["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return delta_text

    def result(self) -> ChatResult:
        calls = [
            {
                "id": call["id"],
                "name": call["name"],
                "arguments": parse_arguments(call["arguments"]),
            }
            for _, call in sorted(self.calls.items())
        ]
        return ChatResult(
            text="".join(self.text),
            tool_calls=calls,
            usage=self.usage,
            finish_reason=_finish(self.finish_reason, bool(calls)),
        )
