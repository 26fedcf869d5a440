"""One execution, driven to its end by the replica that owns it.

A runner is a single task with an inbox: node outcomes, dispatch failures, timers, control
requests and human input all arrive as commands and are applied one batch at a time, so the
state needs no locks. Each batch ends in ONE transaction that persists every node change and
every event (the outbox) and checks that this replica still owns the execution; only then are
the newly ready nodes sent to the node replicas. Persist first, act second: a crash at any
point leaves the database describing what was (or may have been) started.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from heddle.v1 import node_pb2
from opentelemetry import trace
from tenacity import RetryCallState, wait_exponential, wait_fixed, wait_random

from libs.common import jsonutil
from libs.common.db import utcnow
from libs.common.errors import FailedPrecondition, HeddleError
from libs.common.expressions import ExpressionError, render
from libs.common.metrics import (
    DISPATCH_LATENCY,
    EXECUTIONS,
    EXECUTIONS_RUNNING,
    NODE_DURATION,
    NODE_RETRIES,
    NODES_FINISHED,
)
from libs.common.secrets import redact, redact_outcome, redactable
from libs.common.tracing import (
    context_from_traceparent,
    continue_trace,
    current_traceparent,
    spans_wanted,
    tracer,
)
from services.workflow.definition import NodeSpec
from services.workflow.planner import Outcome, PlanState
from services.workflow.status import FINAL_EXECUTION_STATUSES, TERMINAL_NODE_STATUSES

if TYPE_CHECKING:
    from services.workflow.engine import CompiledWorkflow, Engine
    from services.workflow.models import ExecutionRow, NodeRunRow

log = logging.getLogger(__name__)
_TRACER = tracer("workflow")
_OUTCOME_NAMES = {
    node_pb2.NodeOutcome.SUCCEEDED: "succeeded",
    node_pb2.NodeOutcome.FAILED: "failed",
    node_pb2.NodeOutcome.WAITING: "waiting",
    node_pb2.NodeOutcome.SKIPPED: "skipped",
}

#: Largest node output copied into a node.completed event (bigger ones: read the execution).
EVENT_OUTPUT_LIMIT = 16 * 1024
#: Log records of one attempt that become `log` events.
MAX_LOG_EVENTS = 50


class LostOwnership(Exception):
    """Another replica took this execution over; this runner must stop touching it."""


# ---- commands ---------------------------------------------------------------------------


@dataclass
class Outcomes:
    outcomes: Sequence[node_pb2.NodeOutcome]


@dataclass
class DispatchFailed:
    tasks: Sequence[node_pb2.NodeTask]
    reason: str


@dataclass
class TimerDue:
    node_id: str
    attempt: int
    kind: Literal["retry", "input_timeout"]


@dataclass
class Control:
    action: Literal["cancel", "pause", "resume"]
    done: asyncio.Future[None]


@dataclass
class HumanInput:
    node_id: str
    data: Any
    done: asyncio.Future[None]


@dataclass
class Wake:
    """Concurrency slots were freed: try dispatching again."""


@dataclass
class DeadlineDue:
    """The tenant's max execution duration has passed."""

    limit_s: float


Command = Outcomes | DispatchFailed | TimerDue | Control | HumanInput | Wake | DeadlineDue

#: Key of the execution-wide deadline in ExecutionRunner.timers (no node id is empty).
_DEADLINE_TIMER = ""


# ---- state ------------------------------------------------------------------------------


@dataclass
class NodeState:
    """The in-memory mirror of a node_runs row."""

    node_id: str
    node_type: str
    status: str = "pending"
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
    infra_failures: int = 0
    attempt_started: dt.datetime | None = None
    # Observability of the attempt in flight: its span, when it became ready, when sent.
    span: trace.Span | None = None
    ready_at: float = 0.0
    sent_at: float = 0.0

    def row(self) -> dict[str, Any]:
        """The persisted columns (everything but the primary key)."""
        return {
            "status": self.status,
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
        }

    @classmethod
    def from_row(cls, row: NodeRunRow) -> NodeState:
        return cls(
            node_id=row.node_id,
            node_type=row.node_type,
            status=row.status,
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
        )


#: Failures after which a node's side effect may or may not have happened: the attempt that
#: replaces one of them is the same logical dispatch and keeps its idempotency key.
#: (IdempotencyConflict: the server still runs the request first sent under the key.)
OUTCOME_UNKNOWN_ERRORS = frozenset(
    {"NodeUnavailable", "Timeout", "ConnectionError", "IdempotencyConflict"}
)


