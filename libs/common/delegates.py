"""An agent's tools that are not the tool service's: another registered agent
(``agent:<id>[@<version>]``) or a saved workflow (``workflow:<id>[@<version>]``), each run as
a child execution. The workflow service resolves them at dispatch
(services/workflow/delegation.py); the agent node runs what it was given
(services/node/executors/agent.py)."""

from __future__ import annotations

AGENT_TOOL = "agent:"
WORKFLOW_TOOL = "workflow:"


def is_delegate(name: str) -> bool:
    """Whether an agent's tool names an agent or a workflow."""
    return name.startswith((AGENT_TOOL, WORKFLOW_TOOL))


def split_version(ref: str) -> tuple[str, str]:
    """(id, version text) of a delegate's ``<id>[@<version>]`` (the part after its prefix);
    the version text is "" when none is pinned (the current version)."""
    target, _, version = ref.partition("@")
    return target, version


def pinned_version(version: str) -> int | None:
    """The version number of a version text, None for "" (the current one); raises
    ValueError naming it when it is not a version number (a positive integer)."""
    if not version:
        return None
    if not version.isdigit() or not 1 <= int(version) < 2**31:
        raise ValueError(f"{version!r} is not a version")
    return int(version)
