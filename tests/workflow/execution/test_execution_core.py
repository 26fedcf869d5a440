"""Unit tests of the pure execution core: no I/O, no event loop, time passed in."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from services.workflow.execution import (
    Begin,
    Control,
    CoreConfig,
    DeadlineDue,
    DispatchFailed,
    ExecutionCore,
    ExecutionInfo,
    HumanInput,
    IllegalTransition,
    InputRejected,
    NodeResult,
    NodeState,
    NodeStatus,
    Settle,
    StartAttempt,
    TimerDue,
    TimerKind,
    UnknownCommand,
)
from services.workflow.planner import ExecutionPlan
from services.workflow.validation import validate_definition
from tests.workflow.catalog import core_catalog

CATALOG = core_catalog()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def core_for(raw: dict[str, Any], **config: Any) -> ExecutionCore:
    report = validate_definition(raw, CATALOG)
    assert not report.errors, report.errors
    definition = report.definition
    assert definition is not None
    plan = ExecutionPlan.build(definition, CATALOG)
    nodes = {n.id: NodeState(n.id, n.type) for n in definition.nodes}
    info = ExecutionInfo(id="e1", workflow_id="w1", tenant_id="t1", status="pending", created_at=T0)
    return ExecutionCore(info, definition, plan, nodes, CoreConfig(**config))


def chain(*ids: str, **node_fields: Any) -> dict[str, Any]:
    nodes = [{"id": i, "type": "noop", **node_fields.get(i, {})} for i in ids]
    edges = [{"source": a, "target": b} for a, b in itertools.pairwise(ids)]
    return {"name": "chain", "nodes": nodes, "edges": edges}


def ok(node_id: str, attempt: int = 1, output: Any = None) -> NodeResult:
    return NodeResult(node_id, attempt, "succeeded", output=output or {"from": node_id})


def failed(node_id: str, attempt: int = 1, *, retryable: bool = False) -> NodeResult:
    error = {"type": "NodeError", "message": "boom", "retryable": retryable, "details": None}
    return NodeResult(node_id, attempt, "failed", error=error)


def event_types(*effects: Any) -> list[str]:
    return [event["type"] for fx in effects for event in fx.events]


def test_a_chain_runs_start_to_finish() -> None:
    core = core_for(chain("a", "b"))
    begun = core.apply(Begin(), T0)
    assert begun.status == "running" and begun.ready == ["a"]
    assert event_types(begun) == ["execution.started"]
    started = core.apply(StartAttempt("a"), T0)
    (attempt,) = started.attempts
    assert (attempt.node_id, attempt.attempt, attempt.idempotency_key) == ("a", 1, "e1/a/1")
    assert started.nodes["a"].status == "running"
    done = core.apply(ok("a"), T0 + dt.timedelta(seconds=1))
    assert done.released == 1 and done.ready == ["b"]
    assert done.finished == [("noop", "succeeded")]
    assert done.transitions == ["succeed"]
    core.apply(StartAttempt("b"), T0)
    core.apply(ok("b"), T0)
    end = core.apply(Settle(), T0)
    assert end.status == "succeeded"
    assert end.execution["status"] == "succeeded"
    assert event_types(end) == ["execution.completed"]
    assert [e["seq"] for e in end.events] == [core.seq]


def test_an_unknown_command_raises() -> None:
    core = core_for(chain("a"))

    class Bogus:
        pass

    with pytest.raises(UnknownCommand):
        core.apply(Bogus(), T0)  # type: ignore[arg-type]


def test_a_node_that_is_not_ready_cannot_start() -> None:
    core = core_for(chain("a", "b"))
    core.apply(Begin(), T0)
    with pytest.raises(IllegalTransition):
        core.apply(StartAttempt("b"), T0)


def test_a_retryable_failure_arms_a_retry_and_the_timer_makes_it_ready() -> None:
    policy = {"retry": {"max_attempts": 2, "backoff": "fixed", "initial_delay_s": 2}}
    core = core_for(chain("a", a=policy))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    fx = core.apply(failed("a", retryable=True), T0)
    assert fx.nodes["a"].status == "retrying"
    assert fx.arm == {"a": (TimerKind.RETRY, 1, 2.0)}
    assert fx.retried == ["noop"]
    assert event_types(fx) == ["node.retrying"]
    assert core.apply(TimerDue("a", 1, TimerKind.RETRY), T0).ready == ["a"]
    again = core.apply(StartAttempt("a"), T0)
    # A retry by the policy is a new logical dispatch: a new idempotency key.
    assert again.attempts[0].idempotency_key == "e1/a/2"
    last = core.apply(failed("a", 2, retryable=True), T0)
    assert last.status == "failed"
    assert event_types(last) == ["node.failed", "execution.failed"]


def test_a_node_replica_fault_costs_a_retry_and_keeps_the_key() -> None:
    core = core_for(chain("a"), dispatch_retries=1)
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    fx = core.apply(DispatchFailed("a", 1, "NodeUnavailable: gone"), T0)
    assert fx.nodes["a"].status == "retrying"
    assert fx.ended[0].outcome == "dispatch_failed"
    core.apply(TimerDue("a", 1, TimerKind.RETRY), T0)
    assert core.apply(StartAttempt("a"), T0).attempts[0].idempotency_key == "e1/a/1"


@pytest.mark.parametrize(
    ("on_error", "status", "downstream"),
    [
        ("fail", "failed", "cancelled"),
        ("continue", "failed", "succeeded"),
        ("skip", "skipped", "skipped"),
    ],
)
def test_on_error_decides_what_follows_a_failure(
    on_error: str, status: str, downstream: str
) -> None:
    core = core_for(chain("a", "b", a={"on_error": on_error}))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    core.apply(failed("a"), T0)
    if core.ready:
        core.apply(StartAttempt("b"), T0)
        core.apply(ok("b"), T0)
    core.apply(Settle(), T0)
    assert core.nodes["a"].status == status
    assert core.nodes["b"].status == downstream
    assert core.final


def test_a_late_result_of_a_superseded_attempt_is_fenced_off() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    fx = core.apply(ok("a", attempt=7), T0)
    assert not fx.nodes and not fx.events and fx.released == 0


def test_cancel_closes_every_open_node_and_stops_dispatches() -> None:
    core = core_for(chain("a", "b"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    fx = core.apply(Control("cancel"), T0)
    assert fx.status == "cancelled" and fx.cancel_dispatches and fx.released == 1
    assert {n: s.status for n, s in core.nodes.items()} == {"a": "cancelled", "b": "cancelled"}
    assert core.nodes["a"].attempts[-1]["status"] == "cancelled"
    assert event_types(fx) == ["execution.cancelled"]
    assert core.apply(Control("resume"), T0).events == []


def test_pause_holds_new_attempts_and_resume_releases_them() -> None:
    core = core_for(chain("a", "b"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    assert core.apply(Control("pause"), T0).status == "paused"
    core.apply(ok("a"), T0)
    assert core.ready and core.room == 0
    assert core.apply(Control("resume"), T0).status == "running"
    assert core.room == 1


def test_human_input_completes_a_waiting_node_and_is_refused_otherwise() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    with pytest.raises(InputRejected):
        core.apply(HumanInput("a", {"ok": True}), T0)
    waiting = core.apply(
        NodeResult("a", 1, "waiting", waiting={"prompt": "ok?", "timeout_s": 60}), T0
    )
    assert waiting.arm == {"a": (TimerKind.INPUT_TIMEOUT, 1, 60.0)}
    fx = core.apply(HumanInput("a", {"ok": True}), T0)
    assert fx.nodes["a"].output == {"data": {"ok": True}}
    assert fx.disarm == ["a"]


def test_no_input_in_time_fails_the_node() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    core.apply(NodeResult("a", 1, "waiting", waiting={"timeout_s": 5}), T0)
    fx = core.apply(TimerDue("a", 1, TimerKind.INPUT_TIMEOUT), T0 + dt.timedelta(seconds=5))
    assert fx.nodes["a"].error is not None and fx.nodes["a"].error["type"] == "Timeout"
    assert fx.status == "failed"


def test_a_delay_timer_succeeds_its_node_refuses_input_and_is_cut_by_a_shorter_timeout() -> None:
    core = core_for(chain("a", "b"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    delay = {"prompt": "delay of 30 s", "delay": {"seconds": 30}}
    waiting = core.apply(NodeResult("a", 1, "waiting", waiting={**delay, "timeout_s": 30}), T0)
    assert waiting.arm == {"a": (TimerKind.INPUT_TIMEOUT, 1, 30.0)}
    with pytest.raises(InputRejected, match="is a delay"):
        core.apply(HumanInput("a", {"early": True}), T0)
    fx = core.apply(TimerDue("a", 1, TimerKind.INPUT_TIMEOUT), T0 + dt.timedelta(seconds=30))
    assert fx.nodes["a"].status.value == "succeeded" and fx.nodes["a"].output == {"waited_s": 30}
    assert list(core.ready) == ["b"]

    cut = core_for(chain("a"))
    cut.apply(Begin(), T0)
    cut.apply(StartAttempt("a"), T0)
    cut.apply(NodeResult("a", 1, "waiting", waiting={**delay, "timeout_s": 5}), T0)
    fx = cut.apply(TimerDue("a", 1, TimerKind.INPUT_TIMEOUT), T0 + dt.timedelta(seconds=5))
    error = fx.nodes["a"].error
    assert error is not None and error["type"] == "Timeout" and "delay of 30 s" in error["message"]
    assert fx.status == "failed"


def test_the_deadline_is_armed_from_creation_and_fails_the_execution() -> None:
    core = core_for(chain("a"), deadline_s=10)
    begun = core.apply(Begin(), T0 + dt.timedelta(seconds=4))
    assert begun.arm[""] == (TimerKind.DEADLINE, 0, 6.0)
    core.apply(StartAttempt("a"), T0)
    fx = core.apply(DeadlineDue(10), T0 + dt.timedelta(seconds=10))
    assert fx.status == "failed" and fx.execution["error"]["type"] == "Timeout"


def test_a_cache_hit_completes_at_once_and_a_secret_error_fails_at_once() -> None:
    core = core_for(chain("a", "b"))
    core.apply(Begin(), T0)
    hit = core.apply(StartAttempt("a", cached={"output": {"x": 1}, "ports": None}), T0)
    assert hit.nodes["a"].status == "cached" and not hit.attempts and hit.released == 1
    assert hit.ready == ["b"]
    miss = core.apply(StartAttempt("b", secret_error="secret 'K' not found"), T0)
    assert miss.nodes["b"].error is not None
    assert miss.nodes["b"].error["type"] == "SecretError"
    assert miss.status == "failed"


def test_a_refusal_at_dispatch_fails_with_its_own_error_type() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    message = "agent 'helper' is paused: it takes no new work"
    fx = core.apply(StartAttempt("a", secret_error=message, error_type="agent_paused"), T0)
    error = fx.nodes["a"].error
    assert error is not None and (error["type"], error["message"]) == ("agent_paused", message)
    assert fx.status == "failed" and not fx.attempts


def test_secret_values_are_redacted_from_events() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a", secret_values=("hunter22",)), T0)
    fx = core.apply(ok("a", output={"leak": "hunter22"}), T0)
    assert "hunter22" not in repr(fx.events)


def test_takeover_sends_lost_attempts_again_with_the_same_key() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    nodes = {"a": NodeState("a", "noop", status=NodeStatus.RUNNING, attempt=1)}
    info = ExecutionInfo(id="e1", workflow_id="w1", tenant_id="t1", status="running")
    taken = ExecutionCore(info, core.definition, core.plan, nodes, CoreConfig())
    fx = taken.apply(Begin(), T0)
    assert fx.ready == ["a"] and fx.nodes["a"].attempts[-1]["status"] == "lost"
    assert taken.apply(ok("a", 1), T0).events == []  # the lost attempt's result is stale
    again = taken.apply(StartAttempt("a"), T0)
    assert again.attempts[0].idempotency_key == "e1/a/1"
    assert again.transitions == ["redispatch"]


def test_a_stale_result_of_a_queued_attempt_lost_in_a_takeover_changes_nothing() -> None:
    core = core_for(chain("a"))
    nodes = {"a": NodeState("a", "noop", status=NodeStatus.QUEUED, attempt=1)}
    info = ExecutionInfo(id="e1", workflow_id="w1", tenant_id="t1", status="running")
    taken = ExecutionCore(info, core.definition, core.plan, nodes, CoreConfig())
    taken.apply(Begin(), T0)
    stale = taken.apply(ok("a", 1), T0)
    assert stale.transitions == [] and not stale.nodes
    assert taken.nodes["a"].status == "queued"
    assert taken.apply(StartAttempt("a"), T0).transitions == ["redispatch"]
