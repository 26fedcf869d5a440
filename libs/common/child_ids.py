"""The id of a child execution, derived from its parent's idempotency key.

A node that starts a child execution (an agent delegating to another agent or to a workflow)
keys the start with ``<execution>/<node>/<step>`` so a replayed call finds the same child; the
id follows from that key too, so the node can journal and announce the child's id BEFORE it
starts it (its ``agent.step`` tool_call event names the child), and the workflow service
gives the child exactly that id.
"""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("0c3b7f52-8a61-4d0e-9f7b-b15dc41d0001")


def child_execution_id(tenant_id: str, idempotency_key: str) -> str:
    """The id of the child execution started under idempotency_key in tenant_id."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant_id or 'default'}\n{idempotency_key}"))
