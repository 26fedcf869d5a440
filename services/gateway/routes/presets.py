"""Node presets: saved, named, versioned parameter sets of a node type, per tenant (the
console's palette shows them under their type).

Access follows the workflows' model: every member of the tenant may read presets and create
one (the `write` scope); the creator owns a preset: only the creator or a tenant admin saves
new versions of it or deletes it. Another tenant's preset is not found.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import jsonschema
from fastapi import APIRouter, Query, Request, Response, status
from heddle.v1 import node_pb2
from pydantic import BaseModel, Field
from sqlalchemy import delete, func, select

from libs.common import jsonutil
from libs.common.errors import Conflict, InvalidArgument, NotFound
from services.gateway.auth import Security
from services.gateway.models import NodePresetRow
from services.gateway.routes.common import (
    ERROR_RESPONSES,
    Caller,
    Clients,
    Guard,
    Paging,
    Tenant,
    checked_id,
    insert_version,
    require_creator_or_admin,
)
from services.gateway.schemas import INT32_MAX, Page

router = APIRouter(prefix="/api/v1", tags=["node presets"], responses=ERROR_RESPONSES)


class PresetIn(BaseModel):
    node_type: str = Field(min_length=1, max_length=200, description="The node type.")
    name: str = Field(min_length=1, max_length=200, description="Unique per node type.")
    description: str = Field(default="", max_length=2000)
    params: dict[str, Any] = Field(
        default_factory=dict, description="Params of the node type (its params schema)."
    )


class PresetUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    params: dict[str, Any] = Field(description="The new version's params.")


class PresetOut(BaseModel):
    id: str
    version: int
    node_type: str
    name: str
    description: str
    params: dict[str, Any]
    created_by: str
    created_at: dt.datetime


def _out(row: NodePresetRow) -> PresetOut:
    return PresetOut(
        id=row.id,
        version=row.version,
        node_type=row.node_type,
        name=row.name,
        description=row.description,
        params=row.params or {},
        created_by=row.created_by,
        created_at=row.created_at,
    )


async def _params_schema(clients: Clients, tenant: str, node_type: str) -> dict[str, Any]:
    reply = await clients.call(
        clients.workflow.ListNodeTypes, node_pb2.ListNodeTypesRequest(tenant_id=tenant)
    )
    for spec in jsonutil.loads(reply.node_types_json) or []:
        if spec.get("type") == node_type:
            schema: dict[str, Any] = spec.get("params_schema") or {"type": "object"}
            return schema
    raise InvalidArgument(
        f"unknown node type {node_type!r}", details=[{"field": "node_type", "value": node_type}]
    )


async def _check_params(
    clients: Clients, tenant: str, node_type: str, params: dict[str, Any]
) -> None:
    schema = await _params_schema(clients, tenant, node_type)
    validator = jsonschema.Draft202012Validator(schema)
    problems = [
        {
            "field": "params" + "".join(f".{p}" for p in error.absolute_path),
            "message": error.message,
        }
        for error in validator.iter_errors(params)
    ]
    if problems:
        raise InvalidArgument(f"params break the schema of {node_type!r}", details=problems)


async def _versions(guard: Security, tenant: str, preset_id: str) -> list[NodePresetRow]:
    async with guard.db.session() as session:
        rows = await session.scalars(
            select(NodePresetRow)
            .where(NodePresetRow.id == preset_id, NodePresetRow.tenant_id == tenant)
            .order_by(NodePresetRow.version.desc())
        )
        found = list(rows)
    if not found:
        raise NotFound(f"node preset {preset_id!r} not found")
    return found


async def _name_taken(
    guard: Security, tenant: str, node_type: str, name: str, other_than: str | None
) -> bool:
    async with guard.db.session() as session:
        where = [
            NodePresetRow.tenant_id == tenant,
            NodePresetRow.node_type == node_type,
            NodePresetRow.name == name,
        ]
        if other_than is not None:
            where.append(NodePresetRow.id != other_than)
        # A name belongs to a preset while its current (highest) version carries it.
        latest = (
            select(NodePresetRow.id, func.max(NodePresetRow.version).label("v"))
            .where(NodePresetRow.tenant_id == tenant)
            .group_by(NodePresetRow.id)
            .subquery()
        )
        found = await session.scalar(
            select(func.count())
            .select_from(NodePresetRow)
            .join(
                latest,
                (latest.c.id == NodePresetRow.id) & (latest.c.v == NodePresetRow.version),
            )
            .where(*where)
        )
        return bool(found)


@router.get("/node-presets", summary="Node presets (current versions), optionally of one type")
async def list_presets(
    tenant: Tenant,
    paging: Paging,
    caller: Caller,
    guard: Guard,
    node_type: Annotated[str | None, Query(max_length=200, description="Only this type.")] = None,
) -> Page[PresetOut]:
    guard.require(caller, "read_catalog")
    latest = (
        select(NodePresetRow.id, func.max(NodePresetRow.version).label("v"))
        .where(NodePresetRow.tenant_id == tenant)
        .group_by(NodePresetRow.id)
        .subquery()
    )
    query = select(NodePresetRow).join(
        latest, (latest.c.id == NodePresetRow.id) & (latest.c.v == NodePresetRow.version)
    )
    if node_type is not None:
        query = query.where(NodePresetRow.node_type == node_type)
    async with guard.db.session() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await session.scalars(
            query.order_by(NodePresetRow.node_type, NodePresetRow.name, NodePresetRow.id)
            .offset((paging.page - 1) * paging.page_size)
            .limit(paging.page_size)
        )
        items = [_out(row) for row in rows]
    return Page[PresetOut](
        items=items, page=paging.page, page_size=paging.page_size, total=int(total or 0)
    )


@router.post(
    "/node-presets", status_code=status.HTTP_201_CREATED, summary="Save a new preset (version 1)"
)
async def create_preset(
    body: PresetIn,
    request: Request,
    response: Response,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> PresetOut:
    guard.require(caller, "create_workflow")
    await _check_params(clients, tenant, body.node_type, body.params)
    if await _name_taken(guard, tenant, body.node_type, body.name, None):
        raise Conflict(f"a {body.node_type!r} preset named {body.name!r} exists")
    row = NodePresetRow(
        id=str(uuid.uuid4()),
        version=1,
        tenant_id=tenant,
        node_type=body.node_type,
        name=body.name,
        description=body.description,
        params=body.params,
        created_by=caller.id,
    )
    async with guard.db.transaction() as session:
        session.add(row)
    request.state.audit_object_id = row.id
    response.headers["Location"] = f"/api/v1/node-presets/{row.id}"
    return _out(row)


@router.get("/node-presets/{preset_id}", summary="A preset (current or ?version=N)")
async def get_preset(
    preset_id: str,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
    version: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
) -> PresetOut:
    guard.require(caller, "read_catalog")
    preset_id = checked_id(preset_id, "node preset")
    rows = await _versions(guard, tenant, preset_id)
    if version is None:
        return _out(rows[0])
    for row in rows:
        if row.version == version:
            return _out(row)
    raise NotFound(f"node preset {preset_id!r} has no version {version}")


@router.get("/node-presets/{preset_id}/versions", summary="Every version of a preset, newest first")
async def list_preset_versions(
    preset_id: str, tenant: Tenant, caller: Caller, guard: Guard
) -> list[PresetOut]:
    guard.require(caller, "read_catalog")
    preset_id = checked_id(preset_id, "node preset")
    return [_out(row) for row in await _versions(guard, tenant, preset_id)]


@router.put("/node-presets/{preset_id}", summary="Save a new version of a preset")
async def update_preset(
    preset_id: str,
    body: PresetUpdate,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> PresetOut:
    preset_id = checked_id(preset_id, "node preset")
    rows = await _versions(guard, tenant, preset_id)
    require_creator_or_admin(caller, rows[-1].created_by, "preset")
    current = rows[0]
    name = body.name if body.name is not None else current.name
    await _check_params(clients, tenant, current.node_type, body.params)
    if name != current.name and await _name_taken(
        guard, tenant, current.node_type, name, preset_id
    ):
        raise Conflict(f"a {current.node_type!r} preset named {name!r} exists")
    row = NodePresetRow(
        id=preset_id,
        version=current.version + 1,
        tenant_id=tenant,
        node_type=current.node_type,
        name=name,
        description=body.description if body.description is not None else current.description,
        params=body.params,
        created_by=caller.id,
    )
    await insert_version(guard, row, "preset")
    return _out(row)


@router.delete(
    "/node-presets/{preset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a preset and its versions",
)
async def delete_preset(preset_id: str, tenant: Tenant, caller: Caller, guard: Guard) -> None:
    preset_id = checked_id(preset_id, "node preset")
    rows = await _versions(guard, tenant, preset_id)
    require_creator_or_admin(caller, rows[-1].created_by, "preset")
    async with guard.db.transaction() as session:
        await session.execute(
            delete(NodePresetRow).where(
                NodePresetRow.id == preset_id, NodePresetRow.tenant_id == tenant
            )
        )
