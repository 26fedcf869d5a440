"""The offline, deterministic ``echo`` provider: no key, no network.

It answers ``echo: <last user message>``. It can be scripted from the text of the last
user message (or the prompt), so agent workflows and failure handling run offline:

- ``[[tool:NAME {json arguments}]]`` (arguments optional: ``[[tool:current_time]]``) makes
  echo answer with a call of tool NAME instead of text; several directives give several
  calls, in order. Once the conversation ends with tool results, echo answers
  ``echo: tool NAME returned RESULT`` (several results joined with ``; ``), which ends an
  agent loop after one round of tool calls.
- ``[[fail:STATUS]]`` makes the call fail as an HTTP STATUS from a real provider would
  (``[[fail:503]]`` is retryable and trips the breaker, ``[[fail:400]]`` is not).

Usage counts whitespace-separated tokens: every input message for the prompt, the answer
(or the JSON of the tool calls) for the completion.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from services.ai.embeddings import DEFAULT_DIM, HashEmbedder
from services.ai.providers.base import (
    ChatRequest,
    ChatResult,
    EmbedResult,
    Provider,
    ProviderError,
    Usage,
    is_retryable_status,
    whitespace_tokens,
)

_TOOL_DIRECTIVE = re.compile(r"\[\[tool:([A-Za-z0-9_.\-]+)")
_FAIL_DIRECTIVE = re.compile(r"\[\[fail:(\d{3})\]\]")
_WORDS = re.compile(r"\s*\S+")


def parse_tool_directives(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Every ``[[tool:NAME {json}]]`` in text as (name, arguments); malformed ones are text."""
    decoder = json.JSONDecoder()
    calls: list[tuple[str, dict[str, Any]]] = []
    for match in _TOOL_DIRECTIVE.finditer(text):
        rest = text[match.end() :]
        stripped = rest.lstrip()
        arguments: Any = {}
        if not stripped.startswith("]]"):
            try:
                arguments, end = decoder.raw_decode(stripped)
            except ValueError:
                continue
            stripped = stripped[end:].lstrip()
            if not stripped.startswith("]]") or not isinstance(arguments, dict):
                continue
        calls.append((match.group(1), arguments))
    return calls


def _last(messages: list[dict[str, Any]], role: str) -> dict[str, Any] | None:
    return next((m for m in reversed(messages) if m["role"] == role), None)


def _trailing_tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        results.insert(0, message)
    return results


def _tool_names(messages: list[dict[str, Any]]) -> dict[str, str]:
    return {
        call["id"]: call["name"]
        for message in messages
        if message["role"] == "assistant"
        for call in message.get("tool_calls") or []
    }


def echo_answer(messages: list[dict[str, Any]]) -> ChatResult:
    """The scripted answer to a conversation (see the module docstring)."""
    prompt_tokens = whitespace_tokens([m.get("content") or "" for m in messages])
    results = _trailing_tool_results(messages)
    if results:
        names = _tool_names(messages)
        returned = [
            (names.get(m.get("tool_call_id", ""), "unknown"), m.get("content", "")) for m in results
        ]
        text = "echo: " + "; ".join(f"tool {name} returned {value}" for name, value in returned)
        return ChatResult(text=text, usage=Usage(prompt_tokens, whitespace_tokens([text])))

    user = _last(messages, "user")
    content = (user or {}).get("content") or ""
    failure = _FAIL_DIRECTIVE.search(content)
    if failure:
        status = int(failure.group(1))
        raise ProviderError(
            f"scripted failure HTTP {status}",
            retryable=is_retryable_status(status),
            status=status,
        )
    directives = parse_tool_directives(content)
    if directives:
        turn = sum(1 for m in messages if m["role"] == "assistant")
        calls = [
            {"id": f"echo_{turn}_{index}", "name": name, "arguments": arguments}
            for index, (name, arguments) in enumerate(directives)
        ]
        completion = whitespace_tokens([json.dumps(calls)])
        return ChatResult(
            tool_calls=calls,
            usage=Usage(prompt_tokens, completion),
            finish_reason="tool_calls",
        )
    text = f"echo: {content}"
    return ChatResult(text=text, usage=Usage(prompt_tokens, whitespace_tokens([text])))


class EchoProvider(Provider):
    kind = "echo"

    async def complete(self, request: ChatRequest) -> ChatResult:
        return echo_answer(request.messages)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | ChatResult, None]:
        result = echo_answer(request.messages)
        for word in _WORDS.findall(result.text):
            yield word
        yield result

    async def embed(
        self, model: str, texts: Sequence[str], dimensions: int | None = None
    ) -> EmbedResult:
        """The offline hashed n-gram embedder (services/ai/embeddings.py)."""
        if dimensions is not None and not 8 <= dimensions <= 4096:
            raise ProviderError("dimensions must be between 8 and 4096", retryable=False)
        matrix = HashEmbedder(dimensions or DEFAULT_DIM).embed(texts)
        return EmbedResult(matrix.tolist(), whitespace_tokens(texts))
