"""The driver of one execution, run by the replica that owns it.

A runner is a single task with an inbox: node outcomes, dispatch failures, timers, control
requests and human input arrive as messages, are translated into commands of the pure core
(services/workflow/execution) and applied one batch at a time, so the state needs no locks.
The core decides; the runner does the I/O: it resolves secrets and cache look-ups before it
hands an attempt to the core, keeps the timers, spans and metrics, and ends each batch in ONE
transaction that persists every node change and every event (the outbox) and checks that this
replica still owns the execution; only then are the newly ready attempts sent to the node
replicas, and then the events relayed. Persist first, act second: a crash at any point leaves
the database describing what was (or may have been) started.

The runner talks to the engine only through `EngineHost`; the engine never reads its fields.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from heddle.v1 import node_pb2
from opentelemetry import trace

from libs.common import expressions, jsonutil
from libs.common.artifacts import REF_MARK
from libs.common.cache import CacheScope
from libs.common.db import utcnow
from libs.common.errors import FailedPrecondition, HeddleError, Unavailable
from libs.common.secrets import redact_outcome
from libs.common.tracing import (
    context_from_traceparent,
    continue_trace,
    current_traceparent,
    spans_wanted,
    tracer,
)
from services.workflow import agent_dispatch
from services.workflow.execution import (
    DEADLINE_TIMER,
    OUTCOME_UNKNOWN_ERRORS,
    AttemptEnded,
    Begin,
    Checkpoint,
    Command,
    CoreConfig,
    Effects,
    ExecutionCore,
    ExecutionInfo,
    ExecutionStatus,
    InputRejected,
    NodeResult,
    NodeState,
    Progress,
    Queued,
    Settle,
    StartAttempt,
    StartedAttempt,
    TimerKind,
    dispatch_key,
    retry_delay,
)
from services.workflow.execution import (
    Control as CoreControl,
)
from services.workflow.execution import (
    DispatchFailed as CoreDispatchFailed,
)
from services.workflow.execution import (
    HumanInput as CoreHumanInput,
)
from services.workflow.execution import (
    TimerDue as CoreTimerDue,
)
from services.workflow.execution.core import EVENT_OUTPUT_LIMIT, MAX_LOG_EVENTS
from services.workflow.metrics import (
    DISPATCH_LATENCY,
    EXECUTIONS,
    EXECUTIONS_RUNNING,
    NODE_DURATION,
    NODE_RETRIES,
    NODES_FINISHED,
)

# The labelled children of the per-node metrics, looked up once per label values: `labels()`
# builds a tuple of str() and takes the metric's lock on every call (~2 us here against ~0.1
# for the cache), twice per node step. prometheus_client keeps every child for good anyway.
_node_duration = functools.cache(NODE_DURATION.labels)
_nodes_finished = functools.cache(NODES_FINISHED.labels)

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from services.workflow.compiled import CompiledWorkflow
    from services.workflow.dispatcher import DispatchHandle, FailureHandler, OutcomeHandler
    from services.workflow.models import ExecutionRow
    from services.workflow.pg_writer import StartGuard
    from services.workflow.settings import WorkflowSettings

__all__ = [
    "EVENT_OUTPUT_LIMIT",
    "MAX_LOG_EVENTS",
    "OUTCOME_UNKNOWN_ERRORS",
    "EngineHost",
    "ExecutionRunner",
    "Flush",
    "LostOwnership",
    "NodeState",
    "cache_key",
    "dispatch_key",
    "retry_delay",
]

log = logging.getLogger(__name__)
_TRACER = tracer("workflow")
#: Statuses of a node whose attempt is out (a queued one waits for a worker).
_IN_FLIGHT = frozenset({"running", "queued"})
#: Statuses of a node that waits for the world (an event, input, a timer): parkable.
_PARKED_NODE = frozenset({"waiting", "retrying"})
#: Node types whose attempt the runner ends itself when it can (ExecutionRunner._run_here).
_RUN_HERE = frozenset({"input", "output"})
#: An output `value` rendered here: one path, `{{ node.field }}` (no filter, no operator).
_PATH_TEMPLATE = re.compile(r"\{\{\s*[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\s*\}\}")
_RESULT_KINDS: dict[int, Literal["succeeded", "failed", "waiting", "skipped"]] = {
    node_pb2.NodeOutcome.SUCCEEDED: "succeeded",
    node_pb2.NodeOutcome.FAILED: "failed",
    node_pb2.NodeOutcome.WAITING: "waiting",
    node_pb2.NodeOutcome.SKIPPED: "skipped",
}


def _epoch(moment: dt.datetime) -> float:
    # A naive datetime from the database is UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)).timestamp()


class LostOwnership(Exception):
    """Another replica took this execution over; this runner must stop touching it."""


def cache_key(
    node_type: str,
    type_version: int,
    params_json: bytes,
    context: dict[str, Any],
    tenant_id: str = "",
) -> str:
    """SHA-256 over tenant, node type, type version, params and resolved inputs.

    The tenant is part of the key: two tenants running the same node on the same inputs
    never share a cached output.
    """
    digest = hashlib.sha256()
    digest.update(f"{tenant_id}\0{node_type}\0{type_version}\0".encode())
    digest.update(params_json)
    digest.update(b"\0")
    digest.update(jsonutil.dumps({k: v for k, v in context.items() if k != "system"}))
    return digest.hexdigest()


# ---- what the runner needs from the engine ------------------------------------------------


@dataclass
class Flush:
    """One batch to write in one transaction, fenced on this replica's ownership."""

    execution_id: str
    tenant_id: str
    workflow_id: str
    trace_id: str
    trace_parent: str
    execution: dict[str, Any]
    nodes: list[NodeState]
    events: list[dict[str, Any]]
    #: A new execution's row and node rows, not written yet: the first batch inserts them
    #: with its own changes applied, in the same statement (Unwritten).
    insert: Unwritten | None = None
    #: Chat turns of nodes that ended in this batch: (session id, messages), appended to
    #: their sessions in the batch's transaction (whoever sees the node's end reads them).
    session_turns: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)


