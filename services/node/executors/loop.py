"""The loop node: repeats an inline node or a sub-workflow while (or until) an expression holds.

Each iteration sees ``{{ loop.index }}`` (0-based) and ``{{ loop.previous }}`` (the previous
iteration's output, None at first); after it, ``while``/``until`` is evaluated with
``loop.output`` (this iteration's output) as well. ``max_iterations`` is required and capped
by HEDDLE_LOOP_MAX_ITERATIONS; reaching it while the condition still asks for more fails the
node, naming it.

Durability: after every iteration the attempt reports a checkpoint, ``{"checkpoint":
{"index", "previous", "outputs", "iterations"}}`` on its progress channel (the Work stream's
PROGRESS message) and, on a work stream, waits until the workflow service acknowledges it committed
(WorkRequest.acks) before the next iteration acts; an attempt that is handed a checkpoint
back (``request.checkpoint``) starts at the iteration after it. A sub-workflow iteration's
child execution is keyed by ``<execution>/<node>/loop/<index>``, so an iteration re-run
after a crash finds the child it had started instead of starting another.

Visibility: ``iterations`` keeps a record per iteration run (index, status, attempt,
started_at, duration_ms, and the error of a failed one; the output is ``outputs[index]``),
which the gateway shows as the node detail's ``iterations``; each report is published as a
``node.iteration`` event carrying the record and the output when it is small (16 KB). A
failed iteration is reported too before the node fails, so a retry's list keeps it.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from libs.common import jsonutil
from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    ExecutorLookup,
    NodeError,
    NodeRequest,
    NodeResult,
    Services,
    evaluate_param,
    object_schema,
    save_checkpoint,
)
from services.node.executors.inline import (
    WORKFLOW_ID_PARAM,
    inline_executor,
    inline_node_param,
    repetition_error,
    run_child,
    run_inline,
)

_UNSUPPORTED_INLINE = frozenset({"human_input", "wait_event", "loop"})
#: An iteration's output rides on its node.iteration event up to this size (as node.completed
#: carries a node's output up to the workflow service's 16 KB).
ITERATION_EVENT_OUTPUT_LIMIT = 16 * 1024


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
                "node": inline_node_param("The inline node run per iteration: {type, params}."),
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
        inline = (
            inline_executor(self.registry, node["type"], _UNSUPPORTED_INLINE, "loop")
            if node is not None
            else None
        )
        saved = request.checkpoint or {}
        index = int(saved.get("index", 0))
        previous = saved.get("previous")
        outputs: list[Any] = list(saved.get("outputs") or [])
        iterations: list[dict[str, Any]] = list(saved.get("iterations") or [])
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
            started_at = dt.datetime.now(dt.UTC)
            clock = time.monotonic()
            try:
                if node is None or inline is None:
                    output = await run_child(
                        request,
                        params,
                        services,
                        inputs={"loop": loop},
                        idempotency_key=_iteration_key(request, index),
                    )
                else:
                    result = await run_inline(
                        request,
                        inline,
                        node,
                        services,
                        index=index,
                        idempotency_key=_iteration_key(request, index),
                        context={"loop": loop},
                    )
                    output = result.output
                    logs.extend({**record, "iteration": index} for record in result.logs)
                again = self._go_on(request, params, {**loop, "output": output})
            except NodeError as exc:
                error = repetition_error(exc, "iteration", "iteration", index)
                record = _record(request, index, "failed", started_at, clock)
                record["error"] = {"type": error.type, "message": error.message}
                iterations.append(record)
                # The failed iteration stays in the list a retry (handed this) goes on with.
                await save_checkpoint(
                    request,
                    {
                        **_event(record, None),
                        "checkpoint": {
                            "index": index,
                            "previous": previous,
                            "outputs": list(outputs),
                            "iterations": list(iterations),
                        },
                    },
                )
                raise error from exc
            outputs.append(output)
            record = _record(request, index, "succeeded", started_at, clock)
            iterations.append(record)
            previous = output
            index += 1
            # Committed before the next iteration acts (where the channel acknowledges).
            await save_checkpoint(
                request,
                {
                    **_event(record, output),
                    # Copies: the lists grow on while the checkpoint is on its way.
                    "checkpoint": {
                        "index": index,
                        "previous": previous,
                        "outputs": list(outputs),
                        "iterations": list(iterations),
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


def _iteration_key(request: NodeRequest, index: int) -> str:
    # No attempt in the key: an iteration re-run after a crash finds the child it started.
    return f"{request.execution_id}/{request.node_id}/loop/{index}"


def _record(
    request: NodeRequest, index: int, status: str, started_at: dt.datetime, clock: float
) -> dict[str, Any]:
    """What the checkpoint keeps of one iteration (its output is in `outputs[index]`)."""
    return {
        "index": index,
        "status": status,
        "attempt": request.attempt,
        "started_at": started_at.isoformat(),
        "duration_ms": round((time.monotonic() - clock) * 1000, 3),
    }


def _event(record: dict[str, Any], output: Any) -> dict[str, Any]:
    """The node.iteration event of an iteration: its record, with its output when small."""
    data: dict[str, Any] = {"event": "node.iteration", "iteration": record["index"], **record}
    if record["status"] == "succeeded":
        if len(jsonutil.dumps(output)) <= ITERATION_EVENT_OUTPUT_LIMIT:
            data["output"] = output
        else:
            data["output_truncated"] = True
    return data
