"""The state of one execution: statuses as enums and the in-memory mirror of node rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.workflow.models import NodeRunRow


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class NodeStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CACHED = "cached"
    CANCELLED = "cancelled"


FINAL_EXECUTION = frozenset(
    {ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)
TERMINAL_NODE = frozenset(
    {
        NodeStatus.SUCCEEDED,
        NodeStatus.FAILED,
        NodeStatus.SKIPPED,
        NodeStatus.CACHED,
        NodeStatus.CANCELLED,
    }
)
#: Statuses whose output downstream templates may read.
WITH_OUTPUT = frozenset({NodeStatus.SUCCEEDED, NodeStatus.CACHED, NodeStatus.FAILED})


class TimerKind(StrEnum):
    RETRY = "retry"
    INPUT_TIMEOUT = "input_timeout"
    DEADLINE = "deadline"


#: Key of the execution-wide deadline timer (no node id is empty).
DEADLINE_TIMER = ""


@dataclass(slots=True)
class NodeState:
    """The in-memory mirror of a node_runs row (plus two fields never persisted)."""

    node_id: str
    node_type: str
    status: NodeStatus = NodeStatus.PENDING
    attempt: int = 0
    output: Any = None
    error: dict[str, Any] | None = None
    active_ports: list[str] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    waiting: dict[str, Any] | None = None
    inputs: Any = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    due_at: dt.datetime | None = None
    #: The last checkpoint an attempt reported, handed back to the next one (system.checkpoint).
    checkpoint: dict[str, Any] | None = None
    # Not persisted: dispatch faults absorbed so far, and when the attempt in flight began.
    infra_failures: int = 0
    attempt_started: dt.datetime | None = None
    #: Not persisted: how many entries of checkpoint["journal"] are in the stored row, with
    #: the rest of the checkpoint as it is (None: unknown, the next write stores it whole).
    #: The core resets it whenever it replaces the checkpoint other than by an append.
    journal_written: int | None = None
    #: Not persisted: whether the stored row's columns other than the checkpoint are this
    #: state's (set once a write is committed; the core clears it on any change but a
    #: journal's append): then the next write may append the journal and nothing else.
    row_written: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.status, NodeStatus):
            self.status = NodeStatus(self.status)

    def row(self) -> dict[str, Any]:
        """The persisted columns (everything but the primary key)."""
        return {
            "status": self.status.value,
            "attempt": self.attempt,
            "output": self.output,
            "error": self.error,
            "active_ports": self.active_ports,
            "attempts": self.attempts,
            "waiting": self.waiting,
            "inputs": self.inputs,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "due_at": self.due_at,
            "checkpoint": self.checkpoint,
        }

    def write_row(self) -> tuple[dict[str, Any], int | None]:
        """row() for a writer that appends journals (pg_writer), and the journal length it
        stores: with the stored journal known, ``checkpoint`` is None and ``journal_append``
        carries the new entries only; else ``journal_append`` is None (the whole checkpoint).
        When only the journal changed since the committed row (row_written), the row is
        journal-only: ``at`` and ``journal_append``, no other column. Set journal_written to
        the length, and row_written, once the row is committed."""
        journal = (self.checkpoint or {}).get("journal")
        written = self.journal_written
        if (
            self.row_written
            and isinstance(journal, list)
            and written is not None
            and written <= len(journal)
        ):
            return {"at": written, "journal_append": journal[written:]}, len(journal)
        row = self.row()
        if not isinstance(journal, list):
            row["journal_append"] = None
            return row, None
        if written is not None and written <= len(journal):
            row["checkpoint"] = None
            row["journal_append"] = journal[written:]
        else:
            row["journal_append"] = None
        return row, len(journal)

    @classmethod
    def from_row(cls, row: NodeRunRow) -> NodeState:
        return cls(
            node_id=row.node_id,
            node_type=row.node_type,
            status=NodeStatus(row.status),
            attempt=row.attempt,
            output=row.output,
            error=row.error,
            active_ports=row.active_ports,
            attempts=list(row.attempts or []),
            waiting=row.waiting,
            inputs=row.inputs,
            started_at=row.started_at,
            finished_at=row.finished_at,
            due_at=row.due_at,
            checkpoint=row.checkpoint,
        )