def dispatch_key(execution_id: str, node: NodeState) -> str:
    """The idempotency key of the attempt node.attempt: `execution_id/node_id/N`, where N is
    the first attempt of its logical dispatch. An attempt re-sent because the outcome of the
    one before is unknown (lost when its owner died, its node replica failing the call, a
    timeout or a broken connection) keeps the key of the attempt it replaces; an attempt
    after a reported failure (a retry by the node's policy) gets a new key. Derived from the
    persisted attempt history, so it survives any number of takeovers."""
    first = node.attempt
    for record in reversed(node.attempts):
        if record.get("attempt") != first - 1:
            break
        error = record.get("error") or {}
        if record.get("status") != "lost" and error.get("type") not in OUTCOME_UNKNOWN_ERRORS:
            break
        first -= 1
    return f"{execution_id}/{node.node_id}/{first}"


def retry_delay(spec: NodeSpec, attempt: int) -> float:
    """Seconds to wait before attempt+1, from the node's policy (tenacity's wait strategies)."""
    policy = spec.retry
    if policy is None:
        return 0.0
    if policy.backoff == "fixed":
        strategy: Any = wait_fixed(policy.initial_delay_s)
    elif policy.jitter:
        # wait_exponential_jitter's `initial` is deprecated (tenacity 9) and its replacement
        # `multiplier` does not exist in 8.x: compose the same strategy from stable parts.
        strategy = wait_exponential(
            multiplier=policy.initial_delay_s, max=policy.max_delay_s, exp_base=2
        ) + wait_random(0, policy.initial_delay_s)
    else:
        strategy = wait_exponential(
            multiplier=policy.initial_delay_s, max=policy.max_delay_s, exp_base=2
        )
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(min(strategy(state), policy.max_delay_s))


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


