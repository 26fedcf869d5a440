"""ExecutionCore: the rules of one execution, applied one command at a time.

Every node status change goes through `_move`, which names the transition (FROM -> TO, Prefect
style) and raises IllegalTransition for any pair not in `NODE_TRANSITIONS`; every command type
has exactly one handler in `ExecutionCore._HANDLERS` and an unknown one raises UnknownCommand.
Retry, on_error, cache hits, skips, joins, cancel, pause, timeouts, human input and the
deadline are decided here and only here. Time comes in with each command (`now`), so a recorded
history replays to the same effects.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tenacity import RetryCallState, wait_exponential, wait_fixed, wait_random

from libs.common import jsonutil
from libs.common.definition import ON_FAILURE_NODE_ID, NodeSpec, WorkflowDefinition
from libs.common.expressions import ExpressionError, render
from libs.common.secrets import redact, redactable
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
from services.workflow.execution.effects import AttemptEnded, CacheStore, Effects, StartedAttempt
from services.workflow.execution.state import (
    DEADLINE_TIMER,
    FINAL_EXECUTION,
    TERMINAL_NODE,
    WITH_OUTPUT,
    ExecutionStatus,
    NodeState,
    NodeStatus,
    TimerKind,
)
from services.workflow.planner import ExecutionPlan, Outcome, PlanState

#: Largest node output copied into a node.completed event (bigger ones: read the execution).
EVENT_OUTPUT_LIMIT = 16 * 1024
#: Log records of one attempt that become `log` events.
MAX_LOG_EVENTS = 50

#: Failures after which a node's side effect may or may not have happened: the attempt that
#: replaces one of them is the same logical dispatch and keeps its idempotency key.
#: (IdempotencyConflict: the server still runs the request first sent under the key.)
OUTCOME_UNKNOWN_ERRORS = frozenset(
    {"NodeUnavailable", "Timeout", "ConnectionError", "IdempotencyConflict"}
)

_S = NodeStatus
#: The events a Checkpoint may be published as (any other name: node.progress).
CHECKPOINT_EVENTS = frozenset({"node.progress", "node.iteration", "agent.step"})
_IN_FLIGHT_FROM = (_S.PENDING, _S.QUEUED, _S.RUNNING, _S.RETRYING, _S.WAITING)
#: Every allowed node status change, named. Anything else is a bug and raises.
NODE_TRANSITIONS: Mapping[tuple[NodeStatus, NodeStatus], str] = {
    (_S.PENDING, _S.RUNNING): "start",
    (_S.RETRYING, _S.RUNNING): "retry",
    # Takeover: an attempt in flight when its owner died is sent again.
    (_S.RUNNING, _S.RUNNING): "redispatch",
    (_S.QUEUED, _S.RUNNING): "redispatch",  # or: a worker took the queued attempt
    (_S.RUNNING, _S.QUEUED): "queue",  # no connected worker can take it yet
    (_S.RUNNING, _S.SUCCEEDED): "succeed",
    (_S.RUNNING, _S.CACHED): "cache_hit",
    (_S.RUNNING, _S.FAILED): "fail",
    (_S.RUNNING, _S.SKIPPED): "skip",
    (_S.RUNNING, _S.WAITING): "wait_for_input",
    (_S.RUNNING, _S.RETRYING): "schedule_retry",
    (_S.WAITING, _S.SUCCEEDED): "receive_input",
    (_S.WAITING, _S.FAILED): "input_timeout",
    (_S.WAITING, _S.SKIPPED): "input_timeout",
    # An agent's tool approval was decided: the node runs again (a due retry timer, so that a
    # takeover re-arms it), resuming from its journal.
    (_S.WAITING, _S.RETRYING): "resume_with_input",
    (_S.PENDING, _S.SKIPPED): "skip_branch",
    **{(status, _S.CANCELLED): "cancel" for status in _IN_FLIGHT_FROM},
}
_FINISH_EVENTS = {
    _S.SUCCEEDED: "node.completed",
    _S.CACHED: "node.completed",
    _S.FAILED: "node.failed",
    _S.SKIPPED: "node.skipped",
}


_NODE_FAILED: dict[str, Any] = {"type": "NodeFailed", "message": "a node failed"}


class IllegalTransition(RuntimeError):
    """A node status change the rules do not name."""


class UnknownCommand(TypeError):
    """A command the core has no transition for."""


class InputRejected(Exception):
    """Human input for a node that is not waiting for it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """What the core knows about its execution row."""

    id: str
    workflow_id: str
    tenant_id: str
    status: str
    inputs: Any = None
    trace_id: str = ""
    created_at: dt.datetime | None = None
    #: A retried execution's recorded failure (when its persisted statuses say failed).
    error: dict[str, Any] | None = None
    last_seq: int = 0


