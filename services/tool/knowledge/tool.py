"""The ``knowledge_search`` tool (agents, and the ``retrieve`` node, call it) and the Embed
client the tool service uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from heddle.v1 import ai_pb2, ai_pb2_grpc

from libs.common.errors import from_rpc_error
from services.tool.knowledge.ingest import MAX_TOP_K
from services.tool.knowledge.service import KnowledgeManager
from services.tool.registry import Tool, ToolRegistry, call_tenant

SCALAR = {"type": ["string", "number", "boolean"]}


class GrpcEmbed:
    """(model, texts) -> vectors over the ai service's Embed."""

    def __init__(self, channel: grpc.aio.Channel, deadline_s: float) -> None:
        self._stub = ai_pb2_grpc.AiServiceStub(channel)
        self._deadline_s = deadline_s

    async def __call__(self, model: str, texts: list[str]) -> Sequence[Sequence[float]]:
        try:
            response = await self._stub.Embed(
                ai_pb2.EmbedRequest(model=model, texts=texts, tenant_id=call_tenant.get()),
                timeout=self._deadline_s,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return [list(e.values) for e in response.embeddings]


def register_knowledge_search(registry: ToolRegistry, manager: KnowledgeManager) -> None:
    async def search(arguments: dict[str, Any]) -> dict[str, Any]:
        chunks = await manager.retrieve(
            call_tenant.get(),
            arguments["knowledge_base"],
            arguments["query"],
            top_k=arguments.get("top_k", 5),
            score_threshold=arguments.get("score_threshold"),
            filters=arguments.get("filters"),
        )
        return {"chunks": chunks, "citations": [c["citation"] for c in chunks]}

    registry.register(
        Tool(
            name="knowledge_search",
            description="Search a knowledge base for the passages most relevant to a query. "
            "Each chunk has its text, score, source file and position, and a citation "
            "[source#position] to quote in the answer.",
            input_schema={
                "type": "object",
                "properties": {
                    "knowledge_base": {
                        "type": "string",
                        "minLength": 1,
                        "description": "The knowledge base's id or name.",
                    },
                    "query": {"type": "string", "minLength": 1},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
                    "score_threshold": {"type": "number"},
                    "filters": {
                        "type": "object",
                        "description": "Metadata key -> value (equality) or list (any of).",
                        "additionalProperties": {
                            "anyOf": [SCALAR, {"type": "array", "items": SCALAR, "minItems": 1}]
                        },
                    },
                },
                "required": ["knowledge_base", "query"],
                "additionalProperties": False,
            },
            output_schema={
                "type": "object",
                "properties": {"chunks": {"type": "array"}, "citations": {"type": "array"}},
                "required": ["chunks", "citations"],
            },
            handler=search,
        )
    )
