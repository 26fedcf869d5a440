"""AI nodes: llm (one completion). The agent node lives in agent.py."""

from __future__ import annotations

from typing import Any

from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    NodeError,
    NodeRequest,
    NodeResult,
    Services,
    as_text,
    object_schema,
)

MODEL_PARAM = {
    "description": "A model name, or a list tried in order as a fallback chain.",
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
    ],
}
COMPLETION_PARAMS: dict[str, Any] = {
    "model": MODEL_PARAM,
    "provider": {"type": "string", "description": "Provider name; default: from the model."},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "max_tokens": {"type": "integer", "minimum": 1},
}
USAGE_SCHEMA = {"type": "object", "additionalProperties": {"type": "integer"}}
CHAT_MESSAGE = {
    "type": "object",
    "properties": {
        "role": {"enum": ["system", "user", "assistant", "tool"]},
        "content": {},
    },
    "required": ["role"],
}
#: Params of a node that may name a registered agent and a session (llm and agent nodes); the
#: workflow service resolves them at dispatch (services/workflow/agent_dispatch.py) and sets
#: ``history`` (and ``history_dropped`` under a summary policy) from the session.
SESSION_PARAMS: dict[str, Any] = {
    "agent_id": {
        "type": "string",
        "minLength": 1,
        "description": "A registered agent (/api/v1/agents): its model (and, for an agent "
        "node, its instructions, tools and limits) fill the params not given here.",
    },
    "agent_version": {"type": "integer", "minimum": 1, "description": "Default: current."},
    "session_id": {
        "type": "string",
        "minLength": 1,
        "description": "A session (/api/v1/agents/{id}/sessions): its history goes before "
        "the prompt, and the prompt and the answer are appended to it.",
    },
    "memory": {
        "type": "object",
        "properties": {
            "last_n": {"type": "integer", "minimum": 0},
            "max_tokens": {"type": "integer", "minimum": 1},
            "summary": {"type": "boolean"},
        },
        "additionalProperties": False,
        "description": "Window over the session's history (default: the agent's policy).",
    },
    "history": {"type": "array", "items": CHAT_MESSAGE, "description": "Set at dispatch."},
    "history_dropped": {"type": "array", "items": CHAT_MESSAGE, "description": "Set at dispatch."},
}
SUMMARY_PROMPT = (
    "Summarise the conversation so far in a few sentences: the facts, names, numbers and "
    "decisions a continuation needs."
)


def provider_attempts(request: NodeRequest) -> int | None:
    """The ai service's attempts per model for this node's calls: 1 when the node has a retry
    policy of its own (``system.max_attempts`` > 1), so its retries and the provider's are
    not multiplied (3 node attempts x 3 provider attempts made 9 calls); None otherwise
    (the provider's policy is then the only one)."""
    system = request.context.get("system")
    node_attempts = system.get("max_attempts") if isinstance(system, dict) else None
    if isinstance(node_attempts, int) and node_attempts > 1:
        return 1
    return None


class LlmExecutor(Executor):
    spec = NodeTypeSpec(
        type="llm",
        title="LLM",
        description="One completion from a language model.",
        category="ai",
        params_schema=object_schema(
            {
                **COMPLETION_PARAMS,
                **SESSION_PARAMS,
                "prompt": {
                    "type": "string",
                    "description": "The user prompt (templated).",
                    "x-multiline": True,
                },
                "messages": {
                    "type": "array",
                    "items": CHAT_MESSAGE,
                    "description": "A chat history (role, content), sent before the prompt.",
                },
                "system": {
                    "type": "string",
                    "description": "System instructions.",
                    "x-multiline": True,
                },
            },
            allOf=[
                {"anyOf": [{"required": ["model"]}, {"required": ["agent_id"]}]},
                {"anyOf": [{"required": ["prompt"]}, {"required": ["messages"]}]},
            ],
        ),
        output_schema=object_schema(
            {
                "text": {"type": "string"},
                "usage": USAGE_SCHEMA,
                "model": {"type": "string"},
                "fallbacks_tried": {"type": "array", "items": {"type": "string"}},
            },
            required=["text", "usage", "model"],
        ),
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        if "model" not in params:  # agent_id without a model: dispatch did not resolve it
            raise NodeError("AgentUnresolved", "the node names an agent_id but has no model")
        history = list(params.get("history") or [])
        dropped = params.get("history_dropped")
        if dropped:
            history.insert(0, await _summary(params, dropped, services))
        messages = [*history, *(params.get("messages") or [])]
        arguments: dict[str, Any] = {
            "model": params["model"],
            "prompt": params.get("prompt"),
            "system": params.get("system"),
            "temperature": params.get("temperature"),
            "max_tokens": params.get("max_tokens"),
            "provider": params.get("provider"),
            "tools": None,
            "messages": messages or None,
            "max_attempts": provider_attempts(request),
        }
        stream = getattr(services.ai, "stream", None)
        if request.progress is not None and stream is not None:
            # Tokens as they come, reported as progress (text_chunk events for frontends).
            reply: dict[str, Any] = {}
            async for chunk in stream(**arguments):
                if isinstance(chunk, str):
                    request.progress({"delta": chunk})
                else:
                    reply = chunk
        else:
            reply = await services.ai.complete(**arguments)
        return NodeResult(
            output={
                "text": reply.get("text") or "",
                "usage": reply.get("usage") or {},
                "model": reply.get("model") or "",
                # Which backups were tried before the one that served (empty: the primary).
                "fallbacks_tried": list(reply.get("fallbacks_tried") or []),
            },
            # The ai service's retries and failed models, for the run's logs.
            logs=list(reply.get("logs") or []),
        )


async def _summary(
    params: dict[str, Any], dropped: list[dict[str, Any]], services: Services
) -> dict[str, Any]:
    """The messages a window dropped, summarised by one model call into a system message."""
    transcript = "\n".join(f"{m.get('role')}: {as_text(m.get('content'))}" for m in dropped)
    reply = await services.ai.complete(
        model=params["model"],
        prompt=f"{SUMMARY_PROMPT}\n\n{transcript}",
        provider=params.get("provider"),
    )
    return {
        "role": "system",
        "content": f"Summary of the earlier conversation: {reply.get('text') or ''}",
    }
