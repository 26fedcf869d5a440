"""Dispatch-time resolution of an ``agent``/``llm`` node's ``agent_id`` and ``session_id``,
and the validation of those references.

Why the workflow service resolves at dispatch (not the node replica over gRPC): the node
replicas have no database, and the workflow service already resolves what an attempt needs
(secrets, a cache hit) just before it sends it; a session read there costs one query and no
new RPC. The turns are appended after the node's completion is committed, so a turn is stored
once the node's output is durable (a crash between the commit and the append loses the turn,
never stores it twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.agents import (
    AgentRow,
    AgentUnavailable,
    agent_versions,
    get_session,
    resolve_agent,
    session_messages,
)
from libs.common.expressions import ExpressionError, render
from libs.common.memory import window
from services.workflow import delegation
from services.workflow.validation import ValidationIssue, ValidationReport

#: Node types that take agent_id / session_id.
AGENT_NODE_TYPES = frozenset({"agent", "llm"})
#: Agent fields copied under an ``agent`` node's params (the node's own params win).
_AGENT_PARAM_FIELDS = ("instructions", "tools", "max_steps", "temperature", "max_tokens")


# ---- validation and dispatch --------------------------------------------------------------


async def reference_problems(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str, definition: dict[str, Any]
) -> list[dict[str, Any]]:
    """Located problems of the definition's agent/session references (unknown agent id or
    version, a session of another tenant), as validation issues."""
    problems: list[dict[str, Any]] = []
    nodes = definition.get("nodes") or []
    wanted = [
        (index, node)
        for index, node in enumerate(nodes)
        if isinstance(node, dict)
        and node.get("type") in AGENT_NODE_TYPES
        and isinstance(node.get("params"), dict)
    ]
    if not wanted:
        return problems
    async with sessions() as session:
        for index, node in wanted:
            params = node["params"]
            problems.extend(await delegation.tool_problems(session, tenant_id, index, node))
            agent_id = params.get("agent_id")
            if isinstance(agent_id, str) and "{{" not in agent_id:
                rows = await agent_versions(session, tenant_id, agent_id)
                version = params.get("agent_version")
                if not rows or (
                    isinstance(version, int) and version not in {r.version for r in rows}
                ):
                    what = f"agent {agent_id!r}" + (
                        f" version {version}" if rows and isinstance(version, int) else ""
                    )
                    problems.append(
                        {
                            "code": "unknown_agent",
                            "message": f"node {node.get('id')!r}: {what} not found",
                            "severity": "error",
                            "node_id": node.get("id"),
                            "field": f"nodes[{index}].params.agent_id",
                        }
                    )
            session_id = params.get("session_id")
            if (
                isinstance(session_id, str)
                and "{{" not in session_id
                and await get_session(session, tenant_id, session_id) is None
            ):
                problems.append(
                    {
                        "code": "unknown_session",
                        "message": f"node {node.get('id')!r}: session {session_id!r} not found",
                        "severity": "error",
                        "node_id": node.get("id"),
                        "field": f"nodes[{index}].params.session_id",
                    }
                )
    return problems


@dataclass(frozen=True)
class Prepared:
    """What dispatch resolved for one attempt: the params to send, and the session turn to
    store when the node succeeds (None: no session)."""

    params_json: bytes
    session_id: str | None = None
    prompt: str = ""


def merge_agent(row: AgentRow, params: dict[str, Any]) -> dict[str, Any]:
    """The agent's definition under the node's params (the node's own params win)."""
    spec = row.definition or {}
    merged: dict[str, Any] = {k: spec[k] for k in _AGENT_PARAM_FIELDS if spec.get(k) is not None}
    model = spec.get("model")
    if model:
        fallbacks = [m for m in spec.get("fallback_models") or [] if m != model]
        merged["model"] = [model, *fallbacks] if fallbacks else model
    if spec.get("output_schema") is not None:
        merged["output_schema"] = spec["output_schema"]
    merged["agent_type"] = spec.get("type", "react")
    approvals = set(spec.get("approval_tools") or [])
    if approvals and isinstance(merged.get("tools"), list):
        merged["tools"] = [
            {"name": tool, "requires_approval": True} if tool in approvals else tool
            for tool in merged["tools"]
        ]
    merged.update(params)
    merged["agent_version"] = row.version
    return merged


def merge_llm(row: AgentRow, params: dict[str, Any]) -> dict[str, Any]:
    """An llm node on an agent: its model chain, instructions (as the system text),
    temperature and max_tokens under the node's params."""
    spec = row.definition or {}
    merged: dict[str, Any] = {}
    model = spec.get("model")
    if model:
        fallbacks = [m for m in spec.get("fallback_models") or [] if m != model]
        merged["model"] = [model, *fallbacks] if fallbacks else model
    if spec.get("instructions"):
        merged["system"] = spec["instructions"]
    for key in ("temperature", "max_tokens"):
        if spec.get(key) is not None:
            merged[key] = spec[key]
    merged.update(params)
    merged["agent_version"] = row.version
    return merged


async def prepare_params(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    node_type: str,
    params_json: bytes,
    context: dict[str, Any],
) -> Prepared | None:
    """Resolve agent_id and load session_id for an agent/llm attempt; None: nothing to do.
    Raises AgentUnavailable with a message for the node's error."""
    if node_type not in AGENT_NODE_TYPES or (
        b'"agent_id"' not in params_json
        and b'"session_id"' not in params_json
        and b'"agent:' not in params_json
        and b'"workflow:' not in params_json
    ):
        return None
    params = jsonutil.loads(params_json)
    if not isinstance(params, dict):
        return None
    params = _rendered_ids(params, context)
    agent_id = params.get("agent_id")
    session_id = params.get("session_id")
    memory: dict[str, Any] | None = params.get("memory")
    async with sessions() as session:
        if isinstance(agent_id, str) and agent_id:
            version = params.get("agent_version")
            row = await resolve_agent(
                session, tenant_id, agent_id, version if isinstance(version, int) else None
            )
            params = merge_agent(row, params) if node_type == "agent" else merge_llm(row, params)
            memory = memory or row.definition.get("memory")
        if node_type == "agent":  # its agent:/workflow: tools (services/workflow/delegation.py)
            params = await delegation.with_delegates(session, tenant_id, params)
        if not isinstance(session_id, str) or not session_id:
            return Prepared(jsonutil.dumps(params))
        thread = await get_session(session, tenant_id, session_id)
        if thread is None:
            raise AgentUnavailable(f"session {session_id!r} not found", "session_not_found")
        if isinstance(agent_id, str) and agent_id and thread.agent_id != agent_id:
            raise AgentUnavailable(
                f"session {session_id!r} belongs to another agent", "session_mismatch"
            )
        rows = await session_messages(session, session_id)
    history = [{"role": r.role, "content": r.content} for r in rows]
    kept, dropped = window(history, memory)
    params = {**params, "history": kept}
    if dropped and isinstance(memory, dict) and memory.get("summary"):
        params["history_dropped"] = dropped
    prompt = params.get("prompt")
    if prompt is None and node_type == "agent":
        prompt = params.get("input")
    prompt = _render(prompt, context)
    text = prompt if isinstance(prompt, str) else jsonutil.dumps(prompt).decode()
    return Prepared(jsonutil.dumps(params), session_id=session_id, prompt=text)


def _rendered_ids(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """agent_id/session_id may be templates of the inputs (``{{ inputs.session }}``): the node
    renders its params itself, but dispatch needs the ids now."""
    out = dict(params)
    for key in ("agent_id", "session_id"):
        value = out.get(key)
        if isinstance(value, str) and "{{" in value:
            rendered = _render(value, context)
            out[key] = rendered if isinstance(rendered, str) else str(rendered)
    return out


def _render(value: Any, context: dict[str, Any]) -> Any:
    try:
        return render(value, context)
    except ExpressionError:  # the node renders it again and reports the error, located
        return value


def turn_messages(prompt: str, output: Any) -> list[tuple[str, str]]:
    """The node's prompt (user) and its answer's text (assistant), as a session's messages."""
    text = output.get("text") if isinstance(output, dict) else None
    answer = text if isinstance(text, str) else jsonutil.dumps(output).decode()
    return [("user", prompt), ("assistant", answer)]


async def with_agent_references(
    report: ValidationReport,
    raw: Any,
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
) -> ValidationReport:
    """The report with the definition's unknown agents and sessions added as located errors
    (checked only when the definition is otherwise valid: its nodes are then well-formed)."""
    if not report.valid or not isinstance(raw, dict):
        return report
    problems = await reference_problems(sessions, tenant_id, raw)
    if not problems:
        return report
    issues = [ValidationIssue(**problem) for problem in problems]
    return ValidationReport(valid=False, errors=[*report.errors, *issues], warnings=report.warnings)
