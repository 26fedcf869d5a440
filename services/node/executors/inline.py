"""What the nodes that repeat something share (map, loop): the schema of the inline node they
repeat, finding its executor, running one repetition inline or as a child execution, and
naming the repetition in an error it raised."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from services.node.executors.base import (
    ExecutorLookup,
    NodeError,
    NodeExecutor,
    NodeRequest,
    NodeResult,
    Services,
)

WORKFLOW_ID_PARAM = {"type": "string", "minLength": 1, "description": "The workflow to run."}


def inline_node_param(description: str) -> dict[str, Any]:
    """The schema of the `node` param: {type, params} of the node run per repetition."""
    return {
        "type": "object",
        "description": description,
        "properties": {
            # Written by habit on an inline node; ignored: repetition i runs as
            # '<node id>[i]' (its logs, errors and idempotency key say so).
            "id": {"type": "string", "description": "Optional; ignored."},
            "type": {"type": "string", "minLength": 1},
            "params": {"type": "object", "default": {}},
        },
        "required": ["type"],
        "additionalProperties": False,
    }


def inline_executor(
    registry: ExecutorLookup, node_type: str, refused: Collection[str], owner: str
) -> NodeExecutor:
    """The executor of the inline node's type; a ValidationError for a type the owner (map,
    loop) cannot repeat inline (one that waits) or an unknown one."""
    if node_type in refused:
        raise NodeError(
            "ValidationError",
            f"a {owner} cannot repeat a '{node_type}' node inline",
            retryable=False,
        )
    try:
        return registry.get(node_type)
    except LookupError as exc:
        raise NodeError(
            "ValidationError", f"unknown inline node type '{node_type}'", retryable=False
        ) from exc


async def run_inline(
    request: NodeRequest,
    executor: NodeExecutor,
    node: dict[str, Any],
    services: Services,
    *,
    index: int,
    idempotency_key: str,
    context: dict[str, Any],
) -> NodeResult:
    """Run the inline node once as '<node id>[index]', seeing `context` beside the node's."""
    repetition = dataclasses.replace(
        request,
        node_id=f"{request.node_id}[{index}]",
        node_type=node["type"],
        idempotency_key=idempotency_key,
        params=node.get("params") or {},
        context={**request.context, **context},
        checkpoint=None,
    )
    return await executor.execute(repetition, services)


async def run_child(
    request: NodeRequest,
    params: dict[str, Any],
    services: Services,
    *,
    inputs: dict[str, Any],
    idempotency_key: str,
) -> Any:
    """Run params["workflow_id"] once as a child execution (the key finds a child a crashed
    attempt had started) and return its outputs."""
    return await services.workflows.run_child(
        workflow_id=params["workflow_id"],
        inputs=inputs,
        idempotency_key=idempotency_key,
        parent_execution_id=request.execution_id,
        parent_node_id=request.node_id,
        tenant_id=request.tenant_id,
    )


def repetition_error(exc: NodeError, label: str, key: str, index: int) -> NodeError:
    """exc, its message prefixed with '<label> <index>: ' and its details naming the index."""
    return NodeError(
        exc.type,
        f"{label} {index}: {exc.message}",
        retryable=exc.retryable,
        details={**exc.details, key: index},
    )
