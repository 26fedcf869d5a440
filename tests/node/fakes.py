"""In-memory stand-ins for the clients of the ai, tool and workflow services."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from services.node.executors.base import NodeError


class FakeAi:
    """Replays scripted replies in order and records every call."""

    def __init__(self, replies: list[dict[str, Any]] | None = None) -> None:
        self.replies = list(replies or [])
        self.calls: list[dict[str, Any]] = []

    async def complete(
        self,
        model: str | list[str],
        prompt: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        provider: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        messages: list[dict[str, Any]] | None = None,
        max_attempts: int | None = None,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt": prompt,
            "system": system,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "provider": provider,
            "tools": tools,
            # Copied: the agent appends to its list, which must not rewrite the history.
            "messages": None if messages is None else list(messages),
            "max_attempts": max_attempts,
        }
        self.calls.append({"model": model, **kwargs})
        if self.replies:
            reply = self.replies.pop(0)
        else:
            reply = {"text": f"echo: {kwargs.get('prompt')}", "tool_calls": []}
        first_model = model[0] if isinstance(model, list) else model
        return {"usage": {"input_tokens": 3, "output_tokens": 2}, "model": first_model, **reply}


class FakeTools:
    def __init__(self, tools: dict[str, Callable[[dict[str, Any]], Any]] | None = None) -> None:
        self.tools = dict(tools or {})
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.keys: list[str] = []

    async def call(self, name: str, arguments: dict[str, Any], idempotency_key: str = "") -> Any:
        self.calls.append((name, arguments))
        self.keys.append(idempotency_key)
        if name not in self.tools:
            raise NodeError("ToolNotFound", f"no tool '{name}'", retryable=False)
        return self.tools[name](arguments)

    async def list(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "description": f"the {name} tool", "input_schema": {"type": "object"}}
            for name in self.tools
        ]


class FakeWorkflows:
    """run_child calls ``handler(workflow_id, inputs)``; tracks peak concurrency."""

    def __init__(
        self,
        handler: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.handler = handler
        self.calls: list[dict[str, Any]] = []
        self.running = 0
        self.peak = 0

    async def run_child(
        self,
        workflow_id: str,
        inputs: dict[str, Any],
        idempotency_key: str,
        parent_execution_id: str,
        parent_node_id: str,
        tenant_id: str = "",
        version: int = 0,
    ) -> dict[str, Any]:
        self.calls.append(
            {
                "workflow_id": workflow_id,
                "inputs": inputs,
                "idempotency_key": idempotency_key,
                "parent_execution_id": parent_execution_id,
                "parent_node_id": parent_node_id,
                **({"version": version} if version else {}),
            }
        )
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if self.handler is None:
                await asyncio.sleep(0)
                return {"echo": inputs}
            return await self.handler(workflow_id, inputs)
        finally:
            self.running -= 1
