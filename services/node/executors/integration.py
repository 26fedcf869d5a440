"""Nodes that run something else: tool, subworkflow, map."""

from __future__ import annotations

import asyncio
from typing import Any

from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    ExecutorLookup,
    NodeError,
    NodeRequest,
    NodeResult,
    Services,
    object_schema,
)
from services.node.executors.inline import (
    WORKFLOW_ID_PARAM,
    inline_executor,
    inline_node_param,
    repetition_error,
    run_child,
    run_inline,
)


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
                "node": inline_node_param("The inline node run per item: {type, params}."),
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
        inline = (
            inline_executor(self.registry, node["type"], ("human_input",), "map")
            if node is not None
            else None
        )
        logs: list[dict[str, Any]] = []

        async def run_item(index: int, item: Any) -> Any:
            async with semaphore:
                try:
                    if node is None or inline is None:
                        return await run_child(
                            request,
                            params,
                            services,
                            inputs={"item": item, "index": index},
                            idempotency_key=f"{request.execution_id}/{request.node_id}/{index}",
                        )
                    result = await run_inline(
                        request,
                        inline,
                        node,
                        services,
                        index=index,
                        idempotency_key=f"{request.idempotency_key}/{index}",
                        context={"item": item, "index": index},
                    )
                except NodeError as exc:
                    raise repetition_error(exc, "item", "index", index) from exc
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
