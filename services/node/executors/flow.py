"""Control-flow nodes: condition, switch, merge, delay."""

from __future__ import annotations

import asyncio
from typing import Any

from libs.common.node_types import DEFAULT_PORT, NodeTypeSpec
from services.node.executors.base import (
    Executor,
    NodeRequest,
    NodeResult,
    Services,
    evaluate_param,
    live_sources,
    object_schema,
)
from services.node.executors.core import EXPRESSION_PARAM

SWITCH_DEFAULT_PORT = "default"


class ConditionExecutor(Executor):
    spec = NodeTypeSpec(
        type="condition",
        title="Condition",
        description="Routes to 'true' or 'false' by the truth of an expression.",
        category="flow",
        params_schema=object_schema({"expression": EXPRESSION_PARAM}, required=["expression"]),
        output_schema=object_schema({"result": {"type": "boolean"}}, required=["result"]),
        output_ports=["true", "false", DEFAULT_PORT],
    )
    raw_params = ("expression",)

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        result = bool(evaluate_param("expression", params["expression"], request.context))
        # 'out' edges are unconditional successors, so they stay live on either branch.
        return NodeResult(
            output={"result": result}, active_ports=["true" if result else "false", DEFAULT_PORT]
        )


def matching_case(value: Any, cases: list[Any]) -> str | None:
    """The port (str of the case) of the first case equal to value, by value or by text."""
    for case in cases:
        if case == value or str(case) == str(value):
            return str(case)
    return None


class SwitchExecutor(Executor):
    spec = NodeTypeSpec(
        type="switch",
        title="Switch",
        description="Routes to the port of the first case equal to the expression's value, "
        "else to 'default'.",
        category="flow",
        params_schema=object_schema(
            {
                "expression": EXPRESSION_PARAM,
                "cases": {
                    "type": "array",
                    "description": "Values to match; each one becomes an output port.",
                    "items": {"type": ["string", "number", "integer", "boolean"]},
                    "uniqueItems": True,
                },
            },
            required=["expression", "cases"],
        ),
        output_schema=object_schema({"value": {}}, required=["value"]),
        output_ports=[SWITCH_DEFAULT_PORT, DEFAULT_PORT],
        dynamic_ports="switch_cases",
    )
    raw_params = ("expression",)

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        value = evaluate_param("expression", params["expression"], request.context)
        port = matching_case(value, params["cases"]) or SWITCH_DEFAULT_PORT
        return NodeResult(output={"value": value}, active_ports=[port, DEFAULT_PORT])


class MergeExecutor(Executor):
    spec = NodeTypeSpec(
        type="merge",
        title="Merge",
        description="Joins branches: 'all' waits for every branch that can still arrive, "
        "'any' continues with the first one.",
        category="flow",
        params_schema=object_schema(
            {
                "mode": {
                    "type": "string",
                    "enum": ["all", "any"],
                    "default": "all",
                    "description": "all: wait for every live branch; any: the first wins.",
                }
            }
        ),
        output_schema=object_schema({"items": {"type": "array"}}, required=["items"]),
        list_input_ports=["in"],
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        # The dispatcher applies the mode by choosing when to run us and which edges are live.
        items = [request.context.get(source) for source in live_sources(request)]
        return NodeResult(output={"items": items})


class DelayExecutor(Executor):
    spec = NodeTypeSpec(
        type="delay",
        title="Delay",
        description="Waits a number of seconds (at most the node's timeout).",
        category="flow",
        params_schema=object_schema(
            {"seconds": {"type": "number", "minimum": 0, "description": "Seconds to wait."}},
            required=["seconds"],
        ),
        output_schema=object_schema({"waited_s": {"type": "number"}}, required=["waited_s"]),
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        # A delay longer than the node's timeout_s is cut by the timeout (a Timeout failure).
        seconds = float(params["seconds"])
        if seconds > 0 and seconds >= services.settings.delay_timer_min_s:
            # A long one is a timer of the workflow service: the node waits (no slot, no task
            # here), and the core succeeds it when the timer is due (ExecutionCore._timer_due).
            limit = request.timeout_s or seconds
            return NodeResult(
                waiting={
                    "prompt": f"delay of {seconds:g} s",
                    "schema": None,
                    "timeout_s": min(seconds, limit),
                    "delay": {"seconds": seconds},
                }
            )
        await asyncio.sleep(seconds)
        return NodeResult(output={"waited_s": seconds})
