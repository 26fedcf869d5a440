"""The execution core: one execution's rules as a pure state machine.

`ExecutionCore.apply(command, now) -> Effects` is the only way an execution moves. It does no
I/O (no asyncio, database, gRPC or metrics): the driver (services/workflow/runner.py) resolves
what needs I/O (secrets, cache look-ups) before it hands a command over, and performs the
effects (persist in one transaction, then dispatch, then relay). Recorded histories of real
executions replay through it in tests/workflow/execution/.
"""

from services.workflow.execution.commands import (
    Begin,
    Checkpoint,
    Command,
    Control,
    DeadlineDue,
    DispatchFailed,
    HumanInput,
    NodeResult,
    Progress,
    Queued,
    Settle,
    StartAttempt,
    TimerDue,
)
from services.workflow.execution.core import (
    OUTCOME_UNKNOWN_ERRORS,
    CoreConfig,
    ExecutionCore,
    ExecutionInfo,
    IllegalTransition,
    InputRejected,
    UnknownCommand,
    dispatch_key,
    retry_delay,
)
from services.workflow.execution.effects import AttemptEnded, CacheStore, Effects, StartedAttempt
from services.workflow.execution.state import (
    DEADLINE_TIMER,
    ExecutionStatus,
    NodeState,
    NodeStatus,
    TimerKind,
)

__all__ = [
    "DEADLINE_TIMER",
    "OUTCOME_UNKNOWN_ERRORS",
    "AttemptEnded",
    "Begin",
    "CacheStore",
    "Checkpoint",
    "Command",
    "Control",
    "CoreConfig",
    "DeadlineDue",
    "DispatchFailed",
    "Effects",
    "ExecutionCore",
    "ExecutionInfo",
    "ExecutionStatus",
    "HumanInput",
    "IllegalTransition",
    "InputRejected",
    "NodeResult",
    "NodeState",
    "NodeStatus",
    "Progress",
    "Queued",
    "Settle",
    "StartAttempt",
    "StartedAttempt",
    "TimerDue",
    "TimerKind",
    "UnknownCommand",
    "dispatch_key",
    "retry_delay",
]
