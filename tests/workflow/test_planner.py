from __future__ import annotations

from typing import Any

import pytest

from libs.common.definition import WorkflowDefinition
from services.workflow.planner import (
    ExecutionPlan,
    Outcome,
    PlanError,
    PlanState,
    PlanStateError,
    Transition,
)
from services.workflow.validation import validate_definition
from tests.workflow.catalog import core_catalog

CATALOG = core_catalog()


def plan_of(
    nodes: list[dict[str, Any]], edges: list[tuple[str, ...] | dict[str, Any]]
) -> ExecutionPlan:
    edge_dicts = []
    for edge in edges:
        if isinstance(edge, dict):
            edge_dicts.append(edge)
        else:
            source, target, *port = edge
            item: dict[str, Any] = {"source": source, "target": target}
            if port:
                item["source_port"] = port[0]
            edge_dicts.append(item)
    definition = WorkflowDefinition.model_validate(
        {"name": "t", "nodes": nodes, "edges": edge_dicts}
    )
    return ExecutionPlan.build(definition, CATALOG)


def noop(node_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "noop", **extra}


def cond(node_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "condition", "params": {"expression": "x"}, **extra}


def merge(node_id: str, mode: str) -> dict[str, Any]:
    return {"id": node_id, "type": "merge", "params": {"mode": mode}}


OK = Outcome("succeeded")


def test_linear_chain_runs_in_order() -> None:
    plan = plan_of([noop("c"), noop("a"), noop("b")], [("a", "b"), ("b", "c")])
    assert plan.topological_order() == ["a", "b", "c"]
    state = PlanState(plan)
    assert state.start() == Transition(["a"], [])
    assert state.complete("a", OK) == Transition(["b"], [])
    assert state.complete("b", OK) == Transition(["c"], [])
    assert not state.is_finished()
    assert state.complete("c", OK) == Transition([], [])
    assert state.is_finished()


def test_condition_skips_the_branch_not_taken_and_the_join_still_runs() -> None:
    #   check -true-> yes --\
    #         -false-> no --> join -> after
    plan = plan_of(
        [cond("check"), noop("yes"), noop("no"), noop("no2"), noop("join"), noop("after")],
        [
            ("check", "yes", "true"),
            ("check", "no", "false"),
            ("no", "no2"),
            ("yes", "join"),
            ("no2", "join"),
            ("join", "after"),
        ],
    )
    state = PlanState(plan)
    state.start()
    transition = state.complete("check", Outcome("succeeded", frozenset({"true"})))
    assert transition == Transition(["yes"], ["no", "no2"])
    assert state.complete("yes", OK) == Transition(["join"], [])
    assert state.live_inputs("join") == [("yes", None, None)]
    assert state.complete("join", OK).ready == ["after"]


def test_join_waits_for_every_branch_that_can_still_arrive() -> None:
    plan = plan_of(
        [noop("a"), noop("b"), noop("slow"), noop("join")],
        [("a", "join"), ("b", "slow"), ("slow", "join")],
    )
    state = PlanState(plan)
    assert state.start().ready == ["a", "b"]
    assert state.complete("a", OK) == Transition([], [])
    assert state.complete("b", OK).ready == ["slow"]
    assert state.complete("slow", OK).ready == ["join"]
    assert state.live_inputs("join") == [("a", None, None), ("slow", None, None)]


def test_all_dead_inputs_skip_transitively() -> None:
    plan = plan_of(
        [cond("check"), noop("x"), noop("y"), noop("z")],
        [("check", "x", "false"), ("x", "y"), ("y", "z")],
    )
    state = PlanState(plan)
    state.start()
    assert state.complete("check", Outcome("succeeded", frozenset({"true"}))) == Transition(
        [], ["x", "y", "z"]
    )
    assert state.is_finished()


def test_unnamed_edge_from_condition_always_fires() -> None:
    plan = plan_of([cond("check"), noop("log")], [("check", "log")])
    state = PlanState(plan)
    state.start()
    assert state.complete("check", Outcome("succeeded", frozenset({"false"}))).ready == ["log"]


def test_merge_any_fires_once_on_the_first_live_input() -> None:
    plan = plan_of(
        [noop("a"), noop("b"), merge("m", "any"), noop("after")],
        [("a", "m"), ("b", "m"), ("m", "after")],
    )
    state = PlanState(plan)
    state.start()
    assert state.complete("b", OK).ready == ["m"]
    assert state.live_inputs("m") == [("b", None, None)]
    assert state.complete("a", OK) == Transition([], [])
    assert state.complete("m", OK).ready == ["after"]


def test_merge_any_is_skipped_when_every_input_is_dead() -> None:
    plan = plan_of(
        [cond("c"), merge("m", "any")],
        [("c", "m", "true"), ("c", "m", "false")],
    )
    state = PlanState(plan)
    state.start()
    assert state.complete("c", Outcome("succeeded", frozenset())) == Transition([], ["m"])


