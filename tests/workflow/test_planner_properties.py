"""Property tests: PlanState, driven in random completion orders, agrees with the sequential
reference interpreter, and never makes a node ready too early or twice; the execution core
(which owns a PlanState) does too, taken over at random points."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.common.definition import WorkflowDefinition
from services.workflow.execution import (
    Begin,
    CoreConfig,
    ExecutionCore,
    ExecutionInfo,
    ExecutionStatus,
    NodeResult,
    NodeState,
    Settle,
    StartAttempt,
)
from services.workflow.planner import ExecutionPlan, Outcome, OutcomeKind, PlanState
from services.workflow.reference import Behaviour, run_reference
from services.workflow.validation import validate_definition
from tests.workflow.catalog import core_catalog

CATALOG = core_catalog()
ON_ERROR = ["fail", "continue", "skip", "fail_branch"]
CASES = ["a", "b"]
Result = Literal["succeed", "fail", "when_false"]
RESULTS: list[Result] = ["succeed", "succeed", "succeed", "succeed", "fail", "when_false"]


@dataclass
class Scenario:
    definition: WorkflowDefinition
    behaviours: dict[str, Behaviour]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    count = draw(st.integers(min_value=1, max_value=40))
    kinds = draw(
        st.lists(
            st.sampled_from(["noop", "noop", "condition", "switch", "merge"]),
            min_size=count,
            max_size=count,
        )
    )
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    behaviours: dict[str, Behaviour] = {}
    for i, kind in enumerate(kinds):
        node_id = f"n{i}"
        on_error = draw(st.sampled_from(ON_ERROR))
        params: dict[str, Any] = {}
        if kind in ("condition", "switch"):
            params["expression"] = "{{ 1 }}"
        if kind == "switch":
            params["cases"] = CASES
        if kind == "merge":
            params["mode"] = draw(st.sampled_from(["all", "any"]))
        nodes.append({"id": node_id, "type": kind, "params": params, "on_error": on_error})
        if i:
            for parent in draw(st.lists(st.integers(0, i - 1), max_size=3)):
                ports: list[str | None] = [None]
                parent_kind = kinds[parent]
                if parent_kind == "condition":
                    ports += ["true", "false"]
                elif parent_kind == "switch":
                    ports += [*CASES, "default"]
                if nodes[parent]["on_error"] == "fail_branch":
                    ports.append("error")
                edge: dict[str, Any] = {"source": f"n{parent}", "target": node_id}
                port = draw(st.sampled_from(ports))
                if port is not None:
                    edge["source_port"] = port
                edges.append(edge)
        result = draw(st.sampled_from(RESULTS))
        taken: frozenset[str] | None = None
        if kind == "condition":
            taken = frozenset({draw(st.sampled_from(["true", "false"]))})
        elif kind == "switch":
            taken = frozenset({draw(st.sampled_from([*CASES, "default"]))})
        behaviours[node_id] = Behaviour(result, taken, output={"from": node_id})
    order = draw(st.permutations(range(count)))
    raw = {"name": "random", "nodes": [nodes[i] for i in order], "edges": edges}
    report = validate_definition(raw, CATALOG)
    assert not report.errors, report.errors
    assert report.definition is not None
    return Scenario(report.definition, behaviours)


def outcome_of(scenario: Scenario, node_id: str) -> Outcome:
    behaviour = scenario.behaviours[node_id]
    if behaviour.result == "succeed":
        return Outcome("succeeded", behaviour.ports)
    if behaviour.result == "when_false":
        return Outcome("skipped")
    on_error = next(n.on_error for n in scenario.definition.nodes if n.id == node_id)
    kind: OutcomeKind = {
        "fail": "failed",
        "continue": "failed_continue",
        "fail_branch": "failed_branch",
        "skip": "skipped",
    }[on_error]  # type: ignore[assignment]
    return Outcome(kind)


PERSISTED = {
    "succeeded": "succeeded",
    "failed_continue": "failed",
    "failed_branch": "failed",
    "failed": "failed",
    "skipped": "skipped",
    "ready": "running",
    "pending": "pending",
    "cancelled": "cancelled",
}


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), data=st.data())
def test_random_completion_orders_match_the_reference(
    scenario: Scenario, data: st.DataObject
) -> None:
    definition = scenario.definition
    plan = ExecutionPlan.build(definition, CATALOG)
    reference = run_reference(definition, lambda node_id, _inputs: scenario.behaviours[node_id])
    preds: dict[str, list[str]] = {n.id: [] for n in definition.nodes}
    for edge in definition.edges:
        preds[edge["target"]].append(edge["source"])

    state = PlanState(plan)
    any_merges = [n for n in plan.node_ids if plan.is_any_merge(n)]
    terminal: dict[str, str] = {}
    ever_ready: set[str] = set()
    ready_inputs: dict[str, list[tuple[str, str | None, str | None]]] = {}
    ports: dict[str, frozenset[str] | None] = {}

    def take(transition_ready: list[str], transition_skipped: list[str]) -> None:
        # skips first: a node made ready by the same call may have waited on them
        for node_id in transition_skipped:
            assert node_id not in ever_ready and node_id not in terminal
            undecided = [p for p in preds[node_id] if p not in terminal]
            assert not undecided, f"{node_id} skipped before {undecided} finished"
            terminal[node_id] = "skipped"
        for node_id in transition_ready:
            assert node_id not in ever_ready, f"{node_id} made ready twice"
            assert node_id not in terminal
            ever_ready.add(node_id)
            inputs = state.live_inputs(node_id)
            if plan.is_any_merge(node_id):
                assert inputs or not preds[node_id], f"any-merge {node_id} ready without input"
            else:
                undecided = [p for p in preds[node_id] if p not in terminal]
                assert not undecided, f"{node_id} ready before {undecided} finished"
                assert not preds[node_id] or inputs
            ready_inputs[node_id] = inputs
        for node_id in any_merges:
            if state.status(node_id) == "pending":
                assert not state.live_inputs(node_id), f"any-merge {node_id} should have fired"

    first = state.start()
    take(first.ready, first.skipped)
    assert state.start().ready == []  # start() reports once
    restart_at = data.draw(st.integers(0, len(definition.nodes)), label="restart_at")
    steps = 0
    while not state.failed:
        pool = state.ready()
        if not pool:
            break
        node_id = pool[data.draw(st.integers(0, len(pool) - 1), label="pick")]
        outcome = outcome_of(scenario, node_id)
        transition = state.complete(node_id, outcome)
        terminal[node_id] = outcome.kind
        ports[node_id] = outcome.active_ports
        take(transition.ready, transition.skipped)
        steps += 1
        if steps == restart_at:
            # A crash after the engine persisted this node's result but before it persisted
            # what followed from it: the rebuilt state must find the same consequences.
            persisted = {n: PERSISTED[state.status(n)] for n in plan.node_ids}
            for n in [*transition.ready, *transition.skipped]:
                persisted[n] = "pending"
            rebuilt = PlanState(plan, persisted, ports)
            if not state.failed:
                assert rebuilt.start() == transition
            assert rebuilt.start().ready == []
            assert rebuilt.ready() == state.ready()
            assert rebuilt.statuses() == state.statuses()
            for n in state.ready():
                assert rebuilt.live_inputs(n) == state.live_inputs(n)
            state = rebuilt

    if state.failed:
        for node_id in state.cancel_remaining():
            terminal[node_id] = "cancelled"
    assert state.is_finished()
    assert set(terminal) == set(plan.node_ids)
    assert all(state.status(n) == terminal[n] for n in plan.node_ids)

    assert state.failed == reference.failed
    if reference.failed:
        for node_id, status in terminal.items():
            assert status in (reference.statuses[node_id], "cancelled"), node_id
    else:
        assert terminal == reference.statuses
        for node_id, inputs in ready_inputs.items():
            if not plan.is_any_merge(node_id):
                assert inputs == reference.live_inputs[node_id], node_id


@settings(deadline=None, max_examples=50)
@given(scenario=scenarios())
def test_topological_order_respects_every_edge(scenario: Scenario) -> None:
    plan = ExecutionPlan.build(scenario.definition, CATALOG)
    rank = {node_id: i for i, node_id in enumerate(plan.topological_order())}
    assert sorted(rank) == sorted(plan.node_ids)
    for edge in scenario.definition.edges:
        assert rank[edge["source"]] < rank[edge["target"]]


# ---- the same scenarios through the execution core -------------------------------------

CORE_STATUS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "failed_continue": "failed",
    "failed_branch": "failed",
    "skipped": "skipped",
}


def _result(scenario: Scenario, node_id: str, attempt: int) -> NodeResult:
    behaviour = scenario.behaviours[node_id]
    if behaviour.result == "succeed":
        ports = None if behaviour.ports is None else tuple(sorted(behaviour.ports))
        return NodeResult(node_id, attempt, "succeeded", output=behaviour.output, ports=ports)
    if behaviour.result == "when_false":
        return NodeResult(node_id, attempt, "skipped")
    error = {"type": "NodeError", "message": "scripted", "retryable": False, "details": None}
    return NodeResult(node_id, attempt, "failed", error=error)


def _taken_over(core: ExecutionCore) -> ExecutionCore:
    """The core another replica builds from the persisted rows after this one died."""
    nodes = {
        node_id: dataclasses.replace(node, attempts=list(node.attempts), infra_failures=0)
        for node_id, node in core.nodes.items()
    }
    info = dataclasses.replace(core.info, status=core.status.value, last_seq=core.seq)
    return ExecutionCore(info, core.definition, core.plan, nodes, core.config)


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), data=st.data())
def test_the_core_in_random_orders_matches_the_reference(
    scenario: Scenario, data: st.DataObject
) -> None:
    """ExecutionCore, fed attempts and results in a random order (and taken over by another
    replica at a random step, late results of the lost attempts arriving after), ends every
    node as the reference interpreter does, and the execution fails exactly when it does."""
    definition = scenario.definition
    plan = ExecutionPlan.build(definition, CATALOG)
    reference = run_reference(definition, lambda node_id, _inputs: scenario.behaviours[node_id])
    nodes = {n.id: NodeState(n.id, n.type) for n in definition.nodes}
    info = ExecutionInfo(id="e1", workflow_id="w1", tenant_id="t1", status="pending")
    core = ExecutionCore(info, definition, plan, nodes, CoreConfig())
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    core.apply(Begin(), now)
    in_flight: dict[str, int] = {}
    takeover_at = data.draw(st.integers(0, 2 * len(definition.nodes)), label="takeover_at")
    started_once: set[str] = set()
    for step in range(10 * len(definition.nodes) + 10):
        if core.final:
            break
        if step == takeover_at and in_flight:
            core = _taken_over(core)
            lost, in_flight = in_flight, {}
            core.apply(Begin(), now)
            for node_id, attempt in lost.items():
                # The lost attempt's result arrives late: fenced off, nothing changes.
                late = core.apply(_result(scenario, node_id, attempt), now)
                assert not late.nodes and not late.events and not late.released
        choices = (["start"] if core.room else []) + (["finish"] if in_flight else [])
        if not choices:
            core.apply(Settle(), now)
            assert core.final, f"stuck: ready={list(core.ready)} statuses={core.nodes}"
            break
        now += dt.timedelta(milliseconds=1)
        if data.draw(st.sampled_from(choices), label="action") == "start":
            node_id = core.ready[data.draw(st.integers(0, len(core.ready) - 1), label="pick")]
            fx = core.apply(StartAttempt(node_id), now)
            (started,) = fx.attempts
            assert started.node_id == node_id
            in_flight[node_id] = started.attempt
            started_once.add(node_id)
        else:
            node_id = data.draw(st.sampled_from(sorted(in_flight)), label="complete")
            fx = core.apply(_result(scenario, node_id, in_flight.pop(node_id)), now)
            # Its slot back; and when it failed the execution, those of the attempts cancelled.
            assert fx.released == 1 + (len(in_flight) if core.final else 0)
            if core.final:
                in_flight.clear()
        core.apply(Settle(), now)
    assert core.final
    assert core.in_flight == 0
    assert (core.status == ExecutionStatus.FAILED) == reference.failed
    for node_id, node in core.nodes.items():
        expected = CORE_STATUS[reference.statuses[node_id]]
        if reference.failed:
            assert node.status in (expected, "cancelled"), node_id
        else:
            assert node.status == expected, node_id
