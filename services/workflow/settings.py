"""Settings of the workflow service."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from libs.common.settings import CommonSettings


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkflowSettings(CommonSettings):
    """Options of the workflow service (HEDDLE_ prefix)."""

    replica_id: str = Field(
        default_factory=_default_replica_id,
        description="Identity of this replica in execution leases; unique per process.",
    )
    max_concurrency_per_execution: int = Field(
        default=512, ge=1, description="Nodes of one execution in flight at once."
    )
    max_concurrency_global: int = Field(
        default=4096, ge=1, description="Nodes of all executions in flight at once on a replica."
    )
    dispatch_batch_size: int = Field(
        default=128, ge=1, description="Most node attempts sent to a replica in one call."
    )
    dispatch_retries: int = Field(
        default=3, ge=0, description="Extra attempts a node gets when its replica fails the call."
    )
    node_default_timeout_s: float = Field(
        default=3600.0, gt=0, description="Deadline of a node without timeout_s."
    )
    lease_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description="An execution whose owner missed renewing for this long "
        "is taken over by another replica.",
    )
    recovery_interval_s: float = Field(
        default=2.0, gt=0, description="How often a replica looks for executions to take over."
    )
    max_definition_nodes: int = Field(default=10_000, ge=1, description="Nodes in a definition.")
    max_definition_edges: int = Field(default=50_000, ge=1, description="Edges in a definition.")
    max_call_depth: int = Field(default=10, ge=1, description="Sub-workflow nesting limit.")
    max_page_size: int = Field(default=200, ge=1, description="Largest page a list call returns.")
