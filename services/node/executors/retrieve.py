"""The ``retrieve`` node: the chunks of a knowledge base nearest to a query.

It calls the tool service's ``knowledge_search`` tool (the one agents use), so a workflow
and an agent see the same results, each chunk with its source file, position and score and a
citation ``[source#position]``.
"""

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

SCALAR = {"type": ["string", "number", "boolean"]}


class RetrieveExecutor(Executor):
    spec = NodeTypeSpec(
        type="retrieve",
        title="Retrieve",
        description="Finds the chunks of a knowledge base most similar to a query, with their "
        "source file, position, score and a citation.",
        category="ai",
        params_schema=object_schema(
            {
                "knowledge_base": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The knowledge base's id or name.",
                },
                "query": {"type": "string", "minLength": 1, "description": "Templated."},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
                "score_threshold": {
                    "type": "number",
                    "description": "Chunks scoring less (cosine similarity) are left out.",
                },
                "filters": {
                    "type": "object",
                    "default": {},
                    "description": "Metadata key -> value (equality) or list of values (any of).",
                    "additionalProperties": {
                        "anyOf": [SCALAR, {"type": "array", "items": SCALAR, "minItems": 1}]
                    },
                },
            },
            required=["knowledge_base", "query"],
        ),
        output_schema=object_schema(
            {"chunks": {"type": "array"}, "citations": {"type": "array"}},
            required=["chunks", "citations"],
        ),
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        arguments: dict[str, Any] = {
            "knowledge_base": params["knowledge_base"],
            "query": params["query"],
            "top_k": params.get("top_k", 5),
        }
        if params.get("filters"):
            arguments["filters"] = params["filters"]
        if params.get("score_threshold") is not None:
            arguments["score_threshold"] = params["score_threshold"]
        result = await services.tools.call(
            "knowledge_search", arguments, idempotency_key=request.idempotency_key
        )
        return NodeResult(output=result)
