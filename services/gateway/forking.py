"""A fork's link to the execution and node it was forked from: the execution's
forked_from_execution_id / forked_from_node (since migration 0020_cag). Before, it was kept in
the new execution's `trigger` as `fork:<execution id as 22 base64url characters>/<node id>`;
the migration moved those rows over, and such a trigger is still read (a workflow replica of
an older release may write one during a rolling upgrade)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

PREFIX = "fork:"
#: The trigger of a fork.
TRIGGER = "fork"


def forked_from_trigger(trigger: str) -> dict[str, str] | None:
    """{execution_id, node_id} of an old fork trigger; None for any other trigger."""
    if not trigger.startswith(PREFIX) or "/" not in trigger:
        return None
    packed, node_id = trigger.removeprefix(PREFIX).split("/", 1)
    try:
        execution_id = uuid.UUID(bytes=base64.urlsafe_b64decode(packed + "==")).hex
    except ValueError:
        return None
    return {"execution_id": str(uuid.UUID(execution_id)), "node_id": node_id}


def forked_from(execution: Any) -> dict[str, str] | None:
    """{execution_id, node_id} a workflow_pb2.Execution was forked from; None if not a fork."""
    if execution.forked_from_execution_id:
        return {
            "execution_id": execution.forked_from_execution_id,
            "node_id": execution.forked_from_node,
        }
    return forked_from_trigger(execution.trigger)
