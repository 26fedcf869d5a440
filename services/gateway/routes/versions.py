"""Workflow versions: the history (author, time, what changed), any version, a diff of two,
and rollback (a new version equal to an old one).

The workflow service keeps every version's definition; the gateway records who saved each
one (`workflow_version_authors`), as it knows the caller.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status
from heddle.v1 import workflow_pb2
from pydantic import BaseModel, Field
from sqlalchemy import select

from libs.common import jsonutil
from services.gateway.auth import Principal, Security
from services.gateway.convert import time_of
from services.gateway.models import WorkflowVersionAuthorRow
from services.gateway.routes.common import (
    ERROR_RESPONSES,
    Caller,
    Clients,
    Guard,
    Paging,
    Tenant,
    checked_id,
)
from services.gateway.schemas import INT32_MAX, Page

router = APIRouter(prefix="/api/v1", tags=["workflows"], responses=ERROR_RESPONSES)

VersionNumber = Annotated[int, Path(ge=1, le=INT32_MAX, description="A version number.")]


class DiffSummary(BaseModel):
    """What changed from the previous version (or, in a diff, from `from_version`)."""

    nodes_added: list[str] = Field(default_factory=list)
    nodes_removed: list[str] = Field(default_factory=list)
    nodes_changed: list[str] = Field(default_factory=list)
    edges_added: int = 0
    edges_removed: int = 0
    fields_changed: list[str] = Field(
        default_factory=list, description="Top-level fields other than nodes and edges."
    )
    text: str = Field(description='One line, e.g. "+1 node (b), ~1 node (a), +1 edge".')


class VersionOut(BaseModel):
    workflow_id: str
    version: int
    name: str
    author: str | None = Field(description="Who saved it; null when not recorded.")
    created_at: dt.datetime | None = None
    rollback_of: int | None = Field(
        default=None, description="The version this one restored, when it is a rollback."
    )
    summary: DiffSummary
    definition: dict[str, Any] | None = Field(default=None, description="Omitted in lists.")


class NodeDiff(BaseModel):
    id: str
    change: Literal["added", "removed", "changed", "same"]
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class EdgeDiff(BaseModel):
    change: Literal["added", "removed", "same"]
    edge: dict[str, Any]


class VersionDiff(BaseModel):
    workflow_id: str
    from_version: int
    to_version: int
    summary: DiffSummary
    nodes: list[NodeDiff]
    edges: list[EdgeDiff]
    fields: dict[str, dict[str, Any]] = Field(
        description="Changed top-level fields: {field: {before, after}}."
    )


# ---- the diff (pure) ------------------------------------------------------------------------


def _nodes(definition: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    nodes = (definition or {}).get("nodes") or []
    return {str(n.get("id")): n for n in nodes if isinstance(n, dict)}


def _edges(definition: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [e for e in (definition or {}).get("edges") or [] if isinstance(e, dict)]


def _edge_key(edge: dict[str, Any]) -> str:
    return json.dumps(edge, sort_keys=True, default=str)


def diff_definitions(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[DiffSummary, list[NodeDiff], list[EdgeDiff], dict[str, dict[str, Any]]]:
    """What changed from `before` to `after` (None: an empty definition)."""
    old_nodes, new_nodes = _nodes(before), _nodes(after)
    node_diffs: list[NodeDiff] = []
    for node_id, node in new_nodes.items():
        if node_id not in old_nodes:
            node_diffs.append(NodeDiff(id=node_id, change="added", after=node))
        elif old_nodes[node_id] != node:
            node_diffs.append(
                NodeDiff(id=node_id, change="changed", before=old_nodes[node_id], after=node)
            )
        else:
            node_diffs.append(NodeDiff(id=node_id, change="same", before=node, after=node))
    for node_id, node in old_nodes.items():
        if node_id not in new_nodes:
            node_diffs.append(NodeDiff(id=node_id, change="removed", before=node))
    old_edges = {_edge_key(e): e for e in _edges(before)}
    new_edges = {_edge_key(e): e for e in _edges(after)}
    edge_diffs = [
        EdgeDiff(change="same" if key in old_edges else "added", edge=edge)
        for key, edge in new_edges.items()
    ] + [EdgeDiff(change="removed", edge=e) for k, e in old_edges.items() if k not in new_edges]
    fields: dict[str, dict[str, Any]] = {}
    # The first version is all new: its fields are not "changes".
    names = set(before) | set(after or {}) if before is not None else set()
    for name in sorted(names):
        if name in ("nodes", "edges"):
            continue
        old, new = (before or {}).get(name), (after or {}).get(name)
        if old != new:
            fields[name] = {"before": old, "after": new}
    summary = DiffSummary(
        nodes_added=[d.id for d in node_diffs if d.change == "added"],
        nodes_removed=[d.id for d in node_diffs if d.change == "removed"],
        nodes_changed=[d.id for d in node_diffs if d.change == "changed"],
        edges_added=sum(d.change == "added" for d in edge_diffs),
        edges_removed=sum(d.change == "removed" for d in edge_diffs),
        fields_changed=list(fields),
        text="",
    )
    summary.text = _summary_text(summary)
    return summary, node_diffs, edge_diffs, fields


def _summary_text(summary: DiffSummary) -> str:
    def nodes(sign: str, ids: list[str]) -> str:
        shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
        return f"{sign}{len(ids)} node{'s' if len(ids) != 1 else ''} ({shown})"

    parts = []
    if summary.nodes_added:
        parts.append(nodes("+", summary.nodes_added))
    if summary.nodes_removed:
        parts.append(nodes("-", summary.nodes_removed))
    if summary.nodes_changed:
        parts.append(nodes("~", summary.nodes_changed))
    for sign, count in (("+", summary.edges_added), ("-", summary.edges_removed)):
        if count:
            parts.append(f"{sign}{count} edge{'s' if count != 1 else ''}")
    if summary.fields_changed:
        parts.append("changed " + ", ".join(summary.fields_changed))
    return "; ".join(parts) or "no change"


# ---- authors --------------------------------------------------------------------------------


async def record_version_author(
    guard: Security,
    caller: Principal,
    workflow: Any,
    rollback_of: int | None = None,
) -> None:
    """Remember who saved `workflow` (a Workflow reply: id, version, tenant)."""
    async with guard.db.transaction() as session:
        await session.merge(
            WorkflowVersionAuthorRow(
                workflow_id=workflow.id,
                version=workflow.version,
                tenant_id=caller.tenant_id,
                author=caller.id,
                rollback_of=rollback_of,
            )
        )


async def _authors(
    guard: Security, tenant: str, workflow_id: str, versions: list[int]
) -> dict[int, WorkflowVersionAuthorRow]:
    async with guard.db.session() as session:
        rows = await session.scalars(
            select(WorkflowVersionAuthorRow).where(
                WorkflowVersionAuthorRow.workflow_id == workflow_id,
                WorkflowVersionAuthorRow.tenant_id == tenant,
                WorkflowVersionAuthorRow.version.in_(versions),
            )
        )
        return {row.version: row for row in rows}


async def _workflow(clients: Clients, workflow_id: str, tenant: str, version: int = 0) -> Any:
    return await clients.call(
        clients.workflow.GetWorkflow,
        workflow_pb2.GetWorkflowRequest(id=workflow_id, version=version, tenant_id=tenant),
    )


def _definition(workflow: Any) -> dict[str, Any] | None:
    loaded = jsonutil.loads(workflow.definition_json) if workflow.definition_json else None
    return loaded if isinstance(loaded, dict) else None


def _version_out(
    workflow: Any,
    previous: dict[str, Any] | None,
    author: WorkflowVersionAuthorRow | None,
    with_definition: bool,
) -> VersionOut:
    definition = _definition(workflow)
    summary, *_ = diff_definitions(previous, definition)
    return VersionOut(
        workflow_id=workflow.id,
        version=workflow.version,
        name=workflow.name,
        author=author.author if author is not None else None,
        created_at=author.created_at if author is not None else time_of(workflow, "updated_at"),
        rollback_of=author.rollback_of if author is not None else None,
        summary=summary,
        definition=definition if with_definition else None,
    )


# ---- routes ---------------------------------------------------------------------------------


@router.get(
    "/workflows/{workflow_id}/versions",
    summary="A workflow's versions, newest first: author, time, what changed",
)
async def list_versions(
    workflow_id: str, clients: Clients, tenant: Tenant, paging: Paging, caller: Caller, guard: Guard
) -> Page[VersionOut]:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "read")
    latest = await _workflow(clients, workflow_id, tenant)
    newest = latest.version - (paging.page - 1) * paging.page_size
    numbers = [n for n in range(newest, newest - paging.page_size, -1) if n >= 1]
    # One version below the page too: the oldest one shown needs it for its summary.
    fetched = {latest.version: latest}
    for number in [*numbers, (numbers[-1] - 1) if numbers else 0]:
        if number >= 1 and number not in fetched:
            fetched[number] = await _workflow(clients, workflow_id, tenant, number)
    authors = await _authors(guard, tenant, workflow_id, numbers)
    items = [
        _version_out(
            fetched[n],
            _definition(fetched[n - 1]) if n > 1 else None,
            authors.get(n),
            with_definition=False,
        )
        for n in numbers
    ]
    return Page[VersionOut](
        items=items, page=paging.page, page_size=paging.page_size, total=latest.version
    )


@router.get("/workflows/{workflow_id}/versions/{version}", summary="One version of a workflow")
async def get_version(
    workflow_id: str,
    version: VersionNumber,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> VersionOut:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "read")
    workflow = await _workflow(clients, workflow_id, tenant, version)
    previous = (
        _definition(await _workflow(clients, workflow_id, tenant, version - 1))
        if version > 1
        else None
    )
    authors = await _authors(guard, tenant, workflow_id, [version])
    return _version_out(workflow, previous, authors.get(version), with_definition=True)


@router.get(
    "/workflows/{workflow_id}/versions/{version}/diff",
    summary="What changed between two versions, node by node (?against=M, default N-1)",
)
async def diff_versions(
    workflow_id: str,
    version: VersionNumber,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
    against: Annotated[
        int | None,
        Query(ge=1, le=INT32_MAX, description="The version compared with (default: N-1)."),
    ] = None,
) -> VersionDiff:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "read")
    after = await _workflow(clients, workflow_id, tenant, version)
    base = against if against is not None else version - 1
    before = _definition(await _workflow(clients, workflow_id, tenant, base)) if base else None
    summary, nodes, edges, fields = diff_definitions(before, _definition(after))
    return VersionDiff(
        workflow_id=workflow_id,
        from_version=base,
        to_version=version,
        summary=summary,
        nodes=nodes,
        edges=edges,
        fields=fields,
    )


@router.post(
    "/workflows/{workflow_id}/versions/{version}/rollback",
    status_code=status.HTTP_201_CREATED,
    summary="Roll back: save a new version equal to version N",
)
async def rollback_version(
    workflow_id: str,
    version: VersionNumber,
    request: Request,
    response: Response,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> VersionOut:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "update")
    old = await _workflow(clients, workflow_id, tenant, version)
    previous = await _workflow(clients, workflow_id, tenant)
    saved = await clients.call(
        clients.workflow.UpdateWorkflow,
        workflow_pb2.UpdateWorkflowRequest(
            id=workflow_id, definition_json=old.definition_json, tenant_id=tenant
        ),
    )
    await record_version_author(guard, caller, saved, rollback_of=version)
    request.state.audit_object_id = f"{workflow_id}/{saved.version}"
    response.headers["Location"] = f"/api/v1/workflows/{workflow_id}/versions/{saved.version}"
    authors = await _authors(guard, tenant, workflow_id, [saved.version])
    return _version_out(
        saved, _definition(previous), authors.get(saved.version), with_definition=True
    )