def test_merge_all_waits_for_all_and_lists_inputs_in_edge_order() -> None:
    plan = plan_of(
        [noop("a"), noop("b"), noop("c"), merge("m", "all")],
        [("c", "m"), ("a", "m"), ("b", "m")],
    )
    state = PlanState(plan)
    state.start()
    state.complete("a", OK)
    state.complete("b", OK)
    assert state.status("m") == "pending"
    assert state.complete("c", OK).ready == ["m"]
    assert [source for source, _, _ in state.live_inputs("m")] == ["c", "a", "b"]


def test_fail_branch_routes_to_the_error_port_only() -> None:
    plan = plan_of(
        [noop("call", on_error="fail_branch"), noop("ok"), noop("handler")],
        [("call", "ok"), ("call", "handler", "error")],
    )
    state = PlanState(plan)
    state.start()
    assert state.complete("call", Outcome("failed_branch")) == Transition(["handler"], ["ok"])


def test_error_port_is_dead_when_the_node_succeeds() -> None:
    plan = plan_of(
        [noop("call", on_error="fail_branch"), noop("ok"), noop("handler")],
        [("call", "ok"), ("call", "handler", "error")],
    )
    state = PlanState(plan)
    state.start()
    assert state.complete("call", OK) == Transition(["ok"], ["handler"])


def test_failed_continue_fires_default_edges_but_not_named_ports() -> None:
    plan = plan_of(
        [cond("c", on_error="continue"), noop("plain"), noop("yes")],
        [("c", "plain"), ("c", "yes", "true")],
    )
    state = PlanState(plan)
    state.start()
    assert state.complete("c", Outcome("failed_continue")) == Transition(["plain"], ["yes"])


def test_fatal_failure_stops_and_cancels_the_rest() -> None:
    plan = plan_of(
        [noop("a"), noop("b"), noop("c"), noop("d")],
        [("a", "c"), ("b", "d")],
    )
    state = PlanState(plan)
    state.start()
    assert state.complete("a", Outcome("failed")) == Transition([], [])
    assert state.failed
    assert not state.is_finished()  # b still runs
    assert state.complete("b", OK) == Transition([], [])
    assert state.cancel_remaining() == ["c", "d"]
    assert state.is_finished()
    # a late report for a cancelled node is ignored
    assert state.complete("c", OK) == Transition([], [])


def test_completion_errors() -> None:
    plan = plan_of([noop("a"), noop("b")], [("a", "b")])
    state = PlanState(plan)
    state.start()
    with pytest.raises(PlanStateError):
        state.complete("b", OK)  # never made ready
    state.complete("a", OK)
    assert state.complete("a", OK) == Transition([], [])  # duplicate report
    with pytest.raises(PlanStateError):
        state.complete("a", Outcome("failed"))
    with pytest.raises(KeyError):
        state.complete("nope", OK)


def test_recovery_resumes_where_it_stopped() -> None:
    plan = plan_of(
        [cond("c"), noop("yes"), noop("no"), noop("join"), noop("other")],
        [("c", "yes", "true"), ("c", "no", "false"), ("yes", "join"), ("no", "join")],
    )
    # crashed after persisting c's result but before acting on it; 'other' was running
    state = PlanState(
        plan,
        statuses={"c": "succeeded", "other": "running"},
        ports={"c": ["true"]},
    )
    assert state.start() == Transition(["yes"], ["no"])
    assert state.ready() == ["other", "yes"]  # topological order: roots first
    assert state.complete("yes", OK).ready == ["join"]


def test_recovery_of_a_failed_execution_dispatches_nothing() -> None:
    plan = plan_of([noop("a"), noop("b"), noop("c")], [("a", "c")])
    state = PlanState(plan, statuses={"a": "failed", "b": "running"})
    assert state.failed
    assert state.start() == Transition([], [])
    assert state.cancel_remaining() == ["b", "c"]


def test_recovery_maps_failed_through_on_error() -> None:
    plan = plan_of(
        [noop("a", on_error="continue"), noop("b")],
        [("a", "b")],
    )
    state = PlanState(plan, statuses={"a": "failed"})
    assert not state.failed
    assert state.start().ready == ["b"]


def test_referenced_nodes() -> None:
    plan = plan_of(
        [
            noop("fetch"),
            {
                "id": "t",
                "type": "template",
                "params": {"template": "{{ fetch.body }} {{ inputs.x }}"},
            },
            {
                "id": "c",
                "type": "condition",
                "params": {"expression": "t.text == fetch.status"},
                "when": "{{ inputs.go }}",
            },
        ],
        [("fetch", "t"), ("t", "c")],
    )
    assert plan.referenced_nodes("t") == frozenset({"fetch"})
    assert plan.referenced_nodes("c") == frozenset({"t", "fetch"})
    assert plan.referenced_nodes("fetch") == frozenset()
    assert plan.incoming("c") == [("t", None, None)]
    assert plan.outgoing("fetch") == [(None, "t", None)]


