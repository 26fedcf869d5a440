"""AI nodes: llm (one completion). The agent node lives in agent.py."""

from __future__ import annotations

from typing import Any

from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    NodeRequest,
    NodeResult,
    Services,
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
                "prompt": {
                    "type": "string",
                    "description": "The user prompt (templated).",
                    "x-multiline": True,
                },
                "system": {
                    "type": "string",
                    "description": "System instructions.",
                    "x-multiline": True,
                },
            },
            required=["model", "prompt"],
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
        arguments: dict[str, Any] = {
            "model": params["model"],
            "prompt": params["prompt"],
            "system": params.get("system"),
            "temperature": params.get("temperature"),
            "max_tokens": params.get("max_tokens"),
            "provider": params.get("provider"),
            "tools": None,
            "messages": None,
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
