"""What applying a command asks the driver to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.workflow.execution.state import NodeState, TimerKind


@dataclass(slots=True)
class StartedAttempt:
    """An attempt to send to a node replica (after the batch is persisted)."""

    node_id: str
    node_type: str
    attempt: int
    idempotency_key: str
    #: The context the node renders its params with (the driver adds resolved secrets).
    context: dict[str, Any]
    live_inputs: list[tuple[str, str | None, str | None]]


@dataclass(slots=True)
class AttemptEnded:
    """An attempt in flight ended (observability: close its span, time it)."""

    node_id: str
    node_type: str
    outcome: str
    error: str | None = None


@dataclass(slots=True)
class CacheStore:
    """Store a succeeded node's result (the driver derives the key from node.inputs)."""

    node_id: str
    value: dict[str, Any]
    ttl_s: float | None


@dataclass(slots=True)
class Effects:
    """The effects of one command. `nodes` are the rows changed (whole rows are written)."""

    nodes: dict[str, NodeState] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    execution: dict[str, Any] = field(default_factory=dict)
    attempts: list[StartedAttempt] = field(default_factory=list)
    #: Nodes that became ready to start, in order (the driver starts them as slots allow).
    ready: list[str] = field(default_factory=list)
    #: key -> (kind, attempt, delay in seconds); arming a key replaces its timer.
    arm: dict[str, tuple[TimerKind, int, float]] = field(default_factory=dict)
    disarm: list[str] = field(default_factory=list)
    #: Concurrency slots given back (attempts that ended).
    released: int = 0
    ended: list[AttemptEnded] = field(default_factory=list)
    #: (node_type, status) of every node that reached a terminal status.
    finished: list[tuple[str, str]] = field(default_factory=list)
    #: Node types whose attempt failed and will be retried.
    retried: list[str] = field(default_factory=list)
    cache: list[CacheStore] = field(default_factory=list)
    #: Stop the attempts in flight (the execution ended).
    cancel_dispatches: bool = False
    #: The transitions taken, by name, in order.
    transitions: list[str] = field(default_factory=list)
    #: The execution's status after the command, when it changed.
    status: str | None = None
    #: A Checkpoint command was kept (written with the batch); False: refused (a stale
    #: attempt's report, or a journal delta that does not extend the stored journal).
    checkpointed: bool = False
