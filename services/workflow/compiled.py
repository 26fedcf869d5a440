"""A validated definition version, compiled once per replica and shared by its runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from libs.common import jsonutil
from libs.common.definition import WorkflowDefinition, allocation_burst
from libs.common.node_types import NodeTypeSpec
from libs.common.secrets import referenced_secrets
from services.workflow.planner import DefinitionGraph, ExecutionPlan

__all__ = ["CompiledWorkflow", "compile_workflow"]

_ID = attrgetter("id")
_PARAMS = attrgetter("params")
_WHEN = attrgetter("when")


@dataclass
class CompiledWorkflow:
    """A validated definition version with its plan, pre-encoded params and the secrets
    each node's templates read (None: none)."""

    workflow_id: str
    version: int
    definition: WorkflowDefinition
    plan: ExecutionPlan
    params_json: dict[str, bytes]
    secrets: dict[str, set[str] | None]


def compile_workflow(
    workflow_id: str,
    version: int,
    source: WorkflowDefinition | Mapping[str, Any],
    node_types: Mapping[str, NodeTypeSpec],
    graph: DefinitionGraph | None = None,
) -> CompiledWorkflow:
    """Compile a stored version (``source`` its JSON, or the definition its save validated,
    then ``graph`` the one validation built).

    One allocation burst for all of it (definition.allocation_burst): the parse, the plan
    and the per-node encodings of a 100,000-node definition allocate millions of objects,
    and a service's heap is large; with the collector on, its passes cost more than the work.
    """
    with allocation_burst():
        if isinstance(source, WorkflowDefinition):
            definition = source
        else:
            definition = WorkflowDefinition.model_validate(source)
        default_retry = definition.settings.retry
        if default_retry is not None:  # the workflow's default for nodes without their own
            nodes = [
                node if node.retry is not None else node.model_copy(update={"retry": default_retry})
                for node in definition.nodes
            ]
            definition = definition.model_copy(update={"nodes": nodes})
        plan = ExecutionPlan.build(definition, node_types, graph)
        if definition.on_failure is not None:
            # The failure handler gets a node row like every node, outside the plan's graph:
            # the core makes it ready when the execution fails (see ExecutionCore).
            handler = definition.on_failure.node()
            if handler.retry is None and default_retry is not None:
                handler = handler.model_copy(update={"retry": default_retry})
            definition = definition.model_copy(update={"nodes": [*definition.nodes, handler]})
        nodes = definition.nodes
        ids = list(map(_ID, nodes))
        encoded = list(map(jsonutil.dumps, map(_PARAMS, nodes)))
        params_json = dict(zip(ids, [data or b"{}" for data in encoded], strict=True))
        # A node's params name a secret only if their JSON text holds the word (ASCII is
        # never escaped): only those, and a `when` that holds it, are walked.
        secrets: dict[str, set[str] | None] = dict.fromkeys(ids)
        for i, (data, when) in enumerate(zip(encoded, map(_WHEN, nodes), strict=True)):
            if b"secrets" in data or (when is not None and "secrets" in when):
                secrets[ids[i]] = referenced_secrets([nodes[i].params, when])
        return CompiledWorkflow(workflow_id, version, definition, plan, params_json, secrets)
