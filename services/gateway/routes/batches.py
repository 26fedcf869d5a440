"""Batch runs: POST /workflows/{id}/execute-batch, GET /batches/{id} (see ../batches.py)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from libs.common.errors import InvalidArgument, NotFound
from services.gateway.batches import BatchDriver
from services.gateway.batches import batch_id as derive_batch_id
from services.gateway.models import BatchItemRow, BatchRow
from services.gateway.routes.common import ERROR_RESPONSES, Caller, Clients, Guard, checked_id
from services.gateway.schemas import INT32_MAX

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

MAX_ITEMS = 1000
MAX_CONCURRENCY = 100


class BatchItemIn(BaseModel):
    inputs: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str = Field(
        min_length=1, max_length=256, description="Same key, same execution (across batches)."
    )


class BatchIn(BaseModel):
    items: list[BatchItemIn] = Field(min_length=1, max_length=MAX_ITEMS)
    concurrency: int = Field(
        default=10, ge=1, le=MAX_CONCURRENCY, description="Executions running at once."
    )
    version: int | None = Field(default=None, ge=1, le=INT32_MAX)


class BatchItemOut(BaseModel):
    position: int
    idempotency_key: str
    execution_id: str | None
    status: str = Field(description="queued, running, succeeded, failed, cancelled, rejected")
    error: str


class BatchOut(BaseModel):
    id: str
    workflow_id: str
    total: int
    concurrency: int
    created: bool = Field(default=False, description="False when this batch was posted before.")
    created_at: dt.datetime
    finished_at: dt.datetime | None
    counts: dict[str, int]
    items: list[BatchItemOut]


def _driver(request: Request, clients: Clients, guard: Guard) -> BatchDriver:
    driver: BatchDriver | None = getattr(request.app.state, "batches", None)
    if driver is None:
        driver = request.app.state.batches = BatchDriver(guard.db, clients)
    return driver


async def _read(guard: Guard, tenant_id: str, the_id: str) -> tuple[BatchRow, list[BatchItemRow]]:
    async with guard.db.session() as session:
        batch = await session.get(BatchRow, the_id)
        if batch is None or batch.tenant_id != tenant_id:
            raise NotFound(f"batch '{the_id}' not found")
        items = list(
            (
                await session.execute(
                    select(BatchItemRow)
                    .where(BatchItemRow.batch_id == the_id)
                    .order_by(BatchItemRow.position)
                )
            ).scalars()
        )
    return batch, items


def _out(batch: BatchRow, items: list[BatchItemRow], created: bool = False) -> BatchOut:
    return BatchOut(
        id=batch.id,
        workflow_id=batch.workflow_id,
        total=batch.total,
        concurrency=batch.concurrency,
        created=created,
        created_at=batch.created_at,
        finished_at=batch.finished_at,
        counts=dict(Counter(item.status for item in items)),
        items=[
            BatchItemOut(
                position=item.position,
                idempotency_key=item.idempotency_key,
                execution_id=item.execution_id,
                status=item.status,
                error=item.error,
            )
            for item in items
        ],
    )


@router.post(
    "/workflows/{workflow_id}/execute-batch",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["executions"],
    summary="Start one execution per input, at most `concurrency` at once; the same batch "
    "posted again starts nothing new",
    # Documented, or schemathesis' status_code_conformance fails on the repeat's 200.
    responses={200: {"model": BatchOut, "description": "The same batch again (created false)"}},
)
async def execute_batch(
    workflow_id: str,
    body: BatchIn,
    request: Request,
    response: Response,
    clients: Clients,
    caller: Caller,
    guard: Guard,
) -> BatchOut:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "execute")
    keys = [item.idempotency_key for item in body.items]
    duplicates = sorted(key for key, count in Counter(keys).items() if count > 1)
    if duplicates:
        raise InvalidArgument(
            f"idempotency keys repeat within the batch: {', '.join(duplicates[:5])}",
            [{"field": "items"}],
        )
    the_id = derive_batch_id(caller.tenant_id, workflow_id, keys)
    created = False
    async with guard.db.transaction() as session:
        existing = await session.get(BatchRow, the_id)
        if existing is None:
            created = True
            session.add(
                BatchRow(
                    id=the_id,
                    tenant_id=caller.tenant_id,
                    workflow_id=workflow_id,
                    version=body.version or 0,
                    total=len(body.items),
                    concurrency=body.concurrency,
                    created_by=caller.id,
                )
            )
            await session.flush()
            session.add_all(
                BatchItemRow(
                    batch_id=the_id,
                    position=position,
                    idempotency_key=item.idempotency_key,
                    inputs=item.inputs,
                    status="queued",
                    error="",
                )
                for position, item in enumerate(body.items)
            )
    batch, items = await _read(guard, caller.tenant_id, the_id)
    await _driver(request, clients, guard).ensure_driven(batch)
    request.state.audit_object_id = the_id
    response.headers["Location"] = f"/api/v1/batches/{the_id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return _out(batch, items, created)


@router.get(
    "/batches/{batch_id}",
    tags=["executions"],
    summary="A batch run: its items, their executions and statuses",
)
async def get_batch(
    batch_id: str,
    request: Request,
    clients: Clients,
    caller: Caller,
    guard: Guard,
) -> BatchOut:
    the_id = checked_id(batch_id, "batch")
    batch, items = await _read(guard, caller.tenant_id, the_id)
    await guard.require_workflow(caller, batch.workflow_id, "read")
    # A batch whose driving replica died is taken over here.
    await _driver(request, clients, guard).ensure_driven(batch)
    return _out(batch, items)
