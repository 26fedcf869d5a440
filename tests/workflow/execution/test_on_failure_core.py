"""The core's on_failure transitions: a failed execution runs its handler once, with the error,
persisted with the failure so that a takeover resumes it; the execution ends failed."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from libs.common.definition import ON_FAILURE_NODE_ID
from services.workflow.execution import (
    Begin,
    Control,
    CoreConfig,
    DeadlineDue,
    ExecutionCore,
    ExecutionInfo,
    NodeState,
    Settle,
    StartAttempt,
)
from services.workflow.planner import ExecutionPlan
from services.workflow.validation import validate_definition
from tests.workflow.catalog import core_catalog
from tests.workflow.execution.test_execution_core import event_types, failed, ok

CATALOG = core_catalog()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
H = ON_FAILURE_NODE_ID

RAW: dict[str, Any] = {
    "name": "handled",
    "nodes": [{"id": "a", "type": "noop"}, {"id": "b", "type": "noop"}],
    "edges": [{"source": "a", "target": "b"}],
    "on_failure": {"type": "transform", "params": {"expression": "error.message"}},
}


def core_for(
    raw: dict[str, Any],
    nodes: dict[str, NodeState] | None = None,
    *,
    status: str = "pending",
    error: dict[str, Any] | None = None,
) -> ExecutionCore:
    """A core as the engine builds it: the plan from the graph, the handler appended after."""
    report = validate_definition(raw, CATALOG)
    assert not report.errors, report.errors
    definition = report.definition
    assert definition is not None and definition.on_failure is not None
    plan = ExecutionPlan.build(definition, CATALOG)
    definition = definition.model_copy(
        update={"nodes": [*definition.nodes, definition.on_failure.node()]}
    )
    if nodes is None:
        nodes = {n.id: NodeState(n.id, n.type) for n in definition.nodes}
    info = ExecutionInfo(
        id="e1", workflow_id="w1", tenant_id="t1", status=status, created_at=T0, error=error
    )
    return ExecutionCore(info, definition, plan, nodes, CoreConfig())


def persisted(core: ExecutionCore) -> dict[str, NodeState]:
    """What the node rows hold (a copy of every node as the last flush wrote it)."""
    return {k: dataclasses.replace(n, attempts=list(n.attempts)) for k, n in core.nodes.items()}


def fail_a(core: ExecutionCore) -> Any:
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    return core.apply(failed("a"), T0)


def test_a_failure_runs_the_handler_with_the_error_then_fails() -> None:
    core = core_for(RAW)
    fx = fail_a(core)
    # The failure and the handler's intent in one flush: the error on the (running) execution.
    assert fx.status is None and core.status == "running"
    assert fx.execution["error"]["node_id"] == "a"
    assert fx.ready == [H] and fx.nodes["b"].status == "cancelled"
    assert "execution.on_failure" in fx.transitions
    assert event_types(fx)[-1] == "execution.on_failure"
    context = core.attempt_context(H)
    assert context["error"]["node_id"] == "a" and "boom" in context["error"]["message"]
    assert context["a"] is None and context["inputs"] == {}
    (attempt,) = core.apply(StartAttempt(H), T0).attempts
    assert attempt.context["error"]["type"] == "NodeFailed"
    assert core.apply(Settle(), T0).status is None  # not finished while the handler runs
    end = core.apply(ok(H), T0)
    assert end.status == "failed"
    assert end.execution["error"]["node_id"] == "a"
    assert event_types(end)[-1] == "execution.failed"


def test_the_handler_failing_or_a_deadline_keeps_the_first_error() -> None:
    core = core_for(RAW)
    fail_a(core)
    core.apply(StartAttempt(H), T0)
    end = core.apply(failed(H), T0)
    assert end.status == "failed" and end.execution["error"]["node_id"] == "a"
    core = core_for(RAW)
    fail_a(core)
    end = core.apply(DeadlineDue(60), T0)
    assert end.status == "failed" and end.execution["error"]["node_id"] == "a"
    assert end.nodes[H].status == "cancelled"


def test_success_skips_the_handler_and_cancel_cancels_it() -> None:
    core = core_for(RAW)
    core.apply(Begin(), T0)
    for node_id in ("a", "b"):
        core.apply(StartAttempt(node_id), T0)
        core.apply(ok(node_id), T0)
    end = core.apply(Settle(), T0)
    assert end.status == "succeeded" and core.nodes[H].status == "skipped"
    core = core_for(RAW)
    core.apply(Begin(), T0)
    end = core.apply(Control("cancel"), T0)
    assert end.status == "cancelled" and core.nodes[H].status == "cancelled"


def test_a_cancel_while_the_handler_runs_leaves_the_execution_failed() -> None:
    core = core_for(RAW)
    fail_a(core)
    core.apply(StartAttempt(H), T0)
    end = core.apply(Control("cancel"), T0)
    assert end.status == "failed" and end.execution["error"]["node_id"] == "a"


def test_a_takeover_after_the_failure_runs_the_handler_once() -> None:
    core = core_for(RAW)
    fx = fail_a(core)
    error = fx.execution["error"]
    # The owner died before the handler started: its row is pending, the error persisted.
    second = core_for(RAW, persisted(core), status="running", error=error)
    begun = second.apply(Begin(), T0)
    assert begun.ready == [H] and list(second.ready) == [H]
    assert second.attempt_context(H)["error"]["node_id"] == "a"
    second.apply(StartAttempt(H), T0)
    # It died again while the handler ran: the attempt is sent again, once.
    third = core_for(RAW, persisted(second), status="running", error=error)
    begun = third.apply(Begin(), T0)
    assert list(third.ready) == [H]
    (attempt,) = third.apply(StartAttempt(H), T0).attempts
    assert attempt.attempt == 2 and attempt.context["error"]["node_id"] == "a"
    end = third.apply(ok(H, attempt=2), T0)
    assert end.status == "failed" and end.execution["error"] == error


def test_a_takeover_of_a_running_execution_without_a_failure_leaves_the_handler() -> None:
    core = core_for(RAW)
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    second = core_for(RAW, persisted(core), status="running")
    begun = second.apply(Begin(), T0)
    assert begun.ready == ["a"] and H not in second.ready
