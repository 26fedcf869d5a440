"""The agent node: a model that calls tools until it has an answer (ReAct loop)."""

from __future__ import annotations

import json
from typing import Any

from libs.common.node_types import NodeTypeSpec
from services.node.executors.ai import COMPLETION_PARAMS, provider_attempts
from services.node.executors.base import (
    Executor,
    NodeError,
    NodeRequest,
    NodeResult,
    Services,
    as_text,
    object_schema,
)


def _tool_call_parts(call: dict[str, Any], index: int) -> tuple[str, str, dict[str, Any]]:
    """(id, name, arguments) of a tool call in the flat or the OpenAI nested shape."""
    function = call.get("function") or {}
    name = call.get("name") or function.get("name") or ""
    arguments = call.get("arguments", function.get("arguments")) or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            arguments = {"input": arguments}
    if not isinstance(arguments, dict):
        arguments = {"input": arguments}
    return str(call.get("id") or f"call_{index}"), str(name), arguments


class AgentExecutor(Executor):
    spec = NodeTypeSpec(
        type="agent",
        title="Agent",
        description="A model that calls tools until it has an answer (ReAct loop).",
        category="ai",
        params_schema=object_schema(
            {
                **COMPLETION_PARAMS,
                "instructions": {
                    "type": "string",
                    "description": "System instructions.",
                    "x-multiline": True,
                },
                "prompt": {
                    "type": "string",
                    "description": "The task (templated).",
                    "x-multiline": True,
                },
                "input": {"description": "Alias of prompt; non-text values are sent as JSON."},
                "tools": {
                    "type": "array",
                    "items": {"type": "string"},
                    "uniqueItems": True,
                    "default": [],
                    "description": "Names of the tools the agent may call.",
                },
                "max_steps": {
                    "type": "integer",
                    "minimum": 1,
                    "default": 5,
                    "description": "Model calls before the agent stops.",
                },
            },
            required=["model"],
            anyOf=[{"required": ["prompt"]}, {"required": ["input"]}],
        ),
        output_schema=object_schema(
            {
                "text": {"type": "string"},
                "steps": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"enum": ["tool_call", "tool_result", "final"]},
                        },
                        "required": ["type"],
                    },
                },
            },
            required=["text", "steps"],
        ),
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        task = params["prompt"] if "prompt" in params else as_text(params.get("input"))
        tools = await self._tool_schemas(params["tools"], services)
        max_steps = min(params["max_steps"], services.settings.agent_max_steps)
        messages: list[dict[str, Any]] = [{"role": "user", "content": task}]
        steps: list[dict[str, Any]] = []
        # Every step is also a log record, which the workflow service publishes as an event.
        logs: list[dict[str, Any]] = []

        def record(step: dict[str, Any]) -> None:
            steps.append(step)
            summary = step.get("name") or step.get("text") or ""
            logs.append(
                {"level": "info", "message": f"agent {step['type']}: {summary}", "step": step}
            )

        text = ""
        attempts = provider_attempts(request)
        for step in range(max_steps):
            try:
                reply = await services.ai.complete(
                    model=params["model"],
                    prompt=None,
                    system=params.get("instructions"),
                    temperature=params.get("temperature"),
                    max_tokens=params.get("max_tokens"),
                    provider=params.get("provider"),
                    tools=tools or None,
                    messages=messages,
                    max_attempts=attempts,
                )
            except NodeError as exc:
                # the steps so far belong to the run's logs as much as the failed call's
                exc.logs = [*logs, *(exc.logs or [])] or None
                raise
            logs.extend(reply.get("logs") or [])
            text = reply.get("text") or ""
            calls = reply.get("tool_calls") or []
            if not calls:
                record({"type": "final", "text": text})
                return NodeResult(output={"text": text, "steps": steps}, logs=logs)
            messages.append({"role": "assistant", "content": text, "tool_calls": calls})
            for index, call in enumerate(calls):
                call_id, name, arguments = _tool_call_parts(call, index)
                record({"type": "tool_call", "id": call_id, "name": name, "arguments": arguments})
                # The step and index of the call, after the attempt's key: the same calls of
                # a re-sent attempt (the same model replies) repeat their keys.
                key = f"{request.idempotency_key}/{step}.{index}"
                result = await self._call_tool(name, arguments, params["tools"], services, key)
                record({"type": "tool_result", "id": call_id, "name": name, "result": result})
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call_id,
                        "name": name,
                        "content": as_text(result),
                    }
                )
        record({"type": "final", "text": text, "stopped": "max_steps"})
        logs.append({"level": "warning", "message": f"agent stopped after {max_steps} steps"})
        return NodeResult(output={"text": text, "steps": steps}, logs=logs)

    @staticmethod
    async def _tool_schemas(names: list[str], services: Services) -> list[dict[str, Any]]:
        if not names:
            return []
        available = {tool.get("name"): tool for tool in await services.tools.list()}
        missing = [name for name in names if name not in available]
        if missing:
            raise NodeError(
                "ValidationError",
                f"unknown tools: {', '.join(missing)}",
                retryable=False,
                details={"unknown_tools": missing},
            )
        return [available[name] for name in names]

    @staticmethod
    async def _call_tool(
        name: str, arguments: dict[str, Any], allowed: list[str], services: Services, key: str
    ) -> Any:
        # The model's mistakes (unknown tool, bad arguments) go back to it as the tool's
        # answer so it can correct itself; infrastructure failures fail the node for a retry.
        if name not in allowed:
            return {"error": f"unknown tool '{name}'; available: {', '.join(allowed)}"}
        try:
            return await services.tools.call(name, arguments, idempotency_key=key)
        except NodeError as exc:
            if exc.retryable:
                raise
            return {"error": exc.message}
