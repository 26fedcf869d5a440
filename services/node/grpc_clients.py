"""The node service's clients of the ai and tool services (the AiClient and ToolClient
protocols of ``executors/base.py``) over gRPC.

Failures come back as NodeError: retryable when the other service was unavailable, too
slow or rate limited, so the workflow service's retry policy applies; never for bad input.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from heddle.v1 import ai_pb2, ai_pb2_grpc, tool_pb2, tool_pb2_grpc

from libs.common import jsonutil
from libs.common.errors import (
    DeadlineExceeded,
    HeddleError,
    ResourceExhausted,
    Unavailable,
    from_rpc_error,
)
from libs.common.logging import execution_id_var, node_id_var, tenant_id_var
from services.node.executors.base import NodeError

_RETRYABLE = (Unavailable, DeadlineExceeded, ResourceExhausted)


def node_error(error: grpc.RpcError, service: str) -> NodeError:
    """The NodeError for a failed call to ``service``."""
    domain: HeddleError = from_rpc_error(error)
    type_name = "".join(part.capitalize() for part in domain.code.split("_")) + "Error"
    details = {"service": service, "code": domain.code}
    if domain.details is not None:
        details["details"] = domain.details
    return NodeError(
        type_name,
        f"{service}: {domain.message}",
        retryable=isinstance(domain, _RETRYABLE),
        details=details,
    )


def ai_error(error: grpc.RpcError) -> NodeError:
    """node_error for the ai service, with the log records the failed call came back with
    (its retries, the models that failed) moved from the details to the error's logs."""
    failure = node_error(error, "ai")
    details = failure.details.get("details")
    if isinstance(details, dict) and isinstance(details.get("logs"), list):
        failure.logs = details.pop("logs") or None
    return failure


def _completion(response: ai_pb2.CompleteResponse) -> dict[str, Any]:
    return {
        "text": response.text,
        "usage": {
            "prompt_tokens": response.usage.prompt_tokens,
            "completion_tokens": response.usage.completion_tokens,
            "total_tokens": response.usage.total_tokens,
        },
        "model": response.model,
        "provider": response.provider,
        "tool_calls": jsonutil.loads(response.tool_calls_json) or [],
        "finish_reason": response.finish_reason,
        "fallbacks_tried": list(response.fallbacks_tried),
        "logs": jsonutil.loads(response.logs_json) if response.logs_json else [],
    }


class GrpcAiClient:
    """AiClient over AiService."""

    def __init__(self, channel: grpc.aio.Channel, deadline_s: float) -> None:
        self._stub = ai_pb2_grpc.AiServiceStub(channel)
        self._deadline_s = deadline_s

    @staticmethod
    def _request(
        model: str | list[str],
        prompt: str | None,
        system: str | None,
        temperature: float | None,
        max_tokens: int | None,
        provider: str | None,
        tools: list[dict[str, Any]] | None,
        messages: list[dict[str, Any]] | None,
        max_attempts: int | None,
    ) -> ai_pb2.CompleteRequest:
        request = ai_pb2.CompleteRequest(
            models=[model] if isinstance(model, str) else list(model),
            prompt=prompt or "",
            system=system or "",
            provider=provider or "",
            messages_json=jsonutil.dumps(messages) if messages else b"",
            tools_json=jsonutil.dumps(tools) if tools is not None else b"",
            execution_id=execution_id_var.get() or "",
            node_id=node_id_var.get() or "",
            max_attempts=max_attempts or 0,
        )
        if temperature is not None:
            request.temperature = temperature
        if max_tokens is not None:
            request.max_tokens = max_tokens
        return request

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
        request = self._request(
            model, prompt, system, temperature, max_tokens, provider, tools, messages, max_attempts
        )
        try:
            response = await self._stub.Complete(request, timeout=self._deadline_s)
        except grpc.RpcError as error:
            raise ai_error(error) from error
        return _completion(response)

    async def stream(
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
    ) -> AsyncIterator[str | dict[str, Any]]:
        """Text deltas as they come, then the whole completion as a dict."""
        request = self._request(
            model, prompt, system, temperature, max_tokens, provider, tools, messages, max_attempts
        )
        try:
            async for chunk in self._stub.StreamComplete(request, timeout=self._deadline_s):
                if chunk.HasField("final"):
                    yield _completion(chunk.final)
                elif chunk.delta:
                    yield chunk.delta
        except grpc.RpcError as error:
            raise ai_error(error) from error

    async def list_models(self) -> list[dict[str, Any]]:
        try:
            response = await self._stub.ListModels(
                ai_pb2.ListModelsRequest(), timeout=self._deadline_s
            )
        except grpc.RpcError as error:
            raise node_error(error, "ai") from error
        return [
            {
                "name": m.name,
                "provider": m.provider,
                "healthy": m.healthy,
                "breaker_state": m.breaker_state,
                "info": jsonutil.loads(m.info_json) or {},
            }
            for m in response.models
        ]


class GrpcToolClient:
    """ToolClient over ToolService."""

    def __init__(self, channel: grpc.aio.Channel, deadline_s: float) -> None:
        self._stub = tool_pb2_grpc.ToolServiceStub(channel)
        self._deadline_s = deadline_s

    async def call(self, name: str, arguments: dict[str, Any], idempotency_key: str = "") -> Any:
        request = tool_pb2.CallToolRequest(
            name=name,
            arguments_json=jsonutil.dumps(arguments or {}),
            execution_id=execution_id_var.get() or "",
            node_id=node_id_var.get() or "",
            idempotency_key=idempotency_key,
            # Tools that read tenant data (knowledge_search) answer for this tenant only.
            tenant_id=tenant_id_var.get() or "",
        )
        try:
            response = await self._stub.CallTool(request, timeout=self._deadline_s)
        except grpc.RpcError as error:
            raise node_error(error, "tool") from error
        return jsonutil.loads(response.result_json)

    async def list(self) -> list[dict[str, Any]]:
        try:
            response = await self._stub.ListTools(
                tool_pb2.ListToolsRequest(), timeout=self._deadline_s
            )
        except grpc.RpcError as error:
            raise node_error(error, "tool") from error
        return [
            {
                "name": tool.name,
                "description": tool.description,
                "source": tool.source,
                "input_schema": jsonutil.loads(tool.input_schema_json)
                or {"type": "object", "properties": {}},
                "output_schema": jsonutil.loads(tool.output_schema_json),
            }
            for tool in response.tools
        ]
