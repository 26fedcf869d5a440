"""A validated definition version, compiled once per replica and shared by its runs."""

from __future__ import annotations

from dataclasses import dataclass

from services.workflow.definition import WorkflowDefinition
from services.workflow.planner import ExecutionPlan


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
