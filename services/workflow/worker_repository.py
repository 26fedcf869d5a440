"""Queries of the worker side: custom node types and worker presence. Each function takes an
`AsyncSession`; the caller owns the transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import String, column, delete, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import JSONType, UTCDateTime
from services.workflow.worker_models import CustomNodeTypeRow, WorkerPresenceRow


async def custom_types(session: AsyncSession, tenant_id: str) -> list[CustomNodeTypeRow]:
    rows = await session.scalars(
        select(CustomNodeTypeRow)
        .where(CustomNodeTypeRow.tenant_id == tenant_id)
        .order_by(CustomNodeTypeRow.type)
    )
    return list(rows)


async def custom_type(session: AsyncSession, tenant_id: str, name: str) -> CustomNodeTypeRow | None:
    return await session.get(CustomNodeTypeRow, (tenant_id, name))


async def save_custom_type(
    session: AsyncSession,
    tenant_id: str,
    name: str,
    version: str,
    digest: str,
    spec: dict[str, Any],
    worker_name: str,
    now: dt.datetime,
) -> None:
    row = await session.get(CustomNodeTypeRow, (tenant_id, name))
    if row is None:
        session.add(
            CustomNodeTypeRow(
                tenant_id=tenant_id,
                type=name,
                version=version,
                digest=digest,
                spec=spec,
                worker_name=worker_name,
                created_at=now,
                updated_at=now,
            )
        )
        return
    if row.digest != digest or row.version != version:
        row.version, row.digest, row.spec, row.updated_at = version, digest, spec, now
    row.worker_name = worker_name


async def publish_presence(
    session: AsyncSession,
    replica_id: str,
    address: str,
    served: Mapping[tuple[str, str], int],
    now: dt.datetime,
) -> None:
    """This replica's rows become exactly `served` (seen now)."""
    rows = {
        (row.tenant_id, row.node_type): row
        for row in await session.scalars(
            select(WorkerPresenceRow).where(WorkerPresenceRow.replica_id == replica_id)
        )
    }
    for key, stale in rows.items():
        if key not in served:
            await session.delete(stale)
    for (tenant_id, node_type), workers in served.items():
        row = rows.get((tenant_id, node_type))
        if row is None:
            session.add(
                WorkerPresenceRow(
                    replica_id=replica_id,
                    tenant_id=tenant_id,
                    node_type=node_type,
                    address=address,
                    workers=workers,
                    seen_at=now,
                )
            )
        else:
            row.address, row.workers, row.seen_at = address, workers, now


async def withdraw_presence(session: AsyncSession, replica_id: str) -> None:
    await session.execute(
        delete(WorkerPresenceRow).where(WorkerPresenceRow.replica_id == replica_id)
    )


async def presence(
    session: AsyncSession, tenant_id: str, fresh_after: dt.datetime
) -> list[WorkerPresenceRow]:
    """Fresh presence rows of a tenant (every replica)."""
    rows = await session.scalars(
        select(WorkerPresenceRow).where(
            WorkerPresenceRow.tenant_id == tenant_id,
            WorkerPresenceRow.seen_at > fresh_after,
            WorkerPresenceRow.workers > 0,
        )
    )
    return list(rows)


#: The gateway's api_keys table, the columns a worker's key is checked against (read only: the
#: gateway owns the table; its model is not imported here).
_API_KEYS = table(
    "api_keys",
    column("id", String()),
    column("tenant_id", String()),
    column("prefix", String()),
    column("secret_hash", String()),
    column("scopes", JSONType),
    column("expires_at", UTCDateTime()),
    column("revoked_at", UTCDateTime()),
)


async def api_key(session: AsyncSession, prefix: str) -> Any:
    """The api_keys row of a key prefix, or None."""
    result = await session.execute(select(_API_KEYS).where(_API_KEYS.c.prefix == prefix))
    return result.first()