class _Batch:
    """Changes accumulated while applying commands; flushed in one transaction."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.events: list[dict[str, Any]] = []
        self.execution: dict[str, Any] = {}
        self.to_send: list[node_pb2.NodeTask] = []
        self.replies: list[asyncio.Future[None]] = []
        self.cache_writes: list[tuple[str, bytes, float | None]] = []

    def __bool__(self) -> bool:
        return bool(self.nodes or self.events or self.execution or self.to_send or self.replies)


class ExecutionRunner:
    """Drives one execution; owned by exactly one replica at a time."""

    def __init__(
        self,
        engine: Engine,
        row: ExecutionRow,
        compiled: CompiledWorkflow,
        nodes: dict[str, NodeState],
    ) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.id = row.id
        self.row = row
        self.status = row.status
        #: Until when this replica's lease on the execution is known to hold.
        self.lease_until = row.lease_expires_at or utcnow()
        self.definition = definition = compiled.definition
        self.plan = compiled.plan
        self.params_json = compiled.params_json
        self.secret_refs = compiled.secrets
        self.specs = {node.id: node for node in definition.nodes}
        self.nodes = nodes
        self.seq = row.last_seq
        self.inbox: asyncio.Queue[Command] = asyncio.Queue()
        self.ready: deque[str] = deque()
        self.in_flight = 0
        self.timers: dict[str, asyncio.TimerHandle] = {}
        # Tokens reported by running nodes, published as node.text_chunk once per batch.
        self.progress: dict[str, list[str]] = {}
        self.handles: list[Any] = []
        self.limit = self.settings.max_concurrency_per_execution
        configured = getattr(definition, "settings", None)
        if configured is not None and getattr(configured, "max_concurrency", None):
            self.limit = min(self.limit, int(configured.max_concurrency))
        statuses = {n.node_id: n.status for n in nodes.values()}
        ports = {n.node_id: n.active_ports for n in nodes.values()}
        self.state = PlanState(self.plan, statuses=statuses, ports=ports)
        self.batch = _Batch()
        self._trace_root = context_from_traceparent(row.trace_parent)
        # Values of the secrets resolved for this execution's attempts, longest first: they
        # are replaced by *** in every outcome and event before it is stored or published.
        self.redactions: list[str] = []
        self.finished = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None

    # ---- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"execution-{self.id}")

    async def _run(self) -> None:
        # This task's context (its own copy) carries the execution's trace from here on:
        # the dispatcher's calls, started from it, join the trace.
        continue_trace(self.row.trace_parent, "workflow")
        EXECUTIONS_RUNNING.inc()
        try:
            self._begin()
            await self._cycle()
            while self.status not in FINAL_EXECUTION_STATUSES:
                command = await self.inbox.get()
                self._apply(command)
                while not self.inbox.empty():
                    self._apply(self.inbox.get_nowait())
                await self._cycle()
            EXECUTIONS.labels(self.status).inc()
        except LostOwnership:
            log.warning("execution taken over by another replica", extra={"execution_id": self.id})
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("execution runner crashed", extra={"execution_id": self.id})
            # Never a loop of takeovers: the crash is counted, and the execution fails once
            # it has crashed too often (the guard's own failure is logged, not raised).
            await self.engine.runner_crashed(self.id, error, self.redactions)
        finally:
            EXECUTIONS_RUNNING.dec()
            self._stop_work()
            self.engine.runner_finished(self)
            if not self.finished.done():
                self.finished.set_result(None)

    def _begin(self) -> None:
        """First cycle: a new execution starts; a taken-over one resumes where it stopped."""
        now = utcnow()
        if self.status == "pending":
            self.status = "running"
            self.batch.execution.update(status="running", started_at=now)
            self._event("execution.started", None, {"inputs": self.row.inputs})
        else:
            # Takeover: re-dispatch what was in flight and re-arm the timers.
            for node in self.nodes.values():
                if node.status in ("queued", "running"):
                    node.attempts.append(self._attempt_record(node, "lost", now, None))
                    self._change(node, attempts=node.attempts)
                    self._make_ready([node.node_id])
                elif node.status in ("retrying", "waiting") and node.due_at is not None:
                    kind: Literal["retry", "input_timeout"] = (
                        "retry" if node.status == "retrying" else "input_timeout"
                    )
                    self._arm(node, kind, max(0.0, (node.due_at - now).total_seconds()))
        self._arm_deadline(now)
        # New: the roots. Taken over or retried: what the persisted statuses make ready.
        transition = self.state.start()
        self._mark_skipped(transition.skipped, "not on a taken branch")
        self._make_ready(transition.ready)
        if self.state.failed:
            self._fail_execution(
                self.row.error or {"type": "NodeFailed", "message": "a node failed"}
            )

    def _arm_deadline(self, now: dt.datetime) -> None:
        limit = self.settings.quota_for(self.row.tenant_id).max_execution_duration_s
        if not limit:
            return
        started = self.row.created_at or now
        remaining = max(0.0, limit - (now - started).total_seconds())
        self.timers[_DEADLINE_TIMER] = asyncio.get_running_loop().call_later(
            remaining, self.inbox.put_nowait, DeadlineDue(limit)
        )

    def _stop_work(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        for handle in self.handles:
            handle.cancel()
        self.handles.clear()
        self.engine.release_slots(self.in_flight)
        self.in_flight = 0
        for node in self.nodes.values():
            self._end_attempt(node, "abandoned")

    # ---- applying commands --------------------------------------------------------------

    def _apply(self, command: Command) -> None:
        if isinstance(command, Outcomes):
            for outcome in command.outcomes:
                self._apply_outcome(outcome)
        elif isinstance(command, DispatchFailed):
            for task in command.tasks:
                self._apply_dispatch_failure(task, command.reason)
        elif isinstance(command, TimerDue):
            self._apply_timer(command)
        elif isinstance(command, Control):
            self._apply_control(command)
        elif isinstance(command, HumanInput):
            self._apply_input(command)
        elif isinstance(command, DeadlineDue):
            self._fail_execution(
                {
                    "type": "Timeout",
                    "message": f"execution exceeded the tenant's maximum duration "
                    f"of {command.limit_s:g} s",
                }
            )

    def _in_flight_node(self, node_id: str, attempt: int) -> NodeState | None:
        node = self.nodes.get(node_id)
        # A late result of a superseded attempt (or of a cancelled execution) is fenced off.
        if node is None or node.attempt != attempt or node.status != "running":
            return None
        self.in_flight -= 1
        self.engine.release_slots(1)
        return node

    def _apply_outcome(self, outcome: node_pb2.NodeOutcome) -> None:
        if outcome.kind == node_pb2.NodeOutcome.PROGRESS:
            self._apply_progress(outcome)
            return
        node = self._in_flight_node(outcome.node_id, outcome.attempt)
        if node is None:
            return
        if self.redactions:
            outcome = redact_outcome(outcome, self.redactions)
        failed = outcome.kind == node_pb2.NodeOutcome.FAILED
        self._end_attempt(
            node,
            _OUTCOME_NAMES.get(outcome.kind, "failed"),
            f"{outcome.error.type}: {outcome.error.message}" if failed else None,
        )
        now = utcnow()
        self._record_logs(node, outcome.logs_json)
        kind = outcome.kind
        if kind == node_pb2.NodeOutcome.SUCCEEDED:
            ports = None if outcome.all_ports else list(outcome.active_ports)
            output = jsonutil.loads(outcome.output_json)
            self._succeed(node, output, ports, "succeeded", now, len(outcome.output_json))
            spec = self.specs[node.node_id]
            if spec.cache is not None:
                self.batch.cache_writes.append(
                    (
                        self._cache_key(node),
                        jsonutil.dumps({"output": node.output, "ports": ports}),
                        spec.cache.ttl_s,
                    )
                )
        elif kind == node_pb2.NodeOutcome.SKIPPED:
            node.attempts.append(self._attempt_record(node, "skipped", now, None))
            self._terminal(node, "skipped", now, Outcome("skipped"), {"reason": "when"})
        elif kind == node_pb2.NodeOutcome.WAITING:
            waiting = jsonutil.loads(outcome.waiting_json) or {}
            node.status = "waiting"
            node.waiting = waiting
            timeout = waiting.get("timeout_s")
            changes: dict[str, Any] = {"status": "waiting", "waiting": waiting}
            if timeout:
                node.due_at = now + dt.timedelta(seconds=float(timeout))
                changes["due_at"] = node.due_at
                self._arm(node, "input_timeout", float(timeout))
            self._change(node, **changes)
            self._event("node.waiting", node.node_id, {"attempt": node.attempt, **waiting})
        else:
            error = {
                "type": outcome.error.type or "NodeError",
                "message": outcome.error.message,
                "retryable": outcome.error.retryable,
                "details": jsonutil.loads(outcome.error.details_json),
            }
            self._fail_attempt(node, error, now, infra=False)

    def _apply_dispatch_failure(self, task: node_pb2.NodeTask, reason: str) -> None:
        node = self._in_flight_node(task.node_id, task.attempt)
        if node is None:
            return
        reason = redact(reason, self.redactions)
        self._end_attempt(node, "dispatch_failed", reason)
        error_type, _, message = reason.partition(": ")
        infra = error_type == "NodeUnavailable"
        error = {"type": error_type, "message": message, "retryable": True, "details": None}
        self._fail_attempt(node, error, utcnow(), infra=infra)

    def _fail_attempt(
        self, node: NodeState, error: dict[str, Any], now: dt.datetime, *, infra: bool
    ) -> None:
        spec = self.specs[node.node_id]
        node.attempts.append(self._attempt_record(node, "failed", now, error))
        max_attempts = spec.retry.max_attempts if spec.retry else 1
        if infra and node.infra_failures < self.settings.dispatch_retries:
            # A replica fault costs a retry, not the execution, whatever the node's policy.
            node.infra_failures += 1
            delay = min(0.05 * 2**node.infra_failures, 1.0)
        elif error["retryable"] and node.attempt < max_attempts:
            delay = retry_delay(spec, node.attempt)
            # A server's Retry-After (429/503) is a floor, bounded by the policy's max delay.
            details = error.get("details")
            hinted = details.get("retry_after") if isinstance(details, dict) else None
            if isinstance(hinted, int | float) and spec.retry is not None and hinted > delay:
                delay = min(float(hinted), spec.retry.max_delay_s)
        else:
            self._fail_node(node, error, now)
            return
        NODE_RETRIES.labels(node.node_type).inc()
        node.status = "retrying"
        node.error = error
        node.due_at = now + dt.timedelta(seconds=delay)
        self._change(
            node, status="retrying", error=error, attempts=node.attempts, due_at=node.due_at
        )
        self._event(
            "node.retrying",
            node.node_id,
            {
                "attempt": node.attempt,
                "next_attempt": node.attempt + 1,
                "delay_s": delay,
                "error": error,
            },
        )
        self._arm(node, "retry", delay)

    def _fail_node(self, node: NodeState, error: dict[str, Any], now: dt.datetime) -> None:
        spec = self.specs[node.node_id]
        mode = spec.on_error
        node.error = error
        if mode == "skip":
            self._terminal(
                node, "skipped", now, Outcome("skipped"), {"reason": "error", "error": error}
            )
            return
        if mode == "continue":
            node.output = spec.default_output
            outcome = Outcome("failed_continue")
        elif mode == "fail_branch":
            node.output = {"error": {"type": error["type"], "message": error["message"]}}
            outcome = Outcome("failed_branch")
        else:
            node.output = None
            outcome = Outcome("failed")
        self._terminal(node, "failed", now, outcome, {"error": error, "on_error": mode})
        if mode == "fail":
            self._fail_execution(
                {
                    "type": "NodeFailed",
                    "message": f"node {node.node_id!r} failed: {error['type']}: {error['message']}",
                    "node_id": node.node_id,
                }
            )

    def _succeed(
        self,
        node: NodeState,
        output: Any,
        ports: list[str] | None,
        status: str,
        now: dt.datetime,
        output_size: int | None = None,
    ) -> None:
        """output_size: the length of output's JSON when the caller has it encoded."""
        node.output = output
        node.active_ports = ports
        node.error = None
        node.attempts.append(self._attempt_record(node, status, now, None))
        active = frozenset(ports) if ports is not None else None
        self._terminal(node, status, now, Outcome("succeeded", active), None, output_size)

    def _apply_progress(self, outcome: node_pb2.NodeOutcome) -> None:
        node = self.nodes.get(outcome.node_id)
        if node is None or node.attempt != outcome.attempt or node.status != "running":
            return
        delta = (jsonutil.loads(outcome.output_json) or {}).get("delta")
        if delta:
            self.progress.setdefault(node.node_id, []).append(str(delta))

    def _emit_progress(self, node_id: str | None = None) -> None:
        """One `node.text_chunk` event per node for the tokens gathered since the last batch
        (all nodes, or node_id's before it ends, so its tokens precede its completion)."""
        for key in [node_id] if node_id is not None else list(self.progress):
            parts = self.progress.pop(key, None)
            if parts:
                attempt = self.nodes[key].attempt
                self._event("node.text_chunk", key, {"attempt": attempt, "delta": "".join(parts)})

    def _terminal(
        self,
        node: NodeState,
        status: str,
        now: dt.datetime,
        outcome: Outcome,
        extra: dict[str, Any] | None,
        output_size: int | None = None,
    ) -> None:
        self._emit_progress(node.node_id)
        node.status = status
        node.finished_at = now
        node.due_at = None
        NODES_FINISHED.labels(node.node_type, status).inc()
        self._disarm(node.node_id)
        self._change(
            node,
            status=status,
            output=node.output,
            error=node.error,
            active_ports=node.active_ports,
            attempts=node.attempts,
            finished_at=now,
            due_at=None,
            waiting=node.waiting,
        )
        data: dict[str, Any] = {"status": status, "attempt": node.attempt}
        if node.started_at is not None:
            data["duration_ms"] = round((now - node.started_at).total_seconds() * 1000, 3)
        if extra:
            data.update(extra)
        if status in ("succeeded", "cached") or (status == "failed" and node.output is not None):
            if output_size is None:
                output_size = len(jsonutil.dumps(node.output))
            if output_size <= EVENT_OUTPUT_LIMIT:
                data["output"] = node.output
            else:
                data["output_truncated"] = True
        event_type = {
            "succeeded": "node.completed",
            "cached": "node.completed",
            "failed": "node.failed",
            "skipped": "node.skipped",
        }[status]
        self._event(event_type, node.node_id, data)
        if self.status in FINAL_EXECUTION_STATUSES:
            return
        transition = self.state.complete(node.node_id, outcome)
        self._mark_skipped(transition.skipped, f"upstream {node.node_id!r} did not lead here")
        self._make_ready(transition.ready)

    def _mark_skipped(self, node_ids: Sequence[str], reason: str) -> None:
        now = utcnow()
        for node_id in node_ids:
            node = self.nodes[node_id]
            node.status = "skipped"
            node.finished_at = now
            NODES_FINISHED.labels(node.node_type, "skipped").inc()
            self._change(node, status="skipped", finished_at=now)
            self._event("node.skipped", node_id, {"status": "skipped", "reason": reason})

    def _apply_timer(self, command: TimerDue) -> None:
        node = self.nodes[command.node_id]
        self.timers.pop(command.node_id, None)
        if node.attempt != command.attempt:
            return
        if command.kind == "retry" and node.status == "retrying":
            self._make_ready([node.node_id])
        elif command.kind == "input_timeout" and node.status == "waiting":
            error = {
                "type": "Timeout",
                "message": f"no input within {(node.waiting or {}).get('timeout_s')} s",
                "retryable": False,
                "details": None,
            }
            node.attempts.append(self._attempt_record(node, "failed", utcnow(), error))
            self._fail_node(node, error, utcnow())

    def _apply_control(self, command: Control) -> None:
        self.batch.replies.append(command.done)
        if self.status in FINAL_EXECUTION_STATUSES:
            return
        if command.action == "cancel":
            self._cancel()
        elif command.action == "pause" and self.status == "running":
            self.status = "paused"
            self.batch.execution["status"] = "paused"
            self._event("execution.paused", None, {})
        elif command.action == "resume" and self.status == "paused":
            self.status = "running"
            self.batch.execution["status"] = "running"
            self._event("execution.resumed", None, {})

    def _apply_input(self, command: HumanInput) -> None:
        node = self.nodes.get(command.node_id)
        if node is None or node.status != "waiting":
            status = node.status if node else "unknown"
            command.done.set_exception(
                FailedPrecondition(f"node {command.node_id!r} is not waiting for input ({status})")
            )
            return
        self.batch.replies.append(command.done)
        self._succeed(node, {"data": command.data}, None, "succeeded", utcnow())

    # ---- execution end ------------------------------------------------------------------

    def _cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()
        self.handles.clear()
        self._close_remaining("cancelled")
        self.status = "cancelled"
        self.batch.execution.update(status="cancelled", finished_at=utcnow(), owner=None)
        self._event("execution.cancelled", None, {})

    def _close_remaining(self, status: str) -> None:
        now = utcnow()
        self.ready.clear()
        for node in self.nodes.values():
            if node.status not in TERMINAL_NODE_STATUSES:
                if node.status == "running":
                    self.in_flight -= 1
                    self.engine.release_slots(1)
                    node.attempts.append(self._attempt_record(node, status, now, None))
                    self._end_attempt(node, status)
                NODES_FINISHED.labels(node.node_type, status).inc()
                node.status = status
                node.finished_at = now
                self._disarm(node.node_id)
                self._change(
                    node, status=status, finished_at=now, attempts=node.attempts, due_at=None
                )

    def _fail_execution(self, error: dict[str, Any]) -> None:
        if self.status in FINAL_EXECUTION_STATUSES:
            return
        for handle in self.handles:
            handle.cancel()
        self.handles.clear()
        self._close_remaining("cancelled")
        self.status = "failed"
        self.batch.execution.update(status="failed", error=error, finished_at=utcnow(), owner=None)
        self._event("execution.failed", None, {"error": error})

    def _finish(self) -> None:
        if self.status in FINAL_EXECUTION_STATUSES:
            return
        try:
            outputs = self._outputs()
        except ExpressionError as error:
            self._fail_execution({"type": "OutputError", "message": error.message})
            return
        self.status = "succeeded"
        self.batch.execution.update(
            status="succeeded", outputs=outputs, finished_at=utcnow(), owner=None
        )
        self._event("execution.completed", None, {"outputs": outputs})

    def _outputs(self) -> Any:
        if self.definition.outputs is not None:
            return render(self.definition.outputs, self.full_context())
        outputs: dict[str, Any] = {}
        for spec in self.definition.nodes:
            node = self.nodes[spec.id]
            if spec.type == "output" and node.status in ("succeeded", "cached"):
                if isinstance(node.output, dict):
                    outputs.update(node.output)
                else:
                    outputs[spec.id] = node.output
        return outputs

    def full_context(self) -> dict[str, Any]:
        context: dict[str, Any] = {"inputs": self.row.inputs or {}, "system": self._system(None)}
        for node in self.nodes.values():
            if node.status in ("succeeded", "cached", "failed"):
                context[node.node_id] = node.output
        return context

    def _system(self, node: NodeState | None) -> dict[str, Any]:
        system: dict[str, Any] = {"execution_id": self.id, "workflow_id": self.row.workflow_id}
        if node is not None:
            retry = self.specs[node.node_id].retry
            # max_attempts: the node's own policy; its ai calls then make no retries of their
            # own on top of it (the ai service's are per call, so they would multiply).
            system.update(
                node_id=node.node_id,
                attempt=node.attempt,
                max_attempts=retry.max_attempts if retry is not None else 1,
            )
        return system

    # ---- dispatch -----------------------------------------------------------------------

    async def _cycle(self) -> None:
        """Start what can start, persist everything, then send the attempts out."""
        await self._take_ready()
        if (
            self.status == "running"
            and not self.ready
            and self.in_flight == 0
            and self.state.is_finished()
        ):
            self._finish()
        self._emit_progress()
        if self.batch:
            await self._flush()

    async def _take_ready(self) -> None:
        while self.ready and self.status == "running":
            room = min(self.limit - self.in_flight, len(self.ready))
            granted = self.engine.reserve_slots(room, self) if room > 0 else 0
            if granted == 0:
                return
            # Cache hits complete at once and may make more nodes ready: loop until none. An
            # attempt that fails at once (a missing secret) may end the execution, which
            # clears `ready`: the slots not used go back.
            for used in range(granted):
                if not self.ready or self.status != "running":
                    self.engine.release_slots(granted - used)
                    return
                await self._start_attempt(self.nodes[self.ready.popleft()])

    async def _start_attempt(self, node: NodeState) -> bool:
        """Mark node running with a new attempt and queue its task; True if served by cache."""
        spec = self.specs[node.node_id]
        now = utcnow()
        node.attempt += 1
        node.status = "running"
        node.attempt_started = now
        if node.started_at is None:
            node.started_at = now
        context = self._context_for(node)
        node.inputs = {k: v for k, v in context.items() if k != "system"}
        # Secrets join the context sent to the node, never node.inputs (which is stored).
        wanted = self.secret_refs[node.node_id]
        if wanted is not None:
            try:
                context["secrets"] = await self.engine.secrets.resolve(
                    self.row.tenant_id, wanted or None
                )
            except HeddleError as error:
                self.in_flight += 1  # balanced by _in_flight_node below
                self._in_flight_node(node.node_id, node.attempt)
                failure = {"type": "SecretError", "message": error.message, "retryable": False}
                self._fail_attempt(node, {**failure, "details": None}, now, infra=False)
                return True
            self.redactions = redactable([*self.redactions, *context["secrets"].values()])
        if spec.cache is not None:
            hit = await self.engine.cache_get(self._cache_key(node))
            if hit is not None:
                cached = jsonutil.loads(hit)
                self.in_flight += 1  # balanced by _in_flight_node below
                self._in_flight_node(node.node_id, node.attempt)
                self._change(
                    node, attempt=node.attempt, started_at=node.started_at, inputs=node.inputs
                )
                self._succeed(node, cached["output"], cached["ports"], "cached", now)
                return True
        self.in_flight += 1
        self._change(
            node,
            status="running",
            attempt=node.attempt,
            started_at=node.started_at,
            inputs=node.inputs,
            due_at=None,
        )
        self._event("node.started", node.node_id, {"attempt": node.attempt, "type": node.node_type})
        node.span = (
            None
            if not spans_wanted()
            else _TRACER.start_span(
                f"node.attempt {node.node_id}",
                context=self._trace_root,
                attributes={
                    "heddle.execution_id": self.id,
                    "heddle.node_id": node.node_id,
                    "heddle.node_type": node.node_type,
                    "heddle.attempt": node.attempt,
                },
            )
        )
        self.batch.to_send.append(
            node_pb2.NodeTask(
                execution_id=self.id,
                workflow_id=self.row.workflow_id,
                node_id=node.node_id,
                node_type=node.node_type,
                attempt=node.attempt,
                idempotency_key=dispatch_key(self.id, node),
                params_json=self.params_json[spec.id],
                context_json=jsonutil.dumps(context),
                inputs=[
                    node_pb2.LiveInput(
                        source=source, source_port=source_port or "", target_port=target_port or ""
                    )
                    for source, source_port, target_port in self.state.live_inputs(node.node_id)
                ],
                timeout_s=spec.timeout_s or 0.0,
                when=spec.when or "",
                tenant_id=self.row.tenant_id,
                traceparent=current_traceparent(node.span) if node.span else self.row.trace_parent,
            )
        )
        return False

    def _cache_key(self, node: NodeState) -> str:
        spec = self.specs[node.node_id]
        return cache_key(
            spec.type,
            self.engine.type_version(spec.type, self.row.tenant_id),
            self.params_json[spec.id],
            node.inputs or {},
            self.row.tenant_id,
        )

    def _context_for(self, node: NodeState) -> dict[str, Any]:
        context: dict[str, Any] = {"inputs": self.row.inputs or {}, "system": self._system(node)}
        needed = set(self.plan.referenced_nodes(node.node_id))
        needed.update(source for source, _, _ in self.state.live_inputs(node.node_id))
        for node_id in needed:
            upstream = self.nodes.get(node_id)
            if upstream is not None and upstream.status in ("succeeded", "cached", "failed"):
                context[node_id] = upstream.output
        return context

    async def _flush(self) -> None:
        batch, self.batch = self.batch, _Batch()
        if batch.events:
            batch.execution["last_seq"] = self.seq
        await self.engine.persist(self, batch)
        # Committed: send the attempts out first (the critical path of a chain), then
        # everything that only follows from the commit.
        if batch.to_send:
            sent = time.perf_counter()
            for task in batch.to_send:
                node = self.nodes[task.node_id]
                node.sent_at = sent
                if node.ready_at:
                    DISPATCH_LATENCY.observe(sent - node.ready_at)
            handle = self.engine.dispatcher.dispatch(
                batch.to_send,
                lambda outcomes: self.inbox.put_nowait(Outcomes(outcomes)),
                lambda tasks, reason: self.inbox.put_nowait(DispatchFailed(tasks, reason)),
            )
            self.handles.append(handle)
            if len(self.handles) > 64:
                self.handles = [h for h in self.handles if h.active()]
        self.engine.committed(self, batch)
        for reply in batch.replies:
            if not reply.done():
                reply.set_result(None)
        for key, value, ttl in batch.cache_writes:
            await self.engine.cache_set(key, value, ttl)

    # ---- helpers ------------------------------------------------------------------------

    def _make_ready(self, node_ids: Sequence[str]) -> None:
        now = time.perf_counter()
        for node_id in node_ids:
            self.nodes[node_id].ready_at = now
        self.ready.extend(node_ids)

    def _end_attempt(self, node: NodeState, outcome: str, error: str | None = None) -> None:
        """Close the span and time the attempt in flight (from dispatch to its outcome)."""
        if node.sent_at:
            NODE_DURATION.labels(node.node_type, outcome).observe(
                time.perf_counter() - node.sent_at
            )
            node.sent_at = 0.0
        span, node.span = node.span, None
        if span is not None:
            span.set_attribute("heddle.outcome", outcome)
            if error is not None:
                span.set_status(trace.StatusCode.ERROR, error)
            span.end()

    def _change(self, node: NodeState, **values: Any) -> None:
        """Set fields of node and mark it dirty: the batch writes its whole row."""
        for key, value in values.items():
            setattr(node, key, value)
        self.batch.nodes[node.node_id] = node

    def _event(self, event_type: str, node_id: str | None, data: dict[str, Any]) -> None:
        if self.redactions:
            data = redact(data, self.redactions)
        self.seq += 1
        self.batch.events.append(
            {
                "execution_id": self.id,
                "seq": self.seq,
                "type": event_type,
                "node_id": node_id,
                "ts": utcnow(),
                "data": data,
                "trace_id": self.row.trace_id,
                "tenant_id": self.row.tenant_id,
                "workflow_id": self.row.workflow_id,
                "published": False,
            }
        )

    def _record_logs(self, node: NodeState, logs_json: bytes) -> None:
        for record in (jsonutil.loads(logs_json) or [])[:MAX_LOG_EVENTS]:
            self._event("log", node.node_id, {"attempt": node.attempt, **record})

    def _attempt_record(
        self, node: NodeState, status: str, now: dt.datetime, error: dict[str, Any] | None
    ) -> dict[str, Any]:
        started = node.attempt_started or now
        return {
            "attempt": node.attempt,
            "status": status,
            "started_at": started.isoformat(),
            "finished_at": now.isoformat(),
            "duration_ms": round((now - started).total_seconds() * 1000, 3),
            "error": error,
        }

    def _arm(self, node: NodeState, kind: Literal["retry", "input_timeout"], delay: float) -> None:
        self._disarm(node.node_id)
        command = TimerDue(node.node_id, node.attempt, kind)
        self.timers[node.node_id] = asyncio.get_running_loop().call_later(
            delay, self.inbox.put_nowait, command
        )

    def _disarm(self, node_id: str) -> None:
        timer = self.timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()

    # ---- called by the engine -----------------------------------------------------------

    def wake(self) -> None:
        self.inbox.put_nowait(Wake())

    async def control(self, action: Literal["cancel", "pause", "resume"]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inbox.put_nowait(Control(action, done))
        await done

    async def submit_input(self, node_id: str, data: Any) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inbox.put_nowait(HumanInput(node_id, data, done))
        await done