@dataclass
class Unwritten:
    """The rows of an execution a start made but did not write: its runner's first batch
    inserts them (one statement for the start and the first step, instead of two)."""

    execution: dict[str, Any]
    nodes: list[dict[str, Any]]
    #: What the start took as held instead of looking it up, checked by the insert.
    guard: StartGuard | None = None


@dataclass(slots=True)
class GroupCommit:
    """Whether a batch holding only journal writes no attempt waits for (an agent's
    tool_result) waits for the next message, to share its commit (at most cap_s).

    It waits only while the run's last gap, from such a batch to the next message (the
    step's acknowledged write: the model's next reply), fit in cap_s; else — a slower model,
    or no gap seen yet — the batch is written at once, committed during the model call, and
    the gap is measured from it to the next message. A wait that ran out just before that
    write came would make the write queue behind this batch's commit, on the step's critical
    path; and a tool_result waits uncommitted (lost with a crash of this replica: the tool
    runs again, under its idempotency key) only while replies come faster than cap_s."""

    cap_s: float
    #: The last gap (math.inf: nothing came within cap_s); None: none seen yet.
    gap_s: float | None = None
    #: Loop time of a batch written at once, while its gap is being measured.
    since: float | None = None

    def wait_s(self, now: float) -> float:
        """How long the batch in hand waits for the next message (0: written at once)."""
        if self.cap_s and self.gap_s is not None and self.gap_s <= self.cap_s:
            return self.cap_s
        self.since = now
        return 0.0

    def arrived(self, now: float) -> None:
        """A message came: the gap of a batch written at once ends here."""
        if self.since is not None:
            self.gap_s, self.since = now - self.since, None

    def waited(self, gap_s: float) -> None:
        """A wait ended: the next message came after gap_s (math.inf: not within cap_s)."""
        self.gap_s = gap_s


class Dispatcher(Protocol):
    def dispatch(
        self,
        tasks: Sequence[node_pb2.NodeTask],
        on_outcomes: OutcomeHandler,
        on_failure: FailureHandler,
    ) -> DispatchHandle: ...


def _deadline_s(quota_s: float | None, timeout_s: float | None) -> float:
    """The execution's deadline: the shorter of the tenant's maximum duration and the
    workflow's settings.timeout_s (0: none)."""
    limits = [float(limit) for limit in (quota_s, timeout_s) if limit]
    return min(limits) if limits else 0.0


class EngineHost(Protocol):
    """The engine as its runners see it."""

    settings: WorkflowSettings
    #: Sessions of the workflow database (agent and session look-ups at dispatch).
    sessions: async_sessionmaker[AsyncSession]

    @property
    def dispatcher(self) -> Dispatcher: ...

    async def resolve_secrets(self, tenant_id: str, names: set[str] | None) -> dict[str, str]: ...

    async def cache_get(self, scope: CacheScope, key: str) -> bytes | None: ...

    async def cache_set(
        self, scope: CacheScope, key: str, value: bytes, ttl_s: float | None
    ) -> None: ...

    def type_version(self, node_type: str, tenant_id: str = "") -> int: ...

    def reserve_slots(self, wanted: int, runner: ExecutionRunner) -> int: ...

    def release_slots(self, count: int) -> None: ...

    async def persist(self, flush: Flush) -> None:
        """Write the batch; raises LostOwnership when another replica owns the execution."""

    def committed(self, flush: Flush) -> None: ...

    def runner_finished(self, runner: ExecutionRunner) -> None: ...

    async def runner_crashed(
        self, execution_id: str, error: BaseException, redactions: list[str] | None = None
    ) -> None: ...


