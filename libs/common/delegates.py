"""An agent's tools that are not the tool service's: another registered agent
(``agent:<id>[@<version>]``) or a saved workflow (``workflow:<id>``), each run as a child
execution. The workflow service resolves them at dispatch (services/workflow/delegation.py);
the agent node runs what it was given (services/node/executors/agent.py)."""

from __future__ import annotations

AGENT_TOOL = "agent:"
WORKFLOW_TOOL = "workflow:"


def is_delegate(name: str) -> bool:
    """Whether an agent's tool names an agent or a workflow."""
    return name.startswith((AGENT_TOOL, WORKFLOW_TOOL))
