"""A fork's link to the execution and node it was forked from, kept in the new execution's
`trigger` (`fork:<execution id as 22 base64url characters>/<node id>`, within the column's
100 characters for any node id of at most 64)."""

from __future__ import annotations

import base64
import uuid

PREFIX = "fork:"


def forks_prefix(execution_id: str) -> str:
    """The start of the trigger of every fork of execution_id."""
    packed = base64.urlsafe_b64encode(uuid.UUID(execution_id).bytes).decode().rstrip("=")
    return f"{PREFIX}{packed}/"


def fork_trigger(execution_id: str, node_id: str) -> str:
    return forks_prefix(execution_id) + node_id


def forked_from(trigger: str) -> dict[str, str] | None:
    """{execution_id, node_id} of a fork's trigger; None for any other trigger."""
    if not trigger.startswith(PREFIX) or "/" not in trigger:
        return None
    packed, node_id = trigger.removeprefix(PREFIX).split("/", 1)
    try:
        execution_id = uuid.UUID(bytes=base64.urlsafe_b64decode(packed + "==")).hex
    except ValueError:
        return None
    return {"execution_id": str(uuid.UUID(execution_id)), "node_id": node_id}
