"""Agents and workflows as an agent's tools (issue #15): ``agent:<id>[@<version>]`` and
``workflow:<id>[@<version>]`` in an ``agent`` node's tools, resolved at dispatch into what the
model sees (a function name, a description, a JSON schema) and what the node runs (a workflow
id and version).

Both kinds run as a CHILD EXECUTION of the agent's execution (the node's ``run_child``, keyed
by the tool call's idempotency key, linked by parent execution and node). A saved workflow
runs as it is (the pinned version, else its latest), its ``inputs`` being the tool's schema.
A delegated agent runs in a hidden one-node workflow made here once per tenant, agent and
version (a deterministic id, so two dispatches racing make one): its ``agent`` node takes the
task and the delegation chain so far (the agents above it), which is how a loop A -> B -> A is
stopped at the depth limit.

Resolved here rather than on the node replica: the node replicas have no database, and
dispatch already reads the agent registry for ``agent_id`` (services/workflow/agent_dispatch.py).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.agents import AgentUnavailable, agent_versions, resolve_agent
from libs.common.db import utcnow
from libs.common.delegates import (
    AGENT_TOOL,
    WORKFLOW_TOOL,
    is_delegate,
    pinned_version,
    split_version,
)
from services.workflow import repository as repo
from services.workflow.models import WorkflowRow, WorkflowVersionRow

#: Namespace of the hidden task workflows' ids (uuid5 of tenant, agent, version).
_TASK_NAMESPACE = uuid.UUID("6f1d2c3e-5b8a-4e7f-9c0d-b15d0e1e9a7e")
#: Bumped when the task workflow's definition changes (a new id: new ones are made).
_TASK_REVISION = "v1"
_NOT_A_NAME = re.compile(r"[^a-zA-Z0-9_-]+")
#: JSON Schema of a workflow input type (``file``: a file reference of /api/v1/files).
_INPUT_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "object": {"type": "object"},
    "array": {"type": "array"},
    "file": {"type": "object", "description": "A file reference ({$ref}) of /api/v1/files."},
    "any": {},
}


class UnknownDelegate(AgentUnavailable):
    """An ``agent:``/``workflow:`` tool that names nothing this tenant has."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.error_type = "unknown_tool"


def tool_names(tools: Any) -> list[str]:
    """The names of a node's ``tools`` param (strings or {name, ...})."""
    names: list[str] = []
    for tool in tools if isinstance(tools, list) else []:
        name = tool.get("name") if isinstance(tool, dict) else tool
        if isinstance(name, str):
            names.append(name)
    return names


def function_name(label: str, fallback: str, taken: set[str]) -> str:
    """A valid OpenAI function name (``[a-zA-Z0-9_-]{1,64}``) for label, unique in taken."""
    base = _NOT_A_NAME.sub("_", label).strip("_")[:60] or fallback
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base[:60]}_{number}"
    taken.add(name)
    return name


