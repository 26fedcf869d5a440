"""What an execution reacts to. Each command is handled by exactly one transition of the core;
a new engine feature adds a command and its transition (and nothing else moves).

Commands carry only decoded domain values (no protobuf, no futures): the driver translates what
it receives, and what needs I/O (secrets, cache look-ups) is resolved before the command exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from services.workflow.execution.state import TimerKind


@dataclass(frozen=True, slots=True)
class Begin:
    """The first command of a runner: a new execution starts, a taken-over one resumes."""


@dataclass(frozen=True, slots=True)
class StartAttempt:
    """Start the next attempt of the ready node `node_id` (the head of `ready`), a slot granted.

    secret_error: resolving the secrets its templates read failed, or dispatch refused the
    attempt (a paused agent): the attempt fails at once with this message;
    error_type: that failure's error type (None: SecretError);
    secret_values: the values resolved (replaced by *** in every event from now on);
    cached: a cache hit's stored {"output", "ports"} (the attempt completes at once)."""

    node_id: str
    secret_error: str | None = None
    error_type: str | None = None
    secret_values: tuple[str, ...] = ()
    cached: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class NodeResult:
    """A node service's (or worker's) outcome of one attempt."""

    node_id: str
    attempt: int
    kind: Literal["succeeded", "failed", "waiting", "skipped"]
    output: Any = None
    #: Length of output's JSON, when the driver had it encoded.
    output_size: int | None = None
    #: For succeeded: the ports emitted on (None: all of them).
    ports: tuple[str, ...] | None = None
    waiting: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    logs: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Progress:
    """Tokens a running attempt streamed (published as node.text_chunk once per batch)."""

    node_id: str
    attempt: int
    delta: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A running attempt reported how far it got (a loop after each iteration): `checkpoint`
    is kept on the node row and handed back to its next attempt (after a takeover or a retry)
    as system.checkpoint; `progress` (e.g. {"iteration": 2}) is published as `event`."""

    node_id: str
    attempt: int
    checkpoint: dict[str, Any]
    progress: dict[str, Any]
    #: The event `progress` is published as: node.progress, or agent.step (an agent's
    #: journaled step: {"step", "type", "tokens", "duration_ms", ...}).
    event: str = "node.progress"
    #: Not None: `checkpoint` is {"journal": [new entries]}, to append to the stored journal,
    #: which must have this length (an agent's append-only journal; else it is refused).
    journal_at: int | None = None
    #: False: nothing is kept, `progress` is only published (an agent run that does not
    #: journal its steps, HEDDLE_AGENT_JOURNAL=false: its agent.step events still stream).
    kept: bool = True


@dataclass(frozen=True, slots=True)
class Queued:
    """A sent attempt of a custom type waits for a worker serving its type (`waiting`), or a
    worker took it (not `waiting`): the node is `queued` meanwhile."""

    node_id: str
    attempt: int
    waiting: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DispatchFailed:
    """An attempt could not be delivered or its call broke: `reason` is "Type: message"."""

    node_id: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class TimerDue:
    """A timer the core armed has fired (`key`: a node id, or DEADLINE_TIMER)."""

    key: str
    attempt: int
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class Control:
    action: Literal["cancel", "pause", "resume"]


@dataclass(frozen=True, slots=True)
class HumanInput:
    node_id: str
    data: Any


@dataclass(frozen=True, slots=True)
class DeadlineDue:
    """The tenant's max execution duration has passed."""

    limit_s: float


@dataclass(frozen=True, slots=True)
class Settle:
    """The driver started all it could: emit gathered text chunks and finish when done."""


Command = (
    Begin
    | StartAttempt
    | NodeResult
    | Progress
    | Checkpoint
    | Queued
    | DispatchFailed
    | TimerDue
    | Control
    | HumanInput
    | DeadlineDue
    | Settle
)