class Recorder(Protocol):
    """Sees every command applied to the core with its effects (replay fixtures)."""

    def record(self, command: Command, now: dt.datetime, effects: Effects) -> None: ...

    def close(self) -> None: ...


# ---- the runner's inbox ------------------------------------------------------------------


@dataclass
class Outcomes:
    outcomes: Sequence[node_pb2.NodeOutcome]


@dataclass
class DispatchFailed:
    tasks: Sequence[node_pb2.NodeTask]
    reason: str


@dataclass
class TimerFired:
    key: str
    attempt: int
    kind: TimerKind


@dataclass
class ControlRequest:
    action: Literal["cancel", "pause", "resume"]
    done: asyncio.Future[None]


@dataclass
class InputRequest:
    node_id: str
    data: Any
    done: asyncio.Future[None]


@dataclass
class Wake:
    """Concurrency slots were freed: try dispatching again."""


Message = Outcomes | DispatchFailed | TimerFired | ControlRequest | InputRequest | Wake


@dataclass
class _Observed:
    """Observability of a node's attempt in flight: its span, when ready, when sent."""

    span: trace.Span | None = None
    ready_at: float = 0.0
    sent_at: float = 0.0


@dataclass
class _Batch:
    """Effects gathered since the last flush."""

    nodes: dict[str, NodeState] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    execution: dict[str, Any] = field(default_factory=dict)
    to_send: list[node_pb2.NodeTask] = field(default_factory=list)
    replies: list[asyncio.Future[None]] = field(default_factory=list)
    cache_writes: list[tuple[CacheScope, str, bytes, float | None]] = field(default_factory=list)
    #: (session id, messages): chat turns written with the batch that ends their node.
    session_turns: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    #: Journal writes to acknowledge once committed: (attempt key, seq, accepted).
    acks: list[tuple[tuple[str, str, int], int, bool]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.nodes or self.events or self.execution or self.to_send or self.replies or self.acks
        )


