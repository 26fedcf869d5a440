"""The loop node: repeats an inline node or a sub-workflow while (or until) an expression holds.

Each iteration sees ``{{ loop.index }}`` (0-based) and ``{{ loop.previous }}`` (the previous
iteration's output, None at first); after it, ``while``/``until`` is evaluated with
``loop.output`` (this iteration's output) as well. ``max_iterations`` is required and capped
by HEDDLE_LOOP_MAX_ITERATIONS; reaching it while the condition still asks for more fails the
node, naming it.

Durability: after every iteration the attempt reports a checkpoint, ``{"checkpoint":
{"index", "previous", "outputs"}}`` on its progress channel (the Work stream's PROGRESS
message) and, on a work stream, waits until the workflow service acknowledges it committed
(WorkRequest.acks) before the next iteration acts; an attempt that is handed a checkpoint
back (``request.checkpoint``) starts at the iteration after it. A sub-workflow iteration's
child execution is keyed by ``<execution>/<node>/loop/<index>``, so an iteration re-run
after a crash finds the child it had started instead of starting another.
"""

from __future__ import annotations

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
    evaluate_param,
    object_schema,
    save_checkpoint,
)
from services.node.executors.integration import WORKFLOW_ID_PARAM

_UNSUPPORTED_INLINE = frozenset({"human_input", "wait_event", "loop"})


class LoopExecutor(Executor):
    spec = NodeTypeSpec(
        type="loop",
        title="Loop",
        description="Repeats an inline node or a workflow while (or until) an expression "
        "holds, at most max_iterations times; each iteration sees {{ loop.index }} and "
        "{{ loop.previous }}.",
        category="flow",
        params_schema=object_schema(
            {
                "node": {
                    "type": "object",
                    "description": "The inline node run per iteration: {type, params}.",
                    "properties": {
                        "id": {"type": "string", "description": "Optional; ignored."},
                        "type": {"type": "string", "minLength": 1},
                        "params": {"type": "object", "default": {}},
                    },
                    "required": ["type"],
                    "additionalProperties": False,
                },
                "workflow_id": WORKFLOW_ID_PARAM,
                "while": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Go on while this holds, evaluated after each iteration "
                    "(loop.output is its output), e.g. {{ loop.output.json.state != 'done' }}.",
                },
                "until": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Stop once this holds, evaluated after each iteration.",
                },
                "max_iterations": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Most iterations; reaching it with the condition still "
                    "asking for more fails the node.",
                },
            },
            required=["max_iterations"],
            allOf=[
                {"oneOf": [{"required": ["node"]}, {"required": ["workflow_id"]}]},
                {"oneOf": [{"required": ["while"]}, {"required": ["until"]}]},
            ],
        ),
        output_schema=object_schema(
            {
                "iterations": {"type": "integer"},
                "last": {"description": "The last iteration's output."},
                "outputs": {"type": "array", "description": "Every iteration's output."},
            },
            required=["iterations", "last", "outputs"],
        ),
    )
    # Rendered per iteration, once {{ loop }} exists.
    raw_params = ("node", "while", "until")

    def __init__(self, registry: ExecutorLookup) -> None:
        self.registry = registry

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        limit = services.settings.loop_max_iterations
        max_iterations = int(params["max_iterations"])
        if max_iterations > limit:
            raise NodeError(
                "ValidationError",
                f"loop node '{request.node_id}': max_iterations {max_iterations} is above the "
                f"limit of {limit} (HEDDLE_LOOP_MAX_ITERATIONS)",
                details={"param": "max_iterations"},
            )
        node = params.get("node")
        inline = self._inline_executor(node["type"]) if node is not None else None
        saved = request.checkpoint or {}
        index = int(saved.get("index", 0))
        previous = saved.get("previous")
        outputs: list[Any] = list(saved.get("outputs") or [])
        logs: list[dict[str, Any]] = []
        while True:
            if index >= max_iterations:
                raise NodeError(
                    "LoopLimitError",
                    f"loop node '{request.node_id}' reached max_iterations ({max_iterations}) "
                    "and its condition still asked for another iteration",
                    details={"iterations": index, "max_iterations": max_iterations},
                )
            loop = {"index": index, "previous": previous}
            try:
                if node is None or inline is None:
                    output = await self._run_child(request, params, services, loop)
                else:
                    result = await self._run_inline(request, inline, node, services, loop)
                    output = result.output
                    logs.extend({**record, "iteration": index} for record in result.logs)
            except NodeError as exc:
                raise NodeError(
                    exc.type,
                    f"iteration {index}: {exc.message}",
                    retryable=exc.retryable,
                    details={**exc.details, "iteration": index},
                ) from exc
            outputs.append(output)
            again = self._go_on(request, params, {**loop, "output": output})
            previous = output
            index += 1
            # Committed before the next iteration acts (where the channel acknowledges).
            await save_checkpoint(
                request,
                {
                    "iteration": index - 1,
                    # A copy: the list grows on while the checkpoint is on its way.
                    "checkpoint": {
                        "index": index,
                        "previous": previous,
                        "outputs": list(outputs),
                    },
                },
            )
            if not again:
                break
        return NodeResult(
            output={"iterations": index, "last": previous, "outputs": outputs}, logs=logs
        )

    @staticmethod
    def _go_on(request: NodeRequest, params: dict[str, Any], loop: dict[str, Any]) -> bool:
        context = {**request.context, "loop": loop}
        if "while" in params:
            return bool(evaluate_param("while", params["while"], context))
        return not bool(evaluate_param("until", params["until"], context))

    def _inline_executor(self, node_type: str) -> NodeExecutor:
        if node_type in _UNSUPPORTED_INLINE:
            raise NodeError(
                "ValidationError",
                f"a loop cannot repeat a '{node_type}' node inline",
                retryable=False,
            )
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
        loop: dict[str, Any],
    ) -> NodeResult:
        iteration = dataclasses.replace(
            request,
            node_id=f"{request.node_id}[{loop['index']}]",
            node_type=node["type"],
            idempotency_key=f"{request.execution_id}/{request.node_id}/loop/{loop['index']}",
            params=node.get("params") or {},
            context={**request.context, "loop": loop},
            checkpoint=None,
        )
        return await executor.execute(iteration, services)

    @staticmethod
    async def _run_child(
        request: NodeRequest, params: dict[str, Any], services: Services, loop: dict[str, Any]
    ) -> Any:
        return await services.workflows.run_child(
            workflow_id=params["workflow_id"],
            inputs={"loop": loop},
            idempotency_key=f"{request.execution_id}/{request.node_id}/loop/{loop['index']}",
            parent_execution_id=request.execution_id,
            parent_node_id=request.node_id,
            tenant_id=request.tenant_id,
        )
