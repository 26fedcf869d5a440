"""The DAG planner and the join/skip state machine that the execution engine drives.

``ExecutionPlan`` is built once per definition version (immutable, cacheable);
``PlanState`` is the mutable per-execution part. Both are pure: no I/O, integer indices.

The contract
============

Outcomes. A finished node is reported as one ``Outcome`` kind:
``succeeded`` (also for a cache hit), ``failed_continue`` (failed, ``on_error: continue``),
``failed_branch`` (failed, ``on_error: fail_branch``), ``skipped`` (its ``when`` was false,
or it failed with ``on_error: skip``), ``failed`` (failed, ``on_error: fail``).

Edges. An edge (source S, source port P, target T) is decided when S is terminal. It is
LIVE iff

- S ``succeeded`` and P is None, ``"out"``, or in S's ``active_ports`` (``None`` = every
  normal port: a condition reports ``{"true"}``, a switch the case it took);
- S ``failed_continue`` and P is None or ``"out"``;
- S ``failed_branch`` and P is ``"error"``.

Otherwise it is DEAD: every out-edge of a skipped node, ``"error"`` edges of a node that
did not fail, named-port edges of a node that failed and continued.

Readiness (dead-path elimination, as a BPMN inclusive join or Airflow's
``none_failed_min_one_success``): a node without incoming edges is ready at start. Any other
node waits until EVERY incoming edge is decided; then it is ready if at least one is live
and skipped if all are dead. A ``merge`` node with ``params.mode == "any"`` is ready as soon
as its first live edge is decided (later arrivals are ignored: it fires once) and skipped
if all its edges are dead. So a join waits only for branches that can still arrive, never
fires early and never twice. Skips propagate transitively within one ``complete()`` call.

Failure. A ``failed`` outcome makes the execution fail: ``PlanState.failed`` becomes True,
no node is made ready or skipped any more, and the engine calls ``cancel_remaining()``,
which marks every pending or ready (in-flight) node cancelled and returns them.

Recovery. ``PlanState(plan, statuses, ports)`` rebuilds the state from persisted node
statuses (the engine's vocabulary) and active ports, replaying the decisions of terminal
nodes; in-flight statuses (queued, running, retrying, waiting) count as ready. Pending
nodes that the replay makes ready or skipped are reported by the first ``start()`` call.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, itemgetter, methodcaller
from typing import Final, Literal

from libs.common.definition import (
    EdgeSpec,
    WorkflowDefinition,
    allocation_burst,
    expression_sources,
)
from libs.common.expressions import inspect_templates
from libs.common.node_types import DEFAULT_PORT, ERROR_PORT, NodeTypeSpec

__all__ = [
    "DefinitionGraph",
    "ExecutionPlan",
    "Outcome",
    "OutcomeKind",
    "PlanError",
    "PlanState",
    "PlanStateError",
    "Transition",
]

OutcomeKind = Literal["succeeded", "failed_continue", "failed_branch", "skipped", "failed"]


class PlanError(ValueError):
    """The definition cannot be planned (it should have failed validation)."""


class PlanStateError(RuntimeError):
    """The engine reported something impossible, e.g. completing a node never made ready."""


def kahn_order(
    in_edges: list[list[int]], out_edges: list[list[int]], edge_target: list[int]
) -> tuple[list[int], list[int]]:
    """Kahn's topological order of the nodes by position (edges by index: `in_edges` and
    `out_edges` per node, `edge_target` per edge), and the in-degrees left: a node with one
    left is on or behind a cycle, and the order is shorter than the node count."""
    indegree = list(map(len, in_edges))
    order = [v for v, degree in enumerate(indegree) if not degree]
    append = order.append
    for v in order:  # Kahn's queue: the list grows while it is walked
        for e in out_edges[v]:
            w = edge_target[e]
            degree = indegree[w] - 1
            indegree[w] = degree
            if not degree:
                append(w)
    return order, indegree


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    #: For ``succeeded``: the named ports the node emitted on; None means all of them.
    active_ports: frozenset[str] | None = None


@dataclass(slots=True)
class Transition:
    #: Nodes that became ready, in topological order.
    ready: list[str] = field(default_factory=list)
    #: Nodes that became skipped (propagated), in topological order.
    skipped: list[str] = field(default_factory=list)


# Edge port kinds, precomputed so that deciding an edge is a couple of comparisons.
_PORT_DEFAULT: Final = 0  # None or "out"
_PORT_ERROR: Final = 1
_PORT_NAMED: Final = 2
_PORT_KINDS: Final[dict[str | None, int]] = {
    None: _PORT_DEFAULT,
    DEFAULT_PORT: _PORT_DEFAULT,
    ERROR_PORT: _PORT_ERROR,
}
_ID: Final = attrgetter("id")
_TYPE: Final = attrgetter("type")
_SOURCE: Final = itemgetter("source")
_TARGET: Final = itemgetter("target")
_SOURCE_PORT: Final = methodcaller("get", "source_port")


@dataclass(frozen=True, slots=True, eq=False)
class DefinitionGraph:
    """A definition's graph as integer arrays, as validation built them while checking it:
    ``ExecutionPlan.build`` takes them instead of building them again (it checks that they
    are the definition's: the same edge list and the same node ids, in order)."""

    #: Node ids in definition order, and each id's position in it.
    node_ids: list[str]
    index: dict[str, int]
    #: The definition's edge list the arrays were read from (compared by identity).
    edges: list[EdgeSpec]
    edge_source: list[int]
    edge_target: list[int]
    edge_port: list[str | None]
    #: Edge indices out of / into each node, in edge order.
    out_edges: list[list[int]]
    in_edges: list[list[int]]
    #: Kahn's topological order (roots in definition order, then as they become free).
    order: list[int]

    def describes(self, definition: WorkflowDefinition) -> bool:
        return (
            self.edges is definition.edges
            and len(self.node_ids) == len(definition.nodes)
            and self.node_ids == list(map(_ID, definition.nodes))
        )


# Node states inside PlanState.
_PENDING: Final = 0
_READY: Final = 1  # made ready (dispatched, running, retrying, waiting...)
_SUCCEEDED: Final = 2
_FAILED_CONTINUE: Final = 3
_FAILED_BRANCH: Final = 4
_SKIPPED: Final = 5
_FAILED: Final = 6
_CANCELLED: Final = 7

_KIND_STATE: Final[dict[str, int]] = {
    "succeeded": _SUCCEEDED,
    "failed_continue": _FAILED_CONTINUE,
    "failed_branch": _FAILED_BRANCH,
    "skipped": _SKIPPED,
    "failed": _FAILED,
}
_STATE_NAMES: Final = (
    "pending",
    "ready",
    "succeeded",
    "failed_continue",
    "failed_branch",
    "skipped",
    "failed",
    "cancelled",
)
_IN_FLIGHT_STATUSES: Final = frozenset({"ready", "queued", "running", "retrying", "waiting"})
_ON_ERROR_STATE: Final[dict[str, int]] = {
    "fail": _FAILED,
    "continue": _FAILED_CONTINUE,
    "fail_branch": _FAILED_BRANCH,
    "skip": _SKIPPED,
}


def _check_types(definition: WorkflowDefinition, node_types: Mapping[str, NodeTypeSpec]) -> None:
    nodes = definition.nodes
    if not all(map(node_types.__contains__, map(_TYPE, nodes))):
        for node in nodes:
            if node.type not in node_types:
                raise PlanError(f"unknown node type {node.type!r} of node {node.id!r}")


class ExecutionPlan:
    """The immutable, index-based shape of one definition version."""

    __slots__ = (
        "_any_merge",
        "_edge_port",
        "_edge_port_kind",
        "_edge_source",
        "_edge_target",
        "_in_edges",
        "_index",
        "_out_edges",
        "_position",
        "_referenced",
        "definition",
        "node_ids",
        "order",
    )

    definition: WorkflowDefinition
    #: Node ids in definition order; indices below refer to this list.
    node_ids: list[str]
    #: Node indices in a topological order (definition order among independent nodes).
    order: list[int]
    _index: dict[str, int]
    _position: list[int]
    _edge_source: list[int]
    _edge_target: list[int]
    _edge_port: list[str | None]
    _edge_port_kind: list[int]
    #: Edge indices out of / into each node, in edge order (never mutated after build).
    _out_edges: list[list[int]]
    _in_edges: list[list[int]]
    _referenced: list[frozenset[str] | None]
    _any_merge: list[bool]

    def __init__(self) -> None:
        raise TypeError("use ExecutionPlan.build(definition, node_types)")

    @classmethod
    def build(
        cls,
        definition: WorkflowDefinition,
        node_types: Mapping[str, NodeTypeSpec],
        graph: DefinitionGraph | None = None,
    ) -> ExecutionPlan:
        """Plan a definition that passed validation; ``graph`` is the one its validation
        built (``ValidationReport.graph``), used when it describes this definition.

        Raises:
            PlanError: on a duplicate node id, an edge to an unknown node, an unknown node
                type or a cycle.
        """
        with allocation_burst():
            if graph is None or not graph.describes(definition):
                graph = cls._graph(definition, node_types)
            else:
                _check_types(definition, node_types)
            return cls._build(definition, graph)

    @staticmethod
    def _graph(
        definition: WorkflowDefinition, node_types: Mapping[str, NodeTypeSpec]
    ) -> DefinitionGraph:
        # Whole-list passes through C (map, zip, dict) where they can be: at 100,000 nodes
        # and 200,000 edges each Python-level pass over the models costs 20-60 ms.
        nodes = definition.nodes
        node_ids = list(map(_ID, nodes))
        count = len(node_ids)
        index = dict(zip(node_ids, range(count), strict=True))
        if len(index) != count:
            raise PlanError("duplicate node ids")
        _check_types(definition, node_types)
        edges = definition.edges
        try:
            edge_source = list(map(index.__getitem__, map(_SOURCE, edges)))
            edge_target = list(map(index.__getitem__, map(_TARGET, edges)))
        except KeyError as exc:
            raise PlanError(f"an edge names the unknown node {exc.args[0]!r}") from None
        edge_port = list(map(_SOURCE_PORT, edges))
        out_edges: list[list[int]] = [[] for _ in range(count)]
        in_edges: list[list[int]] = [[] for _ in range(count)]
        for e, (source, target) in enumerate(zip(edge_source, edge_target, strict=True)):
            out_edges[source].append(e)
            in_edges[target].append(e)

        order, indegree = kahn_order(in_edges, out_edges, edge_target)
        if len(order) != count:
            stuck = [node_ids[i] for i in range(count) if indegree[i] > 0]
            raise PlanError(f"the graph has a cycle through {', '.join(stuck[:10])}")
        return DefinitionGraph(
            node_ids, index, edges, edge_source, edge_target, edge_port, out_edges, in_edges, order
        )

    @classmethod
    def _build(cls, definition: WorkflowDefinition, graph: DefinitionGraph) -> ExecutionPlan:
        nodes = definition.nodes
        types = list(map(_TYPE, nodes))
        plan = object.__new__(cls)
        node_ids, order = graph.node_ids, graph.order
        count = len(node_ids)
        position = [0] * count
        for rank, i in enumerate(order):
            position[i] = rank
        any_merge = [False] * count
        for i in [i for i, node_type in enumerate(types) if node_type == "merge"]:
            any_merge[i] = nodes[i].params.get("mode") == "any"

        plan.definition = definition
        plan.node_ids = node_ids
        plan.order = order
        plan._index = graph.index
        plan._position = position
        plan._edge_source = graph.edge_source
        plan._edge_target = graph.edge_target
        plan._edge_port = graph.edge_port
        plan._edge_port_kind = list(map(_PORT_KINDS.get, graph.edge_port, repeat(_PORT_NAMED)))
        # lists, not tuples: copying 200,000 small lists costs more than the plan's walk
        # (the graph's lists are shared with it: never mutated, by either)
        plan._out_edges = graph.out_edges
        plan._in_edges = graph.in_edges
        plan._referenced = [None] * count
        plan._any_merge = any_merge
        return plan

    # ---- queries ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.node_ids)

    def index_of(self, node_id: str) -> int:
        try:
            return self._index[node_id]
        except KeyError:
            raise KeyError(f"no node {node_id!r} in this plan") from None

    def topological_order(self) -> list[str]:
        return [self.node_ids[i] for i in self.order]

    def incoming(self, node_id: str) -> list[tuple[str, str | None, str | None]]:
        """``(source, source_port, target_port)`` of each edge into the node, in edge order."""
        edges = self.definition.edges
        return [
            (edge["source"], edge.get("source_port"), edge.get("target_port"))
            for edge in map(edges.__getitem__, self._in_edges[self.index_of(node_id)])
        ]

    def outgoing(self, node_id: str) -> list[tuple[str | None, str, str | None]]:
        """``(source_port, target, target_port)`` of each edge out of the node, in edge order."""
        edges = self.definition.edges
        return [
            (edge.get("source_port"), edge["target"], edge.get("target_port"))
            for edge in map(edges.__getitem__, self._out_edges[self.index_of(node_id)])
        ]

    def upstream(self, node_id: str) -> list[str]:
        """Distinct direct predecessors, in edge order."""
        seen = dict.fromkeys(
            self.node_ids[self._edge_source[e]] for e in self._in_edges[self.index_of(node_id)]
        )
        return list(seen)

    def referenced_nodes(self, node_id: str) -> frozenset[str]:
        """The nodes whose outputs this node's params, ``when`` and ``default_output`` read:
        the engine ships only those outputs to the node service."""
        i = self.index_of(node_id)
        found = self._referenced[i]
        if found is None:  # computed on first dispatch: most of a plan's cost otherwise
            node = self.definition.nodes[i]
            names: set[str] = set()
            for _, value, bare in expression_sources(node):
                names.update(inspect_templates(value, expression=bare).names)
            names.discard(node.id)
            found = self._referenced[i] = frozenset(n for n in names if n in self._index)
        return found

    def is_any_merge(self, node_id: str) -> bool:
        return self._any_merge[self.index_of(node_id)]


class PlanState:
    """The per-execution join/skip state machine (see the module docstring)."""

    __slots__ = (
        "_edge_state",
        "_failed",
        "_initial",
        "_live",
        "_plan",
        "_state",
        "_undecided",
    )

    def __init__(
        self,
        plan: ExecutionPlan,
        statuses: Mapping[str, str] | None = None,
        ports: Mapping[str, Collection[str] | None] | None = None,
    ) -> None:
        count = len(plan.node_ids)
        self._plan = plan
        self._state = bytearray(count)
        self._undecided = list(map(len, plan._in_edges))
        self._live = [0] * count
        # per edge: 0 undecided, 1 live, 2 dead
        self._edge_state = bytearray(len(plan._edge_source))
        self._failed = False
        self._initial = Transition()
        if statuses:
            self._restore(statuses, ports or {})
        self._settle_pending()

    # ---- engine API -------------------------------------------------------------------

    @property
    def plan(self) -> ExecutionPlan:
        return self._plan

    @property
    def failed(self) -> bool:
        return self._failed

    def start(self) -> Transition:
        """What to do first: the roots of a new execution, or after recovery the pending
        nodes that became ready or skipped. Later calls return an empty transition."""
        transition, self._initial = self._initial, Transition()
        return transition

    def complete(self, node_id: str, outcome: Outcome) -> Transition:
        """Apply a finished node and return what became ready or skipped.

        Completing a cancelled node is ignored (it raced with ``cancel_remaining``), and so
        is completing a terminal node again with the same outcome kind (a duplicate report).

        Raises:
            PlanStateError: for a node that was never made ready, or a second, different
                outcome for a terminal node.
        """
        plan = self._plan
        i = plan.index_of(node_id)
        state = self._state[i]
        new_state = _KIND_STATE[outcome.kind]
        if state != _READY:
            if state in (_CANCELLED, new_state):
                return Transition()
            raise PlanStateError(
                f"cannot complete node {node_id!r} ({outcome.kind}): it is {_STATE_NAMES[state]}"
            )
        self._state[i] = new_state
        transition = Transition()
        if new_state == _FAILED:
            self._failed = True
            return transition
        if self._failed:
            return transition
        self._decide(i, new_state, outcome.active_ports, transition)
        if len(transition.ready) > 1:
            transition.ready.sort(key=lambda n: plan._position[plan._index[n]])
        if len(transition.skipped) > 1:
            transition.skipped.sort(key=lambda n: plan._position[plan._index[n]])
        return transition

    def cancel_remaining(self) -> list[str]:
        """Mark every pending or ready node cancelled; returns them in topological order."""
        plan = self._plan
        cancelled: list[str] = []
        for i in plan.order:
            if self._state[i] <= _READY:
                self._state[i] = _CANCELLED
                cancelled.append(plan.node_ids[i])
        return cancelled

    def is_finished(self) -> bool:
        """No node is pending or ready (in flight)."""
        return _PENDING not in self._state and _READY not in self._state

    def ready(self) -> list[str]:
        """Every node made ready and not yet completed, in topological order."""
        plan = self._plan
        return [plan.node_ids[i] for i in plan.order if self._state[i] == _READY]

    def status(self, node_id: str) -> str:
        """``pending``, ``ready``, one of the outcome kinds, or ``cancelled``."""
        return _STATE_NAMES[self._state[self._plan.index_of(node_id)]]

    def live_inputs(self, node_id: str) -> list[tuple[str, str | None, str | None]]:
        """``(source, source_port, target_port)`` of the live edges into the node so far, in
        edge order: a merge's ``items`` and a list port's aggregation."""
        plan = self._plan
        edges = plan.definition.edges
        return [
            (edges[e]["source"], edges[e].get("source_port"), edges[e].get("target_port"))
            for e in plan._in_edges[plan.index_of(node_id)]
            if self._edge_state[e] == 1
        ]

    def statuses(self) -> dict[str, str]:
        plan = self._plan
        return {node_id: _STATE_NAMES[self._state[i]] for i, node_id in enumerate(plan.node_ids)}

    # ---- internals --------------------------------------------------------------------

    def _decide(
        self,
        i: int,
        state: int,
        active_ports: frozenset[str] | None,
        transition: Transition,
    ) -> None:
        """Decide node i's out-edges and everything that follows (iteratively: skip chains
        in a 10,000-node graph must not hit the recursion limit)."""
        plan = self._plan
        node_state = self._state
        edge_state = self._edge_state
        undecided = self._undecided
        live = self._live
        any_merge = plan._any_merge
        kinds = plan._edge_port_kind
        ports = plan._edge_port
        targets = plan._edge_target
        out_edges = plan._out_edges
        work: list[tuple[int, int, frozenset[str] | None]] = [(i, state, active_ports)]
        while work:
            source, source_state, active = work.pop()
            for e in out_edges[source]:
                kind = kinds[e]
                if source_state == _SUCCEEDED:
                    is_live = kind == _PORT_DEFAULT or (
                        kind == _PORT_NAMED and (active is None or ports[e] in active)
                    )
                elif source_state == _FAILED_CONTINUE:
                    is_live = kind == _PORT_DEFAULT
                elif source_state == _FAILED_BRANCH:
                    is_live = kind == _PORT_ERROR
                else:
                    is_live = False
                edge_state[e] = 1 if is_live else 2
                t = targets[e]
                undecided[t] -= 1
                if is_live:
                    live[t] += 1
                if node_state[t] != _PENDING:
                    continue
                if is_live and any_merge[t]:
                    node_state[t] = _READY
                    transition.ready.append(plan.node_ids[t])
                elif undecided[t] == 0:
                    if live[t]:
                        node_state[t] = _READY
                        transition.ready.append(plan.node_ids[t])
                    else:
                        node_state[t] = _SKIPPED
                        transition.skipped.append(plan.node_ids[t])
                        work.append((t, _SKIPPED, None))

    def _restore(
        self, statuses: Mapping[str, str], ports: Mapping[str, Collection[str] | None]
    ) -> None:
        plan = self._plan
        nodes = plan.definition.nodes
        terminal: list[tuple[int, int, frozenset[str] | None]] = []
        for i, node_id in enumerate(plan.node_ids):
            status = statuses.get(node_id, "pending")
            if status in ("succeeded", "cached"):
                given = ports.get(node_id)
                terminal.append((i, _SUCCEEDED, None if given is None else frozenset(given)))
            elif status == "failed":
                terminal.append((i, _ON_ERROR_STATE[nodes[i].on_error], None))
            elif status == "skipped":
                terminal.append((i, _SKIPPED, None))
            elif status == "cancelled":
                self._state[i] = _CANCELLED
            elif status in _IN_FLIGHT_STATUSES:
                self._state[i] = _READY
            elif status in _STATE_NAMES[2:]:  # our own vocabulary, e.g. "failed_continue"
                terminal.append((i, _STATE_NAMES.index(status), None))
            elif status != "pending":
                raise PlanStateError(f"unknown status {status!r} for node {node_id!r}")
        for i, state, _ in terminal:
            self._state[i] = state
            if state == _FAILED:
                self._failed = True
        # The transitions replayed here were acted on before the crash: only decisions for
        # still-pending nodes (computed in _settle_pending) are news for the engine.
        scratch = Transition()
        for i, state, active in sorted(terminal, key=lambda t: plan._position[t[0]]):
            self._decide_replay(i, state, active, scratch)

    def _decide_replay(
        self, i: int, state: int, active: frozenset[str] | None, scratch: Transition
    ) -> None:
        # Edges only: readiness of pending nodes is settled afterwards, in topological order,
        # so that a pending node is not made ready before every terminal node is replayed.
        plan = self._plan
        for e in plan._out_edges[i]:
            kind = plan._edge_port_kind[e]
            if state == _SUCCEEDED:
                is_live = kind == _PORT_DEFAULT or (
                    kind == _PORT_NAMED and (active is None or plan._edge_port[e] in active)
                )
            elif state == _FAILED_CONTINUE:
                is_live = kind == _PORT_DEFAULT
            elif state == _FAILED_BRANCH:
                is_live = kind == _PORT_ERROR
            else:
                is_live = False
            self._edge_state[e] = 1 if is_live else 2
            t = plan._edge_target[e]
            self._undecided[t] -= 1
            if is_live:
                self._live[t] += 1

    def _settle_pending(self) -> None:
        """Make ready or skip the pending nodes whose inputs are already decided."""
        if self._failed:
            return
        plan = self._plan
        transition = self._initial
        for i in plan.order:
            if self._state[i] != _PENDING:
                continue
            if (self._live[i] and (plan._any_merge[i] or self._undecided[i] == 0)) or (
                self._undecided[i] == 0 and not plan._in_edges[i]
            ):
                self._state[i] = _READY
                transition.ready.append(plan.node_ids[i])
            elif self._undecided[i] == 0:
                self._state[i] = _SKIPPED
                transition.skipped.append(plan.node_ids[i])
                self._decide_replay(i, _SKIPPED, None, transition)