class ExecutionRunner:
    """Drives one execution; owned by exactly one replica at a time."""

    #: Set (by a test or scripts/record_history.py) to record every execution's history.
    recorder_factory: ClassVar[Callable[[ExecutionCore], Recorder] | None] = None

    def __init__(
        self,
        engine: EngineHost,
        row: ExecutionRow,
        compiled: CompiledWorkflow,
        nodes: dict[str, NodeState],
    ) -> None:
        self.engine = engine
        settings = engine.settings
        self.id = row.id
        self.row = row
        self.tenant_id = row.tenant_id
        #: 0-9: higher-priority executions take a saturated replica's slots first.
        self.priority: int = row.priority if row.priority is not None else 5
        self.params_json = compiled.params_json
        #: Per node: the params its attempt was sent with when dispatch resolved an agent or
        #: loaded a session into them (services/workflow/agent_dispatch.py).
        self.prepared: dict[str, agent_dispatch.Prepared] = {}
        #: Group commit of journal writes nobody waits for (journal_linger_ms).
        self.group_commit = GroupCommit(engine.settings.journal_linger_ms / 1000)
        #: Whether what was applied since the last flush is only such writes.
        self._lingerable = False
        self.secret_refs = compiled.secrets
        self.core = ExecutionCore(
            ExecutionInfo(
                id=row.id,
                workflow_id=row.workflow_id,
                tenant_id=row.tenant_id,
                status=row.status,
                inputs=row.inputs,
                trace_id=row.trace_id,
                created_at=row.created_at,
                error=row.error,
                last_seq=row.last_seq or 0,
            ),
            compiled.definition,
            compiled.plan,
            nodes,
            CoreConfig(
                dispatch_retries=settings.dispatch_retries,
                concurrency=settings.max_concurrency_per_execution,
                deadline_s=_deadline_s(
                    settings.quota_for(row.tenant_id).max_execution_duration_s,
                    compiled.definition.settings.timeout_s,
                ),
            ),
        )
        self.specs = self.core.specs
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.handles: list[Any] = []
        self.observed: dict[str, _Observed] = {}
        self.batch = _Batch()
        self._trace_root = context_from_traceparent(row.trace_parent)
        factory = type(self).recorder_factory
        self.recorder = factory(self.core) if factory is not None else None
        self.finished = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        #: Set when the runner stopped because the execution only waits (unloaded, not
        #: ended), with the loop time of its next timer (None: none).
        self.parked = False
        self.park_at: float | None = None
        #: Set by a start (Engine.start_execution): the rows the first batch inserts, and
        #: the future that tells the start they are committed (or why not).
        self.unwritten: Unwritten | None = None
        self.persisted: asyncio.Future[None] | None = None

    # ---- read by the engine -------------------------------------------------------------

    @property
    def status(self) -> str:
        return self.core.status.value

    def node_status(self, node_id: str) -> tuple[str | None, Any]:
        """(status, waiting) of a node, or (None, None) when the execution has no such node."""
        node = self.core.nodes.get(node_id)
        return (node.status.value, node.waiting) if node is not None else (None, None)

    @property
    def redactions(self) -> list[str]:
        return self.core.redactions

    def _parkable(self) -> bool:
        """Whether nothing but the world can move the execution on: running, nothing in
        flight, ready or unwritten, and some node waiting for an event, input or a timer."""
        core = self.core
        settings = self.engine.settings
        if (
            not settings.park_waiting
            or core.status != ExecutionStatus.RUNNING
            or core.in_flight
            or core.ready
            or core.progress
            or self.batch
            or self.observed
        ):
            return False
        statuses = {node.status.value for node in core.nodes.values()}
        if statuses & _IN_FLIGHT or not statuses & _PARKED_NODE:
            return False
        dues = []
        for key in core.timers:
            if key == DEADLINE_TIMER:
                started = core.info.created_at or utcnow()
                dues.append(_epoch(started) + core.config.deadline_s)
            elif (due_at := core.nodes[key].due_at) is not None:
                dues.append(_epoch(due_at))
        if not dues:
            self.park_at = None
            return True
        # In the loop's clock (uvloop's timer handles do not tell when they are due).
        wait_s = min(dues) - time.time()
        self.park_at = asyncio.get_running_loop().time() + wait_s
        # A timer due in a moment (a short retry or delay) is cheaper kept than reloaded.
        return wait_s >= settings.park_min_s

    # ---- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"execution-{self.id}")

    async def _run(self) -> None:
        # This task's context (its own copy) carries the execution's trace from here on:
        # the dispatcher's calls, started from it, join the trace.
        continue_trace(self.row.trace_parent, "workflow")
        EXECUTIONS_RUNNING.inc()
        core = self.core
        try:
            self._feed(Begin())
            await self._cycle()
            while not core.final:
                if self.inbox.empty() and self._parkable():
                    # Only waiting (an event, input, a timer): unloaded, reloaded from the
                    # database when that arrives (services/workflow/parking.py).
                    self.parked = True
                    return
                message = await self.inbox.get()
                self.group_commit.arrived(asyncio.get_running_loop().time())
                self._lingerable = True
                self._apply(message)
                while not self.inbox.empty():
                    self._apply(self.inbox.get_nowait())
                if self._lingerable:
                    await self._linger()
                await self._cycle()
            EXECUTIONS.labels(core.status.value).inc()
        except LostOwnership:
            log.warning("execution taken over by another replica", extra={"execution_id": self.id})
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if self.persisted is not None and not self.persisted.done():
                # Failed before its rows were written: nothing to record; the start that
                # waits for them answers with the error.
                self.persisted.set_exception(error)
                return
            log.exception("execution runner crashed", extra={"execution_id": self.id})
            # Never a loop of takeovers: the crash is counted, and the execution fails once
            # it has crashed too often (the guard's own failure is logged, not raised).
            await self.engine.runner_crashed(self.id, error, core.redactions)
        finally:
            if self.persisted is not None and not self.persisted.done():
                # Stopped (the replica stopping) before its first batch was written.
                self.persisted.set_exception(Unavailable("the execution's start was interrupted"))
            EXECUTIONS_RUNNING.dec()
            self._stop_work()
            if self.recorder is not None:
                self.recorder.close()
            self.engine.runner_finished(self)
            if not self.finished.done():
                self.finished.set_result(None)

    def _stop_work(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        for handle in self.handles:
            handle.cancel()
        self.handles.clear()
        self.engine.release_slots(self.core.in_flight)
        self.core.in_flight = 0
        for node_id in list(self.observed):
            self._end_attempt(
                AttemptEnded(node_id, self.core.nodes[node_id].node_type, "abandoned")
            )

    # ---- messages -> commands -----------------------------------------------------------

    async def _linger(self) -> None:
        """Group commit: the batch holds only journal writes no attempt waits for (an
        agent's tool_result): wait for the next message — the step's acknowledged write,
        usually — so that both share one commit, when GroupCommit says it comes soon."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        wait_s = self.group_commit.wait_s(began)
        if not wait_s:
            return
        try:
            async with asyncio.timeout(wait_s):
                message = await self.inbox.get()
        except TimeoutError:
            self.group_commit.waited(math.inf)
            return
        self.group_commit.waited(loop.time() - began)
        self._apply(message)
        while not self.inbox.empty():
            self._apply(self.inbox.get_nowait())

    def _apply(self, message: Message) -> None:
        if not isinstance(message, Outcomes):
            self._lingerable = False
        if isinstance(message, Outcomes):
            for outcome in message.outcomes:
                self._apply_outcome(outcome)
        elif isinstance(message, DispatchFailed):
            for task in message.tasks:
                self._feed(CoreDispatchFailed(task.node_id, task.attempt, message.reason))
        elif isinstance(message, TimerFired):
            self.timers.pop(message.key, None)
            self._feed(CoreTimerDue(message.key, message.attempt, message.kind))
        elif isinstance(message, ControlRequest):
            self.batch.replies.append(message.done)
            self._feed(CoreControl(message.action))
        elif isinstance(message, InputRequest):
            try:
                self._feed(CoreHumanInput(message.node_id, message.data))
            except InputRejected as rejected:
                message.done.set_exception(FailedPrecondition(rejected.message))
                return
            self.batch.replies.append(message.done)
        elif not isinstance(message, Wake):
            raise TypeError(f"unknown runner message {message!r}")

    def _apply_outcome(self, outcome: node_pb2.NodeOutcome) -> None:
        kind = outcome.kind
        if kind == node_pb2.NodeOutcome.PROGRESS:
            progress = jsonutil.loads(outcome.output_json) or {}
            if "ack" in progress or not isinstance(progress.get("journal"), dict):
                self._lingerable = False  # only an agent's unacknowledged step may wait
            delta = progress.get("delta")
            if delta:
                self._feed(Progress(outcome.node_id, outcome.attempt, str(delta)))
            elif any(isinstance(progress.get(k), dict) for k in ("checkpoint", "journal")):
                self._journal(outcome, progress)  # a loop's iteration, an agent's step (delta)
            elif "queued" in progress:  # a custom type's attempt waits for a worker, or not
                waiting, reason = bool(progress["queued"]), str(progress.get("reason", ""))
                self._feed(Queued(outcome.node_id, outcome.attempt, waiting, reason))
            return
        self._lingerable = False
        node = self.core.nodes.get(outcome.node_id)
        if node is None or node.attempt != outcome.attempt or node.status not in _IN_FLIGHT:
            return  # fenced off by the core too; not worth decoding
        if self.core.redactions:
            outcome = redact_outcome(outcome, self.core.redactions)
        result_kind = _RESULT_KINDS.get(kind, "failed")
        logs = tuple(jsonutil.loads(outcome.logs_json) or ()) if outcome.logs_json else ()
        if result_kind == "succeeded":
            result = NodeResult(
                outcome.node_id,
                outcome.attempt,
                "succeeded",
                output=jsonutil.loads(outcome.output_json),
                output_size=len(outcome.output_json),
                ports=None if outcome.all_ports else tuple(outcome.active_ports),
                logs=logs,
            )
            prepared = self.prepared.pop(outcome.node_id, None)
            if prepared is not None and prepared.session_id is not None:
                self.batch.session_turns.append(
                    (
                        prepared.session_id,
                        agent_dispatch.turn_messages(prepared.prompt, result.output),
                    )
                )
        elif result_kind == "waiting":
            result = NodeResult(
                outcome.node_id,
                outcome.attempt,
                "waiting",
                waiting=jsonutil.loads(outcome.waiting_json) or {},
                logs=logs,
            )
        elif result_kind == "skipped":
            result = NodeResult(outcome.node_id, outcome.attempt, "skipped", logs=logs)
        else:
            error = {
                "type": outcome.error.type or "NodeError",
                "message": outcome.error.message,
                "retryable": outcome.error.retryable,
                "details": jsonutil.loads(outcome.error.details_json),
            }
            result = NodeResult(outcome.node_id, outcome.attempt, "failed", error=error, logs=logs)
        self._feed(result)

    def _journal(self, outcome: node_pb2.NodeOutcome, progress: dict[str, Any]) -> None:
        """A checkpoint: kept on the node row; with an "ack" number, acknowledged to the
        attempt once that row is committed. Accepted means the core kept every Checkpoint of
        the report (Effects.checkpointed); it refuses a stale attempt's report and a journal
        delta that does not extend the stored journal, and the attempt then stops (Fenced).
        A report with "durable": false (an agent run not journaling its steps) is only
        published: its entries' events, nothing kept."""
        event = str(progress.get("event") or "node.progress")
        rest = {
            k: v
            for k, v in progress.items()
            if k not in ("checkpoint", "journal", "ack", "event", "step_fields", "durable")
        }
        durable = progress.get("durable") is not False
        delta = progress.get("journal")
        entries: list[Any] = []
        if isinstance(delta, dict):  # {"at": length extended, "entries": [...]}: appended
            at, new = delta.get("at"), delta.get("entries")
            if isinstance(at, int) and isinstance(new, list):
                entries = new
            else:
                at = -1  # malformed: refused by the core like a gap
            checkpoint, journal_at = {"journal": entries}, at
        else:
            checkpoint, journal_at = progress["checkpoint"], None
        fields = progress.get("step_fields")
        derived = journal_at is not None and isinstance(fields, list) and bool(entries)
        if derived and isinstance(fields, list):
            # Each entry's event is its projection on the fields the node names (an agent's
            # step: its type, name, text...): the entries travel once, not beside a copy.
            steps: Any = [
                {k: entry[k] for k in fields if k in entry} if isinstance(entry, dict) else {}
                for entry in entries
            ]
        else:
            steps = rest.get("steps")
        kept = True
        if (
            journal_at is not None
            and isinstance(steps, list)
            and len(steps) == len(entries)
            and (derived or len(entries) > 1)
        ):
            # Several entries in one report ({"steps": [their events]}, or derived): one
            # checkpoint (and agent.step event) each, as if they had come one by one.
            for offset, (entry, step) in enumerate(zip(entries, steps, strict=True)):
                data = step if isinstance(step, dict) else {}
                kept &= self._feed(
                    Checkpoint(
                        outcome.node_id,
                        outcome.attempt,
                        {"journal": [entry]},
                        data,
                        event,
                        journal_at + offset,
                        durable,
                    )
                ).checkpointed
        else:
            kept = self._feed(
                Checkpoint(
                    outcome.node_id, outcome.attempt, checkpoint, rest, event, journal_at, durable
                )
            ).checkpointed
        seq = progress.get("ack")
        if isinstance(seq, int):
            key = (outcome.execution_id, outcome.node_id, outcome.attempt)
            self.batch.acks.append((key, seq, kept))

    def _feed(self, command: Command) -> Effects:
        """Apply one command to the core and perform (or gather) its effects."""
        now = utcnow()
        fx = self.core.apply(command, now)
        if self.recorder is not None:
            self.recorder.record(command, now, fx)
        batch = self.batch
        if fx.nodes:
            batch.nodes.update(fx.nodes)
        if fx.events:
            batch.events.extend(fx.events)
        if fx.execution:
            batch.execution.update(fx.execution)
        if fx.ready:
            ready_at = time.perf_counter()
            for node_id in fx.ready:
                self.observed.setdefault(node_id, _Observed()).ready_at = ready_at
        for key in fx.disarm:
            timer = self.timers.pop(key, None)
            if timer is not None:
                timer.cancel()
        if fx.arm:
            loop = asyncio.get_running_loop()
            for key, (kind, attempt, delay) in fx.arm.items():
                previous = self.timers.pop(key, None)
                if previous is not None:
                    previous.cancel()
                self.timers[key] = loop.call_later(
                    delay, self.inbox.put_nowait, TimerFired(key, attempt, kind)
                )
        if fx.cancel_dispatches:
            for handle in self.handles:
                handle.cancel()
            self.handles.clear()
        if fx.released:
            self.engine.release_slots(fx.released)
        for ended in fx.ended:
            self._end_attempt(ended)
        for node_type, status in fx.finished:
            _nodes_finished(node_type, status).inc()
        for node_type in fx.retried:
            NODE_RETRIES.labels(node_type).inc()
        for store in fx.cache:
            node = self.core.nodes[store.node_id]
            key = self._cache_key(node.node_id, node.inputs or {})
            scope = CacheScope(self.row.workflow_id, node.node_id)
            batch.cache_writes.append((scope, key, jsonutil.dumps(store.value), store.ttl_s))
        return fx

    # ---- dispatch -----------------------------------------------------------------------

    async def _cycle(self) -> None:
        """Start what can start, persist everything, then send the attempts out."""
        await self._take_ready()
        self._feed(Settle())
        if self.batch or self.unwritten is not None:
            await self._flush()

    async def _take_ready(self) -> None:
        core = self.core
        while (room := core.room) > 0:
            granted = self.engine.reserve_slots(room, self)
            if granted == 0:
                return
            # Cache hits complete at once and may make more nodes ready: loop until none. An
            # attempt that fails at once (a missing secret) may end the execution, which
            # clears `ready`: the slots not used go back.
            for used in range(granted):
                if not core.ready or core.status != ExecutionStatus.RUNNING:
                    self.engine.release_slots(granted - used)
                    return
                await self._start_attempt(core.ready[0])

    async def _start_attempt(self, node_id: str) -> None:
        """Resolve what the attempt needs (secrets, a cache hit), then let the core start it."""
        spec = self.specs[node_id]
        context = self.core.attempt_context(node_id)
        secrets: dict[str, str] | None = None
        secret_error: str | None = None
        error_type: str | None = None
        wanted = self.secret_refs[node_id]
        if wanted is not None:
            try:
                secrets = await self.engine.resolve_secrets(self.tenant_id, wanted or None)
            except HeddleError as error:
                secret_error = error.message
        if spec.type in agent_dispatch.AGENT_NODE_TYPES and secret_error is None:
            try:
                prepared = await agent_dispatch.prepare_params(
                    self.engine.sessions,
                    self.tenant_id,
                    spec.type,
                    self.params_json[spec.id],
                    context,
                )
            except agent_dispatch.AgentUnavailable as unavailable:
                secret_error = str(unavailable)
                error_type = unavailable.error_type
            else:
                if prepared is not None:
                    self.prepared[node_id] = prepared
        cached = None
        if spec.cache is not None and secret_error is None:
            inputs = {k: v for k, v in context.items() if k != "system"}
            scope = CacheScope(self.row.workflow_id, node_id)
            hit = await self.engine.cache_get(scope, self._cache_key(node_id, inputs))
            if hit is not None:
                cached = jsonutil.loads(hit)
        fx = self._feed(
            StartAttempt(
                node_id,
                secret_error=secret_error,
                error_type=error_type,
                secret_values=tuple(secrets.values()) if secrets else (),
                cached=cached,
            )
        )
        for attempt in fx.attempts:
            if not self._run_here(attempt, secrets):
                self._send_later(attempt, secrets)

    def _run_here(self, attempt: StartedAttempt, secrets: dict[str, str] | None) -> bool:
        """An input or output node's attempt ends here, in the turn it started, with what
        the node replica's executor of that type would answer: an input node's output is the
        execution's inputs; an output node's is its `value`, a literal or one `{{ a.b }}`
        path (rendered as the replica renders it, against the context as JSON gives it).
        Only a node with no `when`, no timeout and no secrets, whose params are just those,
        whose context holds no artifact reference and whose output is under the claim
        check's threshold (the replica would store it by reference); anything else (another
        template, a render that fails) goes to a node replica as before. The core gets the
        result a replica's outcome would have given; per execution, one work-stream message
        each way and one batch write fewer per such node: the node after it starts (or the
        execution ends) in the same turn."""
        spec = self.specs[attempt.node_id]
        if spec.type not in _RUN_HERE or spec.when or spec.timeout_s or secrets is not None:
            return False
        if spec.type == "input":
            if self.params_json[spec.id] != b"{}":
                return False
            output = attempt.context.get("inputs", {})
        else:
            params = jsonutil.loads(self.params_json[spec.id])
            if not isinstance(params, dict) or list(params) != ["value"]:
                return False
            value = params["value"]
            if not expressions.is_templated(self.params_json[spec.id].decode()):
                output = value
            elif isinstance(value, str) and _PATH_TEMPLATE.fullmatch(value):
                context_json = jsonutil.dumps(attempt.context)
                if REF_MARK in context_json:  # a replica resolves references
                    return False
                try:
                    output = expressions.render(value, jsonutil.loads(context_json))
                except expressions.ExpressionError:
                    return False  # the replica fails the node, with its own message
            else:
                return False
        encoded = jsonutil.dumps(output)
        if len(encoded) > self.engine.settings.claim_check_bytes:
            return False
        # In the trace and the node duration metric like any attempt (_end_attempt ends
        # both when the result below is applied); its span has no node.execute child.
        observed = self.observed.setdefault(attempt.node_id, _Observed())
        observed.span = self._attempt_span(attempt, **{"heddle.ran_in": "workflow"})
        observed.sent_at = time.perf_counter()
        self._feed(
            NodeResult(
                attempt.node_id,
                attempt.attempt,
                "succeeded",
                output=jsonutil.loads(encoded),  # a copy, as decoded from a replica's answer
                output_size=len(encoded),
            )
        )
        return True

    def _attempt_span(self, attempt: StartedAttempt, **attributes: Any) -> trace.Span | None:
        """The attempt's span in the execution's trace (ended with its outcome)."""
        if not spans_wanted():
            return None
        return _TRACER.start_span(
            f"node.attempt {attempt.node_id}",
            context=self._trace_root,
            attributes={
                "heddle.execution_id": self.id,
                "heddle.node_id": attempt.node_id,
                "heddle.node_type": attempt.node_type,
                "heddle.attempt": attempt.attempt,
                **attributes,
            },
        )

    def _send_later(self, attempt: StartedAttempt, secrets: dict[str, str] | None) -> None:
        spec = self.specs[attempt.node_id]
        context = attempt.context
        if secrets is not None:
            # Secrets join the context sent to the node, never node.inputs (which is stored).
            context = {**context, "secrets": secrets}
        observed = self.observed.setdefault(attempt.node_id, _Observed())
        span = observed.span = self._attempt_span(attempt)
        self.batch.to_send.append(
            node_pb2.NodeTask(
                execution_id=self.id,
                workflow_id=self.row.workflow_id,
                node_id=attempt.node_id,
                node_type=attempt.node_type,
                attempt=attempt.attempt,
                idempotency_key=attempt.idempotency_key,
                params_json=(
                    prepared.params_json
                    if (prepared := self.prepared.get(spec.id)) is not None
                    else self.params_json[spec.id]
                ),
                context_json=jsonutil.dumps(context),
                inputs=[
                    node_pb2.LiveInput(
                        source=source, source_port=source_port or "", target_port=target_port or ""
                    )
                    for source, source_port, target_port in attempt.live_inputs
                ],
                timeout_s=spec.timeout_s or 0.0,
                when=spec.when or "",
                tenant_id=self.tenant_id,
                traceparent=current_traceparent(span) if span else self.row.trace_parent,
            )
        )

    def _cache_key(self, node_id: str, inputs: dict[str, Any]) -> str:
        spec = self.specs[node_id]
        return cache_key(
            spec.type,
            self.engine.type_version(spec.type, self.tenant_id),
            self.params_json[spec.id],
            inputs,
            self.tenant_id,
        )

    async def _flush(self) -> None:
        batch, self.batch = self.batch, _Batch()
        if batch.events:
            batch.execution["last_seq"] = self.core.seq
        flush = Flush(
            execution_id=self.id,
            tenant_id=self.tenant_id,
            workflow_id=self.row.workflow_id,
            trace_id=self.row.trace_id,
            trace_parent=self.row.trace_parent,
            execution=batch.execution,
            nodes=list(batch.nodes.values()),
            events=batch.events,
            insert=self.unwritten,
            session_turns=batch.session_turns,
        )
        if flush.insert is None:
            await self.engine.persist(flush)
        else:
            await self._persist_start(flush)
        # The row mirrors what is committed: a local waiter's final answer is read from it
        # (services/workflow/following.py), not from the database.
        for column, value in batch.execution.items():
            setattr(self.row, column, value)
        # Journal writes committed: the attempts waiting to act are told first (before the
        # relay's publishing of this batch's events, which would run ahead of the ack).
        for attempt_key, seq, accepted in batch.acks:
            for handle in self.handles:
                if handle.ack(attempt_key, seq, accepted):
                    break
        # Committed: send the attempts out first (the critical path of a chain), then
        # everything that only follows from the commit.
        if batch.to_send:
            sent = time.perf_counter()
            for task in batch.to_send:
                observed = self.observed.get(task.node_id)
                if observed is not None:
                    observed.sent_at = sent
                    if observed.ready_at:
                        DISPATCH_LATENCY.observe(sent - observed.ready_at)
            handle = self.engine.dispatcher.dispatch(
                batch.to_send,
                lambda outcomes: self.inbox.put_nowait(Outcomes(outcomes)),
                lambda tasks, reason: self.inbox.put_nowait(DispatchFailed(tasks, reason)),
            )
            self.handles.append(handle)
            if len(self.handles) > 64:
                self.handles = [h for h in self.handles if h.active()]
        self.engine.committed(flush)
        for reply in batch.replies:
            if not reply.done():
                reply.set_result(None)
        for scope, key, value, ttl in batch.cache_writes:
            await self.engine.cache_set(scope, key, value, ttl)

    async def _persist_start(self, flush: Flush) -> None:
        """The first batch of a new execution, its rows inserted with it: the start waiting
        on `persisted` answers once they are committed."""
        await self.engine.persist(flush)  # a failure: see _run (the start gets it)
        self.unwritten = None
        if self.persisted is not None and not self.persisted.done():
            self.persisted.set_result(None)

    # ---- helpers ------------------------------------------------------------------------

    def _end_attempt(self, ended: AttemptEnded) -> None:
        """Close the span and time the attempt in flight (from dispatch to its outcome)."""
        observed = self.observed.pop(ended.node_id, None)
        if observed is None:
            return
        if observed.sent_at:
            _node_duration(ended.node_type, ended.outcome).observe(
                time.perf_counter() - observed.sent_at
            )
        span = observed.span
        if span is not None:
            span.set_attribute("heddle.outcome", ended.outcome)
            if ended.error is not None:
                span.set_status(trace.StatusCode.ERROR, ended.error)
            span.end()

    # ---- called by the engine -----------------------------------------------------------

    def wake(self) -> None:
        self.inbox.put_nowait(Wake())

    async def control(self, action: Literal["cancel", "pause", "resume"]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inbox.put_nowait(ControlRequest(action, done))
        await done

    async def submit_input(self, node_id: str, data: Any) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inbox.put_nowait(InputRequest(node_id, data, done))
        await done
