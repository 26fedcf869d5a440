"""AiService over gRPC: protobuf <-> the router's domain objects, nothing more."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from heddle.v1 import ai_pb2, ai_pb2_grpc

from libs.common import jsonutil
from libs.common.errors import InvalidArgument
from services.ai.router import Completion, CompletionCall, Router


def _json_list(data: bytes, field: str) -> list[Any] | None:
    try:
        value = jsonutil.loads(data)
    except ValueError as error:
        raise InvalidArgument(
            f"{field} is not valid JSON: {error}", details=[{"path": field, "message": str(error)}]
        ) from error
    if value is not None and not isinstance(value, list):
        raise InvalidArgument(
            f"{field} must be a JSON list", details=[{"path": field, "message": "not a list"}]
        )
    return value


def to_call(request: ai_pb2.CompleteRequest, context: grpc.aio.ServicerContext) -> CompletionCall:
    remaining = context.time_remaining()
    return CompletionCall(
        models=[m for m in request.models if m],
        prompt=request.prompt,
        system=request.system,
        messages=_json_list(request.messages_json, "messages_json") or [],
        tools=_json_list(request.tools_json, "tools_json"),
        temperature=request.temperature if request.HasField("temperature") else None,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        provider=request.provider,
        deadline=time.monotonic() + remaining if remaining is not None else None,
        max_attempts=request.max_attempts if request.max_attempts > 0 else None,
        tags={
            key: value
            for key, value in (
                ("execution_id", request.execution_id),
                ("node_id", request.node_id),
                ("tenant_id", request.tenant_id),
            )
            if value
        },
    )


def to_response(completion: Completion) -> ai_pb2.CompleteResponse:
    return ai_pb2.CompleteResponse(
        text=completion.text,
        model=completion.model,
        provider=completion.provider,
        usage=ai_pb2.Usage(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            total_tokens=completion.total_tokens,
        ),
        tool_calls_json=jsonutil.dumps(completion.tool_calls),
        fallbacks_tried=completion.fallbacks_tried,
        finish_reason=completion.finish_reason,
        logs_json=jsonutil.dumps(completion.logs) if completion.logs else b"",
    )


class AiServicer(ai_pb2_grpc.AiServiceServicer):
    def __init__(self, router: Router) -> None:
        self.router = router

    async def Complete(
        self, request: ai_pb2.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> ai_pb2.CompleteResponse:
        return to_response(await self.router.complete(to_call(request, context)))

    async def StreamComplete(
        self, request: ai_pb2.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ai_pb2.CompleteChunk]:
        async for piece in self.router.stream(to_call(request, context)):
            if isinstance(piece, Completion):
                yield ai_pb2.CompleteChunk(final=to_response(piece))
            else:
                yield ai_pb2.CompleteChunk(delta=piece)

    async def Embed(
        self, request: ai_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> ai_pb2.EmbedResponse:
        remaining = context.time_remaining()
        call = CompletionCall(
            models=[request.model] if request.model else [],
            deadline=time.monotonic() + remaining if remaining is not None else None,
            tags={
                key: value
                for key, value in (
                    ("execution_id", request.execution_id),
                    ("node_id", request.node_id),
                    ("tenant_id", request.tenant_id),
                )
                if value
            },
        )
        result = await self.router.embed(call, list(request.texts), request.dimensions or None)
        return ai_pb2.EmbedResponse(
            embeddings=[ai_pb2.Embedding(values=vector) for vector in result.vectors],
            model=result.model,
            provider=result.provider,
            prompt_tokens=result.prompt_tokens,
            fallbacks_tried=result.fallbacks_tried,
        )

    async def ListModels(
        self, request: ai_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> ai_pb2.ListModelsResponse:
        return ai_pb2.ListModelsResponse(
            models=[
                ai_pb2.ModelInfo(
                    name=model["name"],
                    provider=model["provider"],
                    healthy=model["healthy"],
                    breaker_state=model["breaker_state"],
                    info_json=jsonutil.dumps(model["info"]),
                )
                for model in self.router.models()
            ]
        )