def test_build_rejects_what_validation_rejects() -> None:
    with pytest.raises(PlanError, match="cycle"):
        plan_of([noop("a"), noop("b")], [("a", "b"), ("b", "a")])
    with pytest.raises(PlanError, match="unknown node"):
        plan_of([noop("a")], [("a", "ghost")])
    with pytest.raises(PlanError, match="unknown node type"):
        plan_of([{"id": "a", "type": "teleport"}], [])


def test_build_names_what_it_rejects() -> None:
    # the whole-list passes fall back to naming the first offender, as a per-item loop did
    with pytest.raises(PlanError, match=r"^duplicate node ids$"):
        plan_of([noop("a"), noop("b"), noop("a")], [])
    with pytest.raises(PlanError, match=r"^unknown node type 'teleport' of node 'b'$"):
        plan_of([noop("a"), {"id": "b", "type": "teleport"}, {"id": "c", "type": "x"}], [])
    with pytest.raises(PlanError, match=r"^an edge names the unknown node 'ghost'$"):
        plan_of([noop("a"), noop("b")], [("a", "b"), ("b", "ghost"), ("b", "a")])
    with pytest.raises(PlanError, match=r"^the graph has a cycle through b, c$"):
        plan_of([noop("a"), noop("b"), noop("c")], [("a", "b"), ("b", "c"), ("c", "b")])


def test_long_skip_chain_does_not_recurse() -> None:
    count = 5000
    nodes = [cond("c")] + [noop(f"n{i}") for i in range(count)]
    edges: list[tuple[str, ...] | dict[str, Any]] = [("c", "n0", "true")]
    edges += [(f"n{i}", f"n{i + 1}") for i in range(count - 1)]
    state = PlanState(plan_of(nodes, edges))
    state.start()
    transition = state.complete("c", Outcome("succeeded", frozenset({"false"})))
    assert len(transition.skipped) == count
    assert transition.skipped[:3] == ["n0", "n1", "n2"]


def _slots(plan: ExecutionPlan) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in ExecutionPlan.__slots__}


def test_plan_from_the_validation_graph_is_the_planners_own() -> None:
    # a layered DAG with ports (condition true/false, a fail_branch error port), a
    # target port, an "any" merge, roots out of definition order and a repeated edge
    nodes = [
        noop("late_root"),
        {"id": "start", "type": "input"},
        {"id": "check", "type": "condition", "params": {"expression": "start.ok"}},
        {"id": "risky", "type": "noop", "on_error": "fail_branch"},
        merge("join", "any"),
        merge("all", "all"),
        noop("handler"),
        noop("tail"),
    ]
    edges = [
        {"source": "start", "target": "check"},
        {"source": "check", "source_port": "true", "target": "risky"},
        {"source": "check", "source_port": "false", "target": "join"},
        {"source": "risky", "target": "join", "target_port": "in"},
        {"source": "risky", "source_port": "error", "target": "handler"},
        {"source": "join", "target": "all"},
        {"source": "late_root", "target": "all"},
        {"source": "handler", "target": "tail"},
        {"source": "all", "target": "tail"},
        {"source": "all", "target": "tail"},
    ]
    raw = {"name": "t", "nodes": nodes, "edges": edges}
    report = validate_definition(raw, CATALOG)
    assert report.errors == []
    assert report.definition is not None and report.graph is not None
    from_graph = ExecutionPlan.build(report.definition, CATALOG, report.graph)
    assert from_graph._out_edges is report.graph.out_edges  # taken, not built again
    own = ExecutionPlan.build(WorkflowDefinition.model_validate(raw), CATALOG)
    assert _slots(from_graph) == _slots(own) | {"definition": report.definition}
    # a graph that does not describe the definition is not used: the plan is built
    other = WorkflowDefinition.model_validate({**raw, "nodes": [*nodes[1:], nodes[0]]})
    rebuilt = ExecutionPlan.build(other, CATALOG, report.graph)
    assert rebuilt.node_ids == [*(n["id"] for n in nodes[1:]), "late_root"]
    assert rebuilt._out_edges is not report.graph.out_edges
    copied = report.definition.model_copy(update={"edges": list(report.definition.edges)})
    assert not report.graph.describes(copied)


def test_an_invalid_definition_has_no_graph() -> None:
    report = validate_definition(
        {
            "name": "t",
            "nodes": [noop("a"), noop("b")],
            "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}],
        },
        CATALOG,
    )
    assert not report.valid and report.graph is None
