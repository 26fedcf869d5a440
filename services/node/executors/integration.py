"""Nodes that run something else: tool, subworkflow, map."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    ExecutorLookup,
    NodeError,
    NodeExecutor,
    NodeRequest,
    NodeResult,
    Services,
    object_schema,
)

WORKFLOW_ID_PARAM = {"type": "string", "minLength": 1, "description": "The workflow to run."}


class ToolExecutor(Executor):
    spec = NodeTypeSpec(
        type="tool",
        title="Tool",
        description="Calls a tool of the tool service.",
        category="integration",
        params_schema=object_schema(
            {
                "name": {"type": "string", "minLength": 1, "description": "The tool's name."},
                "arguments": {
                    "type": "object",
                    "default": {},
                    "description": "Arguments matching the tool's input schema (templated).",
                },
            },
            required=["name"],
        ),
        output_schema=object_schema({"result": {}}, required=["result"]),
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        result = await services.tools.call(
            params["name"], params["arguments"], idempotency_key=request.idempotency_key
        )
        return NodeResult(output={"result": result})


class SubworkflowExecutor(Executor):
    spec = NodeTypeSpec(
        type="subworkflow",
        title="Sub-workflow",
        description="Runs another workflow as a child execution and returns its outputs.",
        category="integration",
        params_schema=object_schema(
            {
                "workflow_id": WORKFLOW_ID_PARAM,
                "inputs": {"type": "object", "default": {}, "description": "The child's inputs."},
            },
            required=["workflow_id"],
        ),
        output_schema={"type": "object", "description": "The child execution's outputs."},
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        # No attempt in the key: a retried attempt re-attaches to the same child execution.
        outputs = await services.workflows.run_child(
            workflow_id=params["workflow_id"],
            inputs=params["inputs"],
            idempotency_key=f"{request.execution_id}/{request.node_id}",
            parent_execution_id=request.execution_id,
            parent_node_id=request.node_id,
            tenant_id=request.tenant_id,
        )
        return NodeResult(output=outputs)


class MapExecutor(Executor):
    spec = NodeTypeSpec(
        type="map",
        title="Map",
        description="Runs an inline node or a workflow once per item, concurrently; the "
        "inline node sees {{ item }} and {{ index }}.",
        category="flow",
        params_schema=object_schema(
            {
                "items": {"type": "array", "description": "The list to map over (templated)."},
                "node": {
                    "type": "object",
                    "description": "The inline node run per item: {type, params}.",
                    "properties": {
                        # Written by habit on an inline node; ignored: item i runs as
                        # '<map id>[i]' (its logs, errors and idempotency key say so).
                        "id": {"type": "string", "description": "Optional; ignored."},
                        "type": {"type": "string", "minLength": 1},
                        "params": {"type": "object", "default": {}},
                    },
                    "required": ["type"],
                    "additionalProperties": False,
                },
                "workflow_id": WORKFLOW_ID_PARAM,
                "concurrency": {"type": "integer", "minimum": 1, "maximum": 64, "default": 4},
            },
            required=["items"],
            oneOf=[{"required": ["node"]}, {"required": ["workflow_id"]}],
        ),
        output_schema=object_schema({"results": {"type": "array"}}, required=["results"]),
    )
    # The inline node's params are rendered per item, once {{ item }} exists.
    raw_params = ("node",)

    def __init__(self, registry: ExecutorLookup) -> None:
        self.registry = registry

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        items: list[Any] = params["items"]
        limit = min(params["concurrency"], services.settings.map_max_concurrency)
        semaphore = asyncio.Semaphore(limit)
        node = params.get("node")
        inline = self._inline_executor(node["type"]) if node is not None else None
        logs: list[dict[str, Any]] = []

        async def run_item(index: int, item: Any) -> Any:
            async with semaphore:
                try:
                    if node is None or inline is None:
                        return await self._run_child(request, params, services, index, item)
                    result = await self._run_inline(request, inline, node, services, index, item)
                except NodeError as exc:
                    raise NodeError(
                        exc.type,
                        f"item {index}: {exc.message}",
                        retryable=exc.retryable,
                        details={**exc.details, "index": index},
                    ) from exc
                logs.extend({**record, "index": index} for record in result.logs)
                return result.output

        tasks = [asyncio.create_task(run_item(i, item)) for i, item in enumerate(items)]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            # One failed item (or our own cancellation) stops the others.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return NodeResult(output={"results": results}, logs=logs)

    def _inline_executor(self, node_type: str) -> NodeExecutor:
        if node_type == "human_input":
            raise NodeError("ValidationError", "a map cannot wait for human input", retryable=False)
        try:
            return self.registry.get(node_type)
        except LookupError as exc:
            raise NodeError(
                "ValidationError", f"unknown inline node type '{node_type}'", retryable=False
            ) from exc

    @staticmethod
    async def _run_inline(
        request: NodeRequest,
        executor: NodeExecutor,
        node: dict[str, Any],
        services: Services,
        index: int,
        item: Any,
    ) -> NodeResult:
        item_request = dataclasses.replace(
            request,
            node_id=f"{request.node_id}[{index}]",
            node_type=node["type"],
            idempotency_key=f"{request.idempotency_key}/{index}",
            params=node.get("params") or {},
            context={**request.context, "item": item, "index": index},
        )
        return await executor.execute(item_request, services)

    @staticmethod
    async def _run_child(
        request: NodeRequest, params: dict[str, Any], services: Services, index: int, item: Any
    ) -> Any:
        return await services.workflows.run_child(
            workflow_id=params["workflow_id"],
            inputs={"item": item, "index": index},
            idempotency_key=f"{request.execution_id}/{request.node_id}/{index}",
            parent_execution_id=request.execution_id,
            parent_node_id=request.node_id,
            tenant_id=request.tenant_id,
        )
