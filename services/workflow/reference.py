"""A deliberately simple, sequential interpreter of workflow semantics: the test oracle.

It shares no code with ``planner.py``. It states the rules as a recursive definition over
predecessors (memoised), as one would write them on a whiteboard:

- an edge from S is live iff S succeeded and its port is None, "out" or one S took; or S
  failed with on_error=continue and its port is None or "out"; or S failed with
  on_error=fail_branch and its port is "error";
- a node with no incoming edge runs; another runs iff at least one incoming edge is live
  (merge "any" included: it runs once, at its first live edge), else it is skipped;
- a node that runs does what ``behave`` says: succeed (on some ports), fail (then its
  on_error picks failed / failed_continue / failed_branch / skipped), or be gated off by
  its ``when`` (skipped).

The result is what every node ends as if nothing were cancelled; ``failed`` tells whether a
node failed with on_error=fail, in which case a real execution cancels what had not run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from libs.common.definition import EdgeSpec, WorkflowDefinition

__all__ = ["Behaviour", "ReferenceResult", "run_reference"]


@dataclass(frozen=True)
class Behaviour:
    """What a node does when it runs."""

    result: Literal["succeed", "fail", "when_false"] = "succeed"
    #: The named ports a succeeding node emits on (None: all of them).
    ports: frozenset[str] | None = None
    output: Any = None


@dataclass
class ReferenceResult:
    #: succeeded, failed, failed_continue, failed_branch or skipped, for every node.
    statuses: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    #: For every node that ran: its live incoming edges as (source, source_port, target_port).
    live_inputs: dict[str, list[tuple[str, str | None, str | None]]] = field(default_factory=dict)
    #: Whether some node that ran failed with on_error=fail.
    failed: bool = False


LiveInputs = list[tuple[str, str | None, str | None]]


def run_reference(
    definition: WorkflowDefinition,
    behave: Callable[[str, LiveInputs], Behaviour],
) -> ReferenceResult:
    nodes = {node.id: node for node in definition.nodes}
    incoming: dict[str, list[EdgeSpec]] = {node_id: [] for node_id in nodes}
    for edge in definition.edges:
        incoming[edge["target"]].append(edge)
    result = ReferenceResult()
    ports_taken: dict[str, frozenset[str] | None] = {}

    def edge_is_live(edge: EdgeSpec) -> bool:
        source_status = status_of(edge["source"])
        port = edge.get("source_port")
        default = port is None or port == "out"
        if source_status == "succeeded":
            taken = ports_taken[edge["source"]]
            return default or (port != "error" and (taken is None or port in taken))
        if source_status == "failed_continue":
            return default
        if source_status == "failed_branch":
            return port == "error"
        return False

    def status_of(node_id: str) -> str:
        if node_id in result.statuses:
            return result.statuses[node_id]
        node = nodes[node_id]
        edges = incoming[node_id]
        live = [e for e in edges if edge_is_live(e)]
        if edges and not live:
            status = "skipped"
        else:
            inputs = [(e["source"], e.get("source_port"), e.get("target_port")) for e in live]
            result.live_inputs[node_id] = inputs
            behaviour = behave(node_id, inputs)
            if behaviour.result == "succeed":
                status = "succeeded"
                ports_taken[node_id] = behaviour.ports
                result.outputs[node_id] = behaviour.output
            elif behaviour.result == "when_false":
                status = "skipped"
            else:
                status = {
                    "fail": "failed",
                    "continue": "failed_continue",
                    "fail_branch": "failed_branch",
                    "skip": "skipped",
                }[node.on_error]
                if status == "failed":
                    result.failed = True
                if status == "failed_continue":
                    result.outputs[node_id] = node.default_output
        result.statuses[node_id] = status
        return status

    for node_id in nodes:
        status_of(node_id)
    return result
