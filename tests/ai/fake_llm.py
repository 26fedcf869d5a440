"""Local OpenAI-compatible and Anthropic-style HTTP servers for the AI service tests.

One Starlette app under uvicorn on 127.0.0.1:<free port>. Each simulated vendor lives under
its own prefix (``/<name>/v1/chat/completions`` or ``/<name>/v1/messages``), so several
providers of a fallback chain can point at the same server. Replies are scripted per prefix
as a queue; when the queue is empty, the default reply of the prefix (success) is used.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.helpers import assert_eventually


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    sse: list[dict[str, Any] | str] | None = None  # events; a str is sent as a raw data line
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Seen:
    name: str
    headers: dict[str, str]
    body: dict[str, Any]


def openai_reply(
    text: str = "hello",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    usage: tuple[int, int] = (7, 3),
) -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
            }
            for call in tool_calls
        ]
    return Reply(
        body={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": sum(usage),
            },
        }
    )


def openai_stream(words: list[str], *, usage: tuple[int, int] = (5, 4)) -> Reply:
    events: list[dict[str, Any] | str] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    ]
    events += [{"choices": [{"index": 0, "delta": {"content": word}}]} for word in words]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append(
        {"choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}
    )
    events.append("[DONE]")
    return Reply(sse=events)


def anthropic_reply(
    text: str = "hello",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    usage: tuple[int, int] = (11, 6),
) -> Reply:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [
        {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]}
        for c in tool_calls or []
    ]
    return Reply(
        body={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": content,
            "stop_reason": "tool_use" if tool_calls else "end_turn",
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
        }
    )


def anthropic_stream(
    words: list[str], *, tool_call: dict[str, Any] | None = None, usage: tuple[int, int] = (9, 5)
) -> Reply:
    events: list[dict[str, Any] | str] = [
        {
            "type": "message_start",
            "message": {"usage": {"input_tokens": usage[0], "output_tokens": 1}},
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}
            for w in words
        ),
        {"type": "content_block_stop", "index": 0},
    ]
    if tool_call:
        arguments = json.dumps(tool_call["arguments"])
        half = len(arguments) // 2
        events += [
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": tool_call["id"],
                    "name": tool_call["name"],
                    "input": {},
                },
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": arguments[:half]},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": arguments[half:]},
            },
            {"type": "content_block_stop", "index": 1},
        ]
    stop = "tool_use" if tool_call else "end_turn"
    events += [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop},
            "usage": {"output_tokens": usage[1]},
        },
        {"type": "message_stop"},
    ]
    return Reply(sse=events)


def embeddings_reply(texts: list[str]) -> Reply:
    """OpenAI's embeddings body: [len(text), index, 1.0] per input, listed in reverse order
    (the index field, not the order, says which input a vector is for)."""
    rows = [
        {"object": "embedding", "index": i, "embedding": [float(len(t)), float(i), 1.0]}
        for i, t in enumerate(texts)
    ]
    return Reply(
        body={
            "object": "list",
            "data": rows[::-1],
            "model": "m",
            "usage": {"prompt_tokens": 3 * len(texts), "total_tokens": 3 * len(texts)},
        }
    )


def error_reply(status: int, message: str = "boom", **headers: str) -> Reply:
    return Reply(
        status=status,
        body={"error": {"message": message, "type": "server_error"}},
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )


class FakeLLM:
    """The scripted vendors; ``url`` is set once the server listens."""

    def __init__(self) -> None:
        self.url = ""
        self.queues: dict[str, deque[Reply]] = defaultdict(deque)
        self.seen: list[Seen] = []
        self.app = Starlette(
            routes=[
                Route("/{name}/v1/chat/completions", self._handle, methods=["POST"]),
                Route("/{name}/v1/messages", self._handle, methods=["POST"]),
                Route("/{name}/v1/embeddings", self._handle, methods=["POST"]),
            ]
        )

    def script(self, name: str, *replies: Reply) -> None:
        self.queues[name].extend(replies)

    def calls(self, name: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.name == name]

    def openai_url(self, name: str) -> str:
        return f"{self.url}/{name}/v1"

    def anthropic_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    async def _handle(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.json()
        self.seen.append(Seen(name, dict(request.headers), body))
        if self.queues[name]:
            reply = self.queues[name].popleft()
        elif request.url.path.endswith("/embeddings"):
            reply = embeddings_reply(body["input"])
        elif request.url.path.endswith("/messages"):
            reply = anthropic_stream(["hi", " there"]) if body.get("stream") else anthropic_reply()
        else:
            reply = openai_stream(["hi", " there"]) if body.get("stream") else openai_reply()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.sse is None:
            return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)
        return StreamingResponse(
            _sse(reply.sse), status_code=reply.status, media_type="text/event-stream"
        )


async def _sse(events: list[dict[str, Any] | str]) -> AsyncIterator[str]:
    for event in events:
        if isinstance(event, str):
            yield f"data: {event}\n\n"
        else:
            kind = event.get("type")
            prefix = f"event: {kind}\n" if kind else ""
            yield f"{prefix}data: {json.dumps(event)}\n\n"
        await asyncio.sleep(0)


class RunningServer:
    def __init__(self, fake: FakeLLM) -> None:
        config = uvicorn.Config(
            fake.app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            ws="none",
            http="h11",
        )
        self.server = uvicorn.Server(config)
        self.fake = fake
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FakeLLM:
        task = self.task = asyncio.create_task(self.server.serve())

        def started() -> bool:
            if task.done():
                task.result()  # raises what stopped it
                raise AssertionError("the fake LLM server stopped before it started")
            return bool(self.server.started)

        await assert_eventually(started, timeout=10, message="the fake LLM server did not start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.fake.url = f"http://127.0.0.1:{port}"
        return self.fake

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
