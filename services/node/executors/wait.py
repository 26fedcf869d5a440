"""The wait_event node: suspends the node until an event with its name and key arrives.

It waits the way human_input does (a WAITING outcome: the node is persisted `waiting`, holds
no worker slot and no task); POST /api/v1/events resumes it through SubmitInput, and the
event's data becomes the node's output (``{"data": ...}``). See services/log/event_waits.py.
"""

from __future__ import annotations

from typing import Any

from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    NodeRequest,
    NodeResult,
    Services,
    as_text,
    object_schema,
)


class WaitEventExecutor(Executor):
    spec = NodeTypeSpec(
        type="wait_event",
        title="Wait for event",
        description="Waits until an event with this name and correlation key is POSTed to "
        "/api/v1/events (or was, shortly before); its data becomes the node's output.",
        category="human",
        params_schema=object_schema(
            {
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "description": "Event name, e.g. payment.received (templated).",
                },
                "correlation_key": {
                    "type": "string",
                    "maxLength": 500,
                    "default": "",
                    "description": "Which one: e.g. {{ inputs.order_id }} (templated).",
                },
                "timeout_s": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "How long to wait before the node fails; none: forever.",
                },
            },
            required=["name"],
        ),
        output_schema=object_schema({"data": {"description": "The event's data."}}),
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        name = params["name"]
        key = as_text(params.get("correlation_key") or "")
        return NodeResult(
            waiting={
                "prompt": f"waiting for event '{name}'" + (f" ({key})" if key else ""),
                "schema": None,
                "timeout_s": params.get("timeout_s"),
                "event": {"name": name, "correlation_key": key},
            }
        )