@dataclass(frozen=True, slots=True)
class CoreConfig:
    #: Attempts a node replica fault (NodeUnavailable) may cost before the node's policy counts.
    dispatch_retries: int = 3
    #: Attempts in flight at once (the execution's max_concurrency, bounded by the replica's).
    concurrency: int = 1_000_000
    #: The tenant's max execution duration in seconds (0: none).
    deadline_s: float = 0.0


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


def _attempt_record(
    node: NodeState, status: str, now: dt.datetime, error: dict[str, Any] | None
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


class ExecutionCore:
    """One execution's state and rules. Not thread-safe; one driver feeds it."""

    def __init__(
        self,
        info: ExecutionInfo,
        definition: WorkflowDefinition,
        plan: ExecutionPlan,
        nodes: dict[str, NodeState],
        config: CoreConfig,
        *,
        retry_delay_fn: Callable[[NodeSpec, int], float] = retry_delay,
    ) -> None:
        self.info = info
        self.id = info.id
        self.definition = definition
        self.plan = plan
        self.specs = {spec.id: spec for spec in definition.nodes}
        self.nodes = nodes
        self.config = config
        self.status = ExecutionStatus(info.status)
        self.seq = info.last_seq
        self.ready: deque[str] = deque()
        self.in_flight = 0
        self.limit = config.concurrency
        settings = getattr(definition, "settings", None)
        if settings is not None and getattr(settings, "max_concurrency", None):
            self.limit = min(self.limit, int(settings.max_concurrency))
        self.state = PlanState(
            plan,
            statuses={n.node_id: n.status for n in nodes.values()},
            ports={n.node_id: n.active_ports for n in nodes.values()},
        )
        #: Values of the secrets resolved for this execution's attempts, longest first: they
        #: are replaced by *** in every event before it is stored or published.
        self.redactions: list[str] = []
        self.progress: dict[str, list[str]] = {}
        #: Timers armed and not yet fired or disarmed (key -> kind).
        self.timers: dict[str, TimerKind] = {}
        self._retry_delay = retry_delay_fn
        self._prepared: tuple[str, dict[str, Any]] | None = None
        #: Nodes whose attempt was lost with the previous owner, not yet sent again: a result
        #: of that attempt can only be stale.
        self._lost: set[str] = set()
        #: The workflow's on_failure handler node (a node row outside the plan's graph), and
        #: the failure it is handling once the execution failed (None: not failing).
        self.handler_id = ON_FAILURE_NODE_ID if ON_FAILURE_NODE_ID in nodes else None
        self._failure: dict[str, Any] | None = None
        self._fx = Effects()
        self._now = dt.datetime.min.replace(tzinfo=dt.UTC)

    # ---- the one entry point ------------------------------------------------------------

    _HANDLERS: ClassVar[dict[type, Callable[[ExecutionCore, Any], None]]] = {}

    def apply(self, command: Command, now: dt.datetime) -> Effects:
        handler = self._HANDLERS.get(type(command))
        if handler is None:
            raise UnknownCommand(f"no transition for {type(command).__name__}")
        self._fx = fx = Effects()
        self._now = now
        before = self.status
        handler(self, command)
        if self.status != before:
            fx.status = self.status.value
        return fx

    # ---- queries (no state change) ------------------------------------------------------

    @property
    def room(self) -> int:
        """How many more attempts may start now."""
        if self.status != ExecutionStatus.RUNNING:
            return 0
        return max(0, min(self.limit - self.in_flight, len(self.ready)))

    @property
    def final(self) -> bool:
        return self.status in FINAL_EXECUTION

    def attempt_context(self, node_id: str) -> dict[str, Any]:
        """The context of node_id's next attempt (the driver reads it to resolve secrets and
        to key the cache); StartAttempt uses the same object."""
        node = self.nodes[node_id]
        context = self._context_for(node, node.attempt + 1)
        self._prepared = (node_id, context)
        return context

    def full_context(self) -> dict[str, Any]:
        context: dict[str, Any] = {"inputs": self.info.inputs or {}, "system": self._system(None)}
        for node in self.nodes.values():
            if node.status in WITH_OUTPUT:
                context[node.node_id] = node.output
        return context

    # ---- transitions: life cycle --------------------------------------------------------

    def _begin(self, _: Begin) -> None:
        now = self._now
        fx = self._fx
        if self.status == ExecutionStatus.PENDING:
            self.status = ExecutionStatus.RUNNING
            fx.execution.update(status="running", started_at=now)
            fx.transitions.append("execution.start")
            self._event("execution.started", None, {"inputs": self.info.inputs})
        else:
            fx.transitions.append("execution.resume_after_takeover")
            # Takeover: re-dispatch what was in flight and re-arm the timers.
            for node in self.nodes.values():
                if node.status in (_S.QUEUED, _S.RUNNING):
                    node.attempts.append(_attempt_record(node, "lost", now, None))
                    self._lost.add(node.node_id)
                    self._dirty(node)
                    self._make_ready([node.node_id])
                elif node.status in (_S.RETRYING, _S.WAITING) and node.due_at is not None:
                    kind = (
                        TimerKind.RETRY if node.status == _S.RETRYING else TimerKind.INPUT_TIMEOUT
                    )
                    self._arm(node.node_id, kind, node.attempt, (node.due_at - now).total_seconds())
        if self.config.deadline_s:
            started = self.info.created_at or now
            remaining = self.config.deadline_s - (now - started).total_seconds()
            self._arm(DEADLINE_TIMER, TimerKind.DEADLINE, 0, remaining)
        # New: the roots. Taken over or retried: what the persisted statuses make ready.
        transition = self.state.start()
        self._mark_skipped(transition.skipped, "not on a taken branch")
        self._make_ready(transition.ready)
        handler = self.nodes.get(self.handler_id) if self.handler_id else None
        if (
            handler is not None
            and self.info.error is not None
            and handler.status not in TERMINAL_NODE
        ):
            # Taken over while its failure handler was due or running: resume the handler
            # (its intent is the error persisted with the failure).
            self._handle_failure(handler, self.info.error)
        elif self.state.failed:
            self._fail_execution(
                self.info.error or {"type": "NodeFailed", "message": "a node failed"}
            )

    def _settle(self, _: Settle) -> None:
        if (
            self.status == ExecutionStatus.RUNNING
            and not self.ready
            and self.in_flight == 0
            and self.state.is_finished()
            and self._failure is None
        ):
            self._finish()
        self._emit_progress()

    def _control(self, command: Control) -> None:
        if self.status in FINAL_EXECUTION:
            return
        if command.action == "cancel" and self._failure is not None:
            # Cancelling a failed execution's handler: it stays failed.
            self._fail_execution(self._failure)
        elif command.action == "cancel":
            self._fx.cancel_dispatches = True
            self._close_remaining(_S.CANCELLED)
            self.status = ExecutionStatus.CANCELLED
            self._fx.execution.update(status="cancelled", finished_at=self._now, owner=None)
            self._fx.transitions.append("execution.cancel")
            self._event("execution.cancelled", None, {})
        elif command.action == "pause" and self.status == ExecutionStatus.RUNNING:
            self.status = ExecutionStatus.PAUSED
            self._fx.execution["status"] = "paused"
            self._fx.transitions.append("execution.pause")
            self._event("execution.paused", None, {})
        elif command.action == "resume" and self.status == ExecutionStatus.PAUSED:
            self.status = ExecutionStatus.RUNNING
            self._fx.execution["status"] = "running"
            self._fx.transitions.append("execution.resume")
            self._event("execution.resumed", None, {})

    def _deadline(self, command: DeadlineDue) -> None:
        self.timers.pop(DEADLINE_TIMER, None)
        self._fail_execution(
            {
                "type": "Timeout",
                "message": f"execution exceeded the tenant's maximum duration "
                f"of {command.limit_s:g} s",
            }
        )

    # ---- transitions: attempts ----------------------------------------------------------

    def _start_attempt(self, command: StartAttempt) -> None:
        if self.status != ExecutionStatus.RUNNING or command.node_id not in self.ready:
            raise IllegalTransition(f"node {command.node_id!r} is not ready to start")
        if self.ready[0] == command.node_id:
            self.ready.popleft()
        else:
            self.ready.remove(command.node_id)
        node = self.nodes[command.node_id]
        self._lost.discard(node.node_id)
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] == node.node_id:
            context = prepared[1]
        else:
            context = self._context_for(node, node.attempt + 1)
        now = self._now
        self._move(node, _S.RUNNING)
        node.attempt += 1
        node.attempt_started = now
        if node.started_at is None:
            node.started_at = now
        node.inputs = {k: v for k, v in context.items() if k != "system"}
        self.in_flight += 1
        if command.secret_error is not None:
            self._end_in_flight(node)
            failure = {
                "type": command.error_type or "SecretError",
                "message": command.secret_error,
                "retryable": False,
            }
            self._fail_attempt(node, {**failure, "details": None}, infra=False)
            return
        if command.secret_values:
            self.redactions = redactable([*self.redactions, *command.secret_values])
        if command.cached is not None:
            self._end_in_flight(node)
            self._dirty(node)
            self._succeed(node, command.cached["output"], command.cached["ports"], _S.CACHED)
            return
        node.due_at = None
        self._dirty(node)
        self._event("node.started", node.node_id, {"attempt": node.attempt, "type": node.node_type})
        self._fx.attempts.append(
            StartedAttempt(
                node_id=node.node_id,
                node_type=node.node_type,
                attempt=node.attempt,
                idempotency_key=dispatch_key(self.id, node),
                context=context,
                live_inputs=[]
                if node.node_id == self.handler_id
                else self.state.live_inputs(node.node_id),
            )
        )

    def _in_flight_node(self, node_id: str, attempt: int) -> NodeState | None:
        node = self.nodes.get(node_id)
        # A late result of a superseded attempt (or of a cancelled execution) is fenced off.
        if node is None or node.attempt != attempt or node.status not in (_S.RUNNING, _S.QUEUED):
            return None
        if self._lost and node_id in self._lost:
            return None  # checked first: a stale result must not move the node
        if node.status == _S.QUEUED:
            self._move(node, _S.RUNNING)  # ends while queued (schedule-to-start timeout)
        self._end_in_flight(node)
        return node

    def _end_in_flight(self, node: NodeState) -> None:
        self.in_flight -= 1
        self._fx.released += 1

    def _node_result(self, result: NodeResult) -> None:
        node = self._in_flight_node(result.node_id, result.attempt)
        if node is None:
            return
        kind = result.kind
        error = result.error if kind == "failed" else None
        self._fx.ended.append(
            AttemptEnded(
                node.node_id,
                node.node_type,
                kind,
                f"{error.get('type')}: {error.get('message')}" if error is not None else None,
            )
        )
        for record in result.logs[:MAX_LOG_EVENTS]:
            self._event("log", node.node_id, {"attempt": node.attempt, **record})
        if kind == "succeeded":
            ports = None if result.ports is None else list(result.ports)
            self._succeed(node, result.output, ports, _S.SUCCEEDED, result.output_size)
            spec = self.specs[node.node_id]
            if spec.cache is not None:
                self._fx.cache.append(
                    CacheStore(
                        node.node_id, {"output": node.output, "ports": ports}, spec.cache.ttl_s
                    )
                )
        elif kind == "skipped":
            node.attempts.append(_attempt_record(node, "skipped", self._now, None))
            self._terminal(node, _S.SKIPPED, Outcome("skipped"), {"reason": "when"})
        elif kind == "waiting":
            waiting = result.waiting or {}
            self._move(node, _S.WAITING)
            node.waiting = waiting
            timeout = waiting.get("timeout_s")
            if timeout:
                node.due_at = self._now + dt.timedelta(seconds=float(timeout))
                self._arm(node.node_id, TimerKind.INPUT_TIMEOUT, node.attempt, float(timeout))
            self._dirty(node)
            self._event("node.waiting", node.node_id, {"attempt": node.attempt, **waiting})
        elif kind == "failed":
            self._fail_attempt(node, dict(error or {}), infra=False)
        else:
            raise UnknownCommand(f"unknown node result kind {kind!r}")

    def _progress(self, command: Progress) -> None:
        node = self.nodes.get(command.node_id)
        if node is None or node.attempt != command.attempt or node.status != _S.RUNNING:
            return
        if command.delta:
            self.progress.setdefault(node.node_id, []).append(command.delta)

    def _checkpoint(self, command: Checkpoint) -> None:
        node = self.nodes.get(command.node_id)
        if node is None or node.attempt != command.attempt or node.status != _S.RUNNING:
            return  # a stale attempt's report: never overwrite what the current one reached
        event = command.event if command.event in CHECKPOINT_EVENTS else "node.progress"
        if not command.kept:  # published only: no row written for it
            self._event(event, node.node_id, {**command.progress, "attempt": node.attempt})
            return
        if command.journal_at is None:
            node.checkpoint = command.checkpoint
            node.journal_written = None  # written whole next time
        else:
            saved = node.checkpoint or {}
            journal = saved.get("journal") or []
            if not isinstance(journal, list) or len(journal) != command.journal_at:
                return  # not the journal it extends: refused (an acknowledged one fences)
            entries = command.checkpoint.get("journal") or []
            node.checkpoint = {**saved, "journal": [*journal, *entries]}
        self._dirty(node, journal_only=command.journal_at is not None)
        self._fx.checkpointed = True
        self._event(event, node.node_id, {**command.progress, "attempt": node.attempt})

    def _queued(self, command: Queued) -> None:
        node = self.nodes.get(command.node_id)
        if node is None or node.attempt != command.attempt:
            return
        if command.waiting and node.status == _S.RUNNING:
            self._move(node, _S.QUEUED)
            data = {"attempt": node.attempt, "type": node.node_type, "reason": command.reason}
            self._event("node.queued", node.node_id, data)
        elif not command.waiting and node.status == _S.QUEUED:
            self._move(node, _S.RUNNING)
            self._event("node.assigned", node.node_id, {"attempt": node.attempt})
        else:
            return
        self._dirty(node)

    def _dispatch_failed(self, command: DispatchFailed) -> None:
        node = self._in_flight_node(command.node_id, command.attempt)
        if node is None:
            return
        reason = redact(command.reason, self.redactions) if self.redactions else command.reason
        self._fx.ended.append(AttemptEnded(node.node_id, node.node_type, "dispatch_failed", reason))
        error_type, _, message = reason.partition(": ")
        infra = error_type == "NodeUnavailable"
        error = {"type": error_type, "message": message, "retryable": True, "details": None}
        self._fail_attempt(node, error, infra=infra)

    def _timer_due(self, command: TimerDue) -> None:
        if command.kind == TimerKind.DEADLINE:
            self._deadline(DeadlineDue(self.config.deadline_s))
            return
        node = self.nodes[command.key]
        self.timers.pop(command.key, None)
        if node.attempt != command.attempt:
            return
        if command.kind == TimerKind.RETRY and node.status == _S.RETRYING:
            self._fx.transitions.append("retry_due")
            self._make_ready([node.node_id])
        elif command.kind == TimerKind.INPUT_TIMEOUT and node.status == _S.WAITING:
            waiting = node.waiting or {}
            delay = waiting.get("delay")
            message = f"no input within {waiting.get('timeout_s')} s"
            if isinstance(delay, dict):  # a delay node's timer (services/node/executors/flow.py)
                seconds = float(delay.get("seconds") or 0)
                if float(waiting.get("timeout_s") or 0) >= seconds:
                    self._succeed(node, {"waited_s": seconds}, None, _S.SUCCEEDED)
                    return
                message = f"the delay of {seconds:g} s is longer than the node's timeout"
            error = {
                "type": "Timeout",
                "message": message,
                "retryable": False,
                "details": None,
            }
            node.attempts.append(_attempt_record(node, "failed", self._now, error))
            self._fail_node(node, error)

    def _human_input(self, command: HumanInput) -> None:
        node = self.nodes.get(command.node_id)
        if node is None or node.status != _S.WAITING:
            status = node.status.value if node else "unknown"
            raise InputRejected(f"node {command.node_id!r} is not waiting for input ({status})")
        if "delay" in (node.waiting or {}):
            raise InputRejected(f"node {command.node_id!r} is a delay, not waiting for input")
        approval = (node.waiting or {}).get("approval")
        if isinstance(approval, dict):
            self._decided(node, approval, command.data)
            return
        self._succeed(node, {"data": command.data}, None, _S.SUCCEEDED)

    def _decided(self, node: NodeState, approval: dict[str, Any], data: Any) -> None:
        """A person's decision on an agent's tool call (approve, edit, reject): kept in the
        node's checkpoint beside its journal, and the node runs again, resuming there."""
        decision = data if isinstance(data, dict) else {}
        if decision.get("action") not in ("approve", "edit", "reject"):
            raise InputRejected("a tool approval needs action: approve, edit or reject")
        if decision["action"] == "edit" and not isinstance(decision.get("arguments"), dict):
            raise InputRejected("action 'edit' needs the edited arguments (an object)")
        node.attempts.append(_attempt_record(node, "waited", self._now, None))
        node.checkpoint = {
            **(node.checkpoint or {}),
            "approval": {**decision, "key": approval.get("key")},
        }
        node.journal_written = None
        node.waiting = None
        self._disarm(node.node_id)
        self._move(node, _S.RETRYING)
        node.due_at = self._now
        self._dirty(node)
        self._event(
            "node.retrying",
            node.node_id,
            {
                "attempt": node.attempt,
                "next_attempt": node.attempt + 1,
                "delay_s": 0.0,
                "error": None,
                "decision": decision,
            },
        )
        self._arm(node.node_id, TimerKind.RETRY, node.attempt, 0.0)

    # ---- rules --------------------------------------------------------------------------

    def _fail_attempt(self, node: NodeState, error: dict[str, Any], *, infra: bool) -> None:
        spec = self.specs[node.node_id]
        now = self._now
        node.attempts.append(_attempt_record(node, "failed", now, error))
        max_attempts = spec.retry.max_attempts if spec.retry else 1
        if infra and node.infra_failures < self.config.dispatch_retries:
            # A replica fault costs a retry, not the execution, whatever the node's policy.
            node.infra_failures += 1
            delay = min(0.05 * 2**node.infra_failures, 1.0)
        elif error.get("retryable") and node.attempt < max_attempts:
            delay = self._retry_delay(spec, node.attempt)
            # A server's Retry-After (429/503) is a floor, bounded by the policy's max delay.
            details = error.get("details")
            hinted = details.get("retry_after") if isinstance(details, dict) else None
            if isinstance(hinted, int | float) and spec.retry is not None and hinted > delay:
                delay = min(float(hinted), spec.retry.max_delay_s)
        else:
            self._fail_node(node, error)
            return
        self._fx.retried.append(node.node_type)
        self._move(node, _S.RETRYING)
        node.error = error
        node.due_at = now + dt.timedelta(seconds=delay)
        self._dirty(node)
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
        self._arm(node.node_id, TimerKind.RETRY, node.attempt, delay)

    def _fail_node(self, node: NodeState, error: dict[str, Any]) -> None:
        spec = self.specs[node.node_id]
        mode = spec.on_error
        node.error = error
        if mode == "skip":
            self._terminal(
                node, _S.SKIPPED, Outcome("skipped"), {"reason": "error", "error": error}
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
        self._terminal(node, _S.FAILED, outcome, {"error": error, "on_error": mode})
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
        status: NodeStatus,
        output_size: int | None = None,
    ) -> None:
        node.output = output
        node.active_ports = ports
        node.error = None
        node.attempts.append(_attempt_record(node, status.value, self._now, None))
        active = frozenset(ports) if ports is not None else None
        self._terminal(node, status, Outcome("succeeded", active), None, output_size)

    def _terminal(
        self,
        node: NodeState,
        status: NodeStatus,
        outcome: Outcome,
        extra: dict[str, Any] | None,
        output_size: int | None = None,
    ) -> None:
        now = self._now
        self._emit_progress(node.node_id)
        self._move(node, status)
        node.finished_at = now
        node.due_at = None
        self._fx.finished.append((node.node_type, status.value))
        self._disarm(node.node_id)
        self._dirty(node)
        data: dict[str, Any] = {"status": status.value, "attempt": node.attempt}
        if node.started_at is not None:
            data["duration_ms"] = round((now - node.started_at).total_seconds() * 1000, 3)
        if extra:
            data.update(extra)
        if status in (_S.SUCCEEDED, _S.CACHED) or (status == _S.FAILED and node.output is not None):
            if output_size is None:
                output_size = len(jsonutil.dumps(node.output))
            if output_size <= EVENT_OUTPUT_LIMIT:
                data["output"] = node.output
            else:
                data["output_truncated"] = True
        self._event(_FINISH_EVENTS[status], node.node_id, data)
        if self.status in FINAL_EXECUTION:
            return
        if node.node_id == self.handler_id:
            # The failure handler ended (whatever its result): the execution fails now.
            self._fail_execution(self._failure or self.info.error or _NODE_FAILED)
            return
        transition = self.state.complete(node.node_id, outcome)
        self._mark_skipped(transition.skipped, f"upstream {node.node_id!r} did not lead here")
        self._make_ready(transition.ready)

    def _mark_skipped(self, node_ids: Sequence[str], reason: str) -> None:
        now = self._now
        for node_id in node_ids:
            node = self.nodes[node_id]
            self._move(node, _S.SKIPPED)
            node.finished_at = now
            self._fx.finished.append((node.node_type, "skipped"))
            self._dirty(node)
            self._event("node.skipped", node_id, {"status": "skipped", "reason": reason})

    def _close_remaining(self, status: NodeStatus, keep: str | None = None) -> None:
        now = self._now
        self.ready.clear()
        for node in self.nodes.values():
            if node.status not in TERMINAL_NODE and node.node_id != keep:
                if node.status in (_S.RUNNING, _S.QUEUED) and node.node_id not in self._lost:
                    self._end_in_flight(node)
                    node.attempts.append(_attempt_record(node, status.value, now, None))
                    self._fx.ended.append(AttemptEnded(node.node_id, node.node_type, status.value))
                self._fx.finished.append((node.node_type, status.value))
                self._move(node, status)
                node.finished_at = now
                node.due_at = None
                self._disarm(node.node_id)
                self._dirty(node)

    def _fail_execution(self, error: dict[str, Any]) -> None:
        if self.status in FINAL_EXECUTION:
            return
        handler = self.nodes.get(self.handler_id) if self.handler_id else None
        if handler is not None and self._failure is None and handler.status not in TERMINAL_NODE:
            self._handle_failure(handler, error)
            return
        if self._failure is not None:
            error = self._failure  # the failure the handler ran for, not a later one
        self._fx.cancel_dispatches = True
        self._close_remaining(_S.CANCELLED)
        self.status = ExecutionStatus.FAILED
        self._fx.execution.update(status="failed", error=error, finished_at=self._now, owner=None)
        self._fx.transitions.append("execution.fail")
        self._event("execution.failed", None, {"error": error})

    def _handle_failure(self, handler: NodeState, error: dict[str, Any]) -> None:
        """The execution failed and has an on_failure handler: stop the rest, persist the
        error with the handler's intent (the execution row's error while it still runs, in
        the same flush as the failure), and make the handler ready. Runs on takeover too."""
        self._failure = error
        self._fx.cancel_dispatches = True
        self._close_remaining(_S.CANCELLED, keep=handler.node_id)
        self._fx.execution["error"] = error
        self._fx.transitions.append("execution.on_failure")
        self._event("execution.on_failure", handler.node_id, {"error": error})
        if handler.status == _S.PENDING:
            self._make_ready([handler.node_id])
        elif handler.node_id in self._lost:
            # Taken over while it ran: Begin made it ready, and closing the rest cleared that.
            self.ready.append(handler.node_id)

    def _finish(self) -> None:
        try:
            outputs = self._outputs()
        except ExpressionError as error:
            self._fail_execution({"type": "OutputError", "message": error.message})
            return
        handler = self.nodes.get(self.handler_id) if self.handler_id else None
        if handler is not None and handler.status == _S.PENDING:
            self._mark_skipped([handler.node_id], "the execution did not fail")
        self.status = ExecutionStatus.SUCCEEDED
        self._fx.execution.update(
            status="succeeded", outputs=outputs, finished_at=self._now, owner=None
        )
        self._fx.transitions.append("execution.succeed")
        self._event("execution.completed", None, {"outputs": outputs})

    def _outputs(self) -> Any:
        if self.definition.outputs is not None:
            return render(self.definition.outputs, self.full_context())
        outputs: dict[str, Any] = {}
        for spec in self.definition.nodes:
            node = self.nodes[spec.id]
            if spec.type == "output" and node.status in (_S.SUCCEEDED, _S.CACHED):
                if isinstance(node.output, dict):
                    outputs.update(node.output)
                else:
                    outputs[spec.id] = node.output
        return outputs

    # ---- helpers ------------------------------------------------------------------------

    def _move(self, node: NodeState, to: NodeStatus) -> None:
        name = NODE_TRANSITIONS.get((node.status, to))
        if name is None:
            raise IllegalTransition(
                f"node {node.node_id!r}: no transition from {node.status.value} to {to.value}"
            )
        node.status = to
        self._fx.transitions.append(name)

    def _make_ready(self, node_ids: Sequence[str]) -> None:
        if node_ids:
            self.ready.extend(node_ids)
            self._fx.ready.extend(node_ids)

    def _dirty(self, node: NodeState, journal_only: bool = False) -> None:
        if not journal_only:
            node.row_written = False  # the next write carries the whole row
        self._fx.nodes[node.node_id] = node

    def _arm(self, key: str, kind: TimerKind, attempt: int, delay: float) -> None:
        self.timers[key] = kind
        self._fx.arm[key] = (kind, attempt, max(0.0, delay))

    def _disarm(self, key: str) -> None:
        if self.timers.pop(key, None) is not None:
            self._fx.arm.pop(key, None)
            self._fx.disarm.append(key)

    def _emit_progress(self, node_id: str | None = None) -> None:
        """One `node.text_chunk` event per node for the tokens gathered since the last batch
        (all nodes, or node_id's before it ends, so its tokens precede its completion)."""
        if not self.progress:
            return
        for key in [node_id] if node_id is not None else list(self.progress):
            parts = self.progress.pop(key, None)
            if parts:
                attempt = self.nodes[key].attempt
                self._event("node.text_chunk", key, {"attempt": attempt, "delta": "".join(parts)})

    def _event(self, event_type: str, node_id: str | None, data: dict[str, Any]) -> None:
        if self.redactions:
            data = redact(data, self.redactions)
        self.seq += 1
        info = self.info
        self._fx.events.append(
            {
                "execution_id": info.id,
                "seq": self.seq,
                "type": event_type,
                "node_id": node_id,
                "ts": self._now,
                "data": data,
                "trace_id": info.trace_id,
                "tenant_id": info.tenant_id,
                "workflow_id": info.workflow_id,
            }
        )

    def _context_for(self, node: NodeState, attempt: int) -> dict[str, Any]:
        if node.node_id == self.handler_id:
            # The failure handler reads the error, the inputs and every node's output.
            handling = self.full_context()
            handling["system"] = self._system(node, attempt)
            failure = self._failure or self.info.error or _NODE_FAILED
            handling["error"] = {"node_id": None, **failure}
            return handling
        context: dict[str, Any] = {
            "inputs": self.info.inputs or {},
            "system": self._system(node, attempt),
        }
        needed = set(self.plan.referenced_nodes(node.node_id))
        needed.update(source for source, _, _ in self.state.live_inputs(node.node_id))
        for node_id in needed:
            upstream = self.nodes.get(node_id)
            if upstream is not None and upstream.status in WITH_OUTPUT:
                context[node_id] = upstream.output
        return context

    def _system(self, node: NodeState | None, attempt: int = 0) -> dict[str, Any]:
        system: dict[str, Any] = {"execution_id": self.id, "workflow_id": self.info.workflow_id}
        if node is not None:
            retry = self.specs[node.node_id].retry
            # max_attempts: the node's own policy; its ai calls then make no retries of their
            # own on top of it (the ai service's are per call, so they would multiply).
            system.update(
                node_id=node.node_id,
                attempt=attempt,
                max_attempts=retry.max_attempts if retry is not None else 1,
            )
            if node.checkpoint is not None:
                system["checkpoint"] = node.checkpoint
        return system


ExecutionCore._HANDLERS.update(
    {
        Begin: ExecutionCore._begin,
        StartAttempt: ExecutionCore._start_attempt,
        NodeResult: ExecutionCore._node_result,
        Progress: ExecutionCore._progress,
        Checkpoint: ExecutionCore._checkpoint,
        Queued: ExecutionCore._queued,
        DispatchFailed: ExecutionCore._dispatch_failed,
        TimerDue: ExecutionCore._timer_due,
        Control: ExecutionCore._control,
        HumanInput: ExecutionCore._human_input,
        DeadlineDue: ExecutionCore._deadline,
        Settle: ExecutionCore._settle,
    }
)