def inputs_schema(inputs: Any) -> dict[str, Any]:
    """A workflow's declared ``inputs`` as the JSON Schema of a tool's arguments."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, spec in (inputs or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        prop = dict(_INPUT_TYPES.get(str(spec.get("type", "any")), {}))
        if spec.get("description"):
            prop["description"] = spec["description"]
        if spec.get("default") is not None:
            prop["default"] = spec["default"]
        properties[name] = prop
        if spec.get("required") and spec.get("default") is None:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def task_workflow(agent_id: str, name: str, version: int | None) -> dict[str, Any]:
    """The hidden one-node workflow a delegated agent runs in."""
    params: dict[str, Any] = {
        "agent_id": agent_id,
        "prompt": "{{ inputs.task }}",
        "delegation_chain": "{{ inputs.chain }}",
    }
    if version is not None:
        params["agent_version"] = version
    return {
        "name": f"agent-task-{agent_id}" + (f"-v{version}" if version is not None else ""),
        "description": f"The agent {name!r} on a task delegated by another agent.",
        "inputs": {
            "task": {"type": "string", "required": True},
            "chain": {"type": "array", "default": []},
        },
        "nodes": [{"id": "agent", "type": "agent", "params": params}],
        "outputs": {"text": "{{ agent.text }}", "usage": "{{ agent.usage }}"},
    }


async def _task_workflow_id(
    session: AsyncSession, tenant_id: str, agent_id: str, name: str, version: int | None
) -> str:
    key = f"{_TASK_REVISION}/{tenant_id}/{agent_id}/{'' if version is None else version}"
    workflow_id = str(uuid.uuid5(_TASK_NAMESPACE, key))
    if await session.get(WorkflowRow, workflow_id) is not None:
        return workflow_id
    now = utcnow()
    definition = task_workflow(agent_id, name, version)
    session.add(
        WorkflowRow(
            id=workflow_id,
            tenant_id=tenant_id,
            name=definition["name"],
            description=definition["description"],
            latest_version=1,
            created_at=now,
            updated_at=now,
            hidden=True,
        )
    )
    try:
        await session.flush()
        session.add(
            WorkflowVersionRow(
                workflow_id=workflow_id, version=1, definition=definition, created_at=now
            )
        )
        await session.commit()
    except IntegrityError:  # another dispatch made it meanwhile
        await session.rollback()
    return workflow_id


def _target(ref: str, prefix: str) -> tuple[str, int | None]:
    """(id, pinned version or None) of an ``agent:``/``workflow:`` ref."""
    target, version_text = split_version(ref[len(prefix) :])
    try:
        return target, pinned_version(version_text)
    except ValueError as error:
        raise UnknownDelegate(f"tool {ref!r}: {error}") from None


async def resolve(session: AsyncSession, tenant_id: str, names: list[str]) -> dict[str, Any]:
    """What the agent node needs for each ``agent:``/``workflow:`` tool in names:
    {ref: {name, description, input_schema, workflow_id, kind, label}, and the workflow's
    pinned ``version`` for ``workflow:<id>@<version>``}. Raises UnknownDelegate
    (an agent that is unknown, paused or retired too) with a message naming the tool."""
    taken = {name for name in names if not is_delegate(name)}
    delegates: dict[str, Any] = {}
    for ref in names:
        if ref in delegates:
            continue
        if ref.startswith(AGENT_TOOL):
            agent_id, version = _target(ref, AGENT_TOOL)
            try:
                row = await resolve_agent(session, tenant_id, agent_id, version)
            except AgentUnavailable as unavailable:
                raise UnknownDelegate(f"tool {ref!r}: {unavailable}") from None
            delegates[ref] = {
                "kind": "agent",
                "name": function_name(row.name, "agent", taken),
                "description": (row.definition or {}).get("description")
                or f"Delegate a task to the agent {row.name!r}.",
                "input_schema": {
                    "type": "object",
                    "properties": {
                        "task": {
                            "type": "string",
                            "description": f"The task for {row.name}, with everything it "
                            "needs to know.",
                        }
                    },
                    "required": ["task"],
                },
                "workflow_id": await _task_workflow_id(
                    session, tenant_id, row.id, row.name, version
                ),
                "label": row.name,
            }
        elif ref.startswith(WORKFLOW_TOOL):
            workflow_id, version = _target(ref, WORKFLOW_TOOL)
            workflow = await repo.get_workflow(session, tenant_id, workflow_id)
            if workflow is None:
                raise UnknownDelegate(f"tool {ref!r}: workflow {workflow_id!r} not found")
            saved = await repo.get_version(
                session, workflow_id, workflow.latest_version if version is None else version
            )
            if saved is None:
                raise UnknownDelegate(
                    f"tool {ref!r}: workflow {workflow_id!r} has no version {version}"
                )
            delegates[ref] = {
                **({} if version is None else {"version": version}),
                "kind": "workflow",
                "name": function_name(workflow.name, "workflow", taken),
                "description": workflow.description
                or f"Run the workflow {workflow.name!r}; its outputs are the answer.",
                "input_schema": inputs_schema((saved.definition or {}).get("inputs")),
                "workflow_id": workflow_id,
                "label": workflow.name,
            }
    return delegates


async def with_delegates(
    session: AsyncSession, tenant_id: str, params: dict[str, Any]
) -> dict[str, Any]:
    """An agent node's params with ``delegates`` resolved for its agent/workflow tools (and
    ``agent_name``, its label in a delegation chain); params as they are without such tools."""
    names = [name for name in tool_names(params.get("tools")) if is_delegate(name)]
    if not names:
        return params
    out = dict(params)
    out["delegates"] = await resolve(session, tenant_id, names)
    agent_id = params.get("agent_id")
    if isinstance(agent_id, str) and agent_id and "agent_name" not in out:
        version = params.get("agent_version")
        row = await resolve_agent(
            session, tenant_id, agent_id, version if isinstance(version, int) else None
        )
        out["agent_name"] = row.name
    return out


async def tool_problems(
    session: AsyncSession, tenant_id: str, index: int, node: dict[str, Any]
) -> list[dict[str, Any]]:
    """Located validation issues of an agent node's literal agent:/workflow: tools that name
    no agent (version) or workflow of the tenant."""
    raw = node.get("params")
    params: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if node.get("type") != "agent" or not isinstance(params.get("tools"), list):
        return []
    problems: list[dict[str, Any]] = []
    for position, tool in enumerate(params["tools"]):
        name = tool.get("name") if isinstance(tool, dict) else tool
        if not isinstance(name, str) or not is_delegate(name) or "{{" in name:
            continue
        message = ""
        kind = "agent" if name.startswith(AGENT_TOOL) else "workflow"
        target, version = split_version(name.partition(":")[2])
        try:
            number = pinned_version(version)
        except ValueError:
            number = -1  # no version has it
        if kind == "agent":
            rows = await agent_versions(session, tenant_id, target)
            if not rows:
                message = f"unknown agent {target!r}"
            elif number is not None and number not in {r.version for r in rows}:
                message = f"agent {target!r} has no version {version!r}"
        elif await repo.get_workflow(session, tenant_id, target) is None:
            message = f"unknown workflow {target!r}"
        elif number is not None and (
            number < 1 or await repo.get_version(session, target, number) is None
        ):
            message = f"workflow {target!r} has no version {version!r}"
        if message:
            field = f"nodes[{index}].params.tools[{position}]"
            problems.append(
                {
                    "code": "unknown_tool",
                    "message": f"node {node.get('id')!r}: {field}: {message}",
                    "severity": "error",
                    "node_id": node.get("id"),
                    "field": field,
                }
            )
    return problems
