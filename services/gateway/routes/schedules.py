"""Cron schedules (SchedulerService)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from heddle.v1 import scheduler_pb2, workflow_pb2

from libs.common.errors import NotFound
from libs.common.jsontypes import JsonDatetime
from services.gateway.auth import Principal, Security
from services.gateway.convert import (
    from_timestamp,
    paginate,
    schedule_out,
    schedule_spec,
    to_timestamp,
)
from services.gateway.roles import WorkflowAction
from services.gateway.routes.common import (
    ERROR_RESPONSES,
    Caller,
    Clients,
    Guard,
    Paging,
    Tenant,
    checked_id,
)
from services.gateway.schemas import (
    Page,
    ScheduleIn,
    ScheduleOut,
    SchedulePreview,
    ScheduleTriggered,
)

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"], responses=ERROR_RESPONSES)


@router.get("", summary="List schedules")
async def list_schedules(
    clients: Clients,
    tenant: Tenant,
    paging: Paging,
    caller: Caller,
    guard: Guard,
    workflow_id: Annotated[
        str | None,
        Query(description="Only this workflow's (required unless the caller is a tenant admin)."),
    ] = None,
) -> Page[ScheduleOut]:
    if workflow_id:
        await guard.require_workflow(caller, workflow_id, "read")
        await _workflow_exists(clients, workflow_id, tenant)
    else:
        guard.require(caller, "list_all")
    reply = await clients.call(
        clients.scheduler.ListSchedules,
        scheduler_pb2.ListSchedulesRequest(
            page=paging.proto(), workflow_id=workflow_id or "", tenant_id=tenant
        ),
    )
    return paginate([schedule_out(s) for s in reply.schedules], reply.page)


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a schedule")
async def create_schedule(
    body: ScheduleIn,
    request: Request,
    response: Response,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> ScheduleOut:
    await guard.require_workflow(caller, body.workflow_id, "update")
    await _workflow_exists(clients, body.workflow_id, tenant)
    reply = await clients.call(
        clients.scheduler.CreateSchedule,
        scheduler_pb2.CreateScheduleRequest(spec=schedule_spec(body), tenant_id=tenant),
    )
    request.state.audit_object_id = reply.id
    response.headers["Location"] = f"/api/v1/schedules/{reply.id}"
    return schedule_out(reply)


async def _workflow_exists(clients: Clients, workflow_id: str, tenant: str) -> None:
    """404 unless the workflow is the tenant's: a schedule never names another's."""
    await clients.call(
        clients.workflow.GetWorkflow,
        workflow_pb2.GetWorkflowRequest(id=checked_id(workflow_id, "workflow"), tenant_id=tenant),
    )


async def _authorized(
    clients: Clients,
    guard: Security,
    caller: Principal,
    schedule_id: str,
    action: WorkflowAction,
) -> ScheduleOut:
    """The schedule, when the caller's role on its workflow allows action (404 otherwise)."""
    reply = await clients.call(
        clients.scheduler.GetSchedule,
        scheduler_pb2.GetScheduleRequest(
            id=checked_id(schedule_id, "schedule"), tenant_id=caller.tenant_id
        ),
    )
    schedule = schedule_out(reply)
    try:
        await guard.require_workflow(caller, schedule.workflow_id, action)
    except NotFound:
        raise NotFound(f"schedule {schedule_id!r} not found") from None
    return schedule


# Declared before /{schedule_id} so that "preview" is not taken for an id.
@router.get("/preview", summary="The next fire times of a cron expression")
async def preview_schedule(
    clients: Clients,
    caller: Caller,
    guard: Guard,
    cron: Annotated[str, Query(min_length=1, description="5 fields, or 6 with seconds first.")],
    timezone: Annotated[str, Query(description="IANA time zone name.")] = "UTC",
    count: Annotated[int, Query(ge=1, le=100)] = 5,
    after: Annotated[JsonDatetime | None, Query(description="Start point; now if unset.")] = None,
) -> SchedulePreview:
    guard.require(caller, "read_catalog")
    reply = await clients.call(
        clients.scheduler.PreviewSchedule,
        scheduler_pb2.PreviewScheduleRequest(
            cron=cron, timezone=timezone, count=count, after=to_timestamp(after)
        ),
    )
    return SchedulePreview(fire_times=[from_timestamp(stamp) for stamp in reply.fire_times])


@router.get("/{schedule_id}", summary="Read a schedule")
async def get_schedule(
    schedule_id: str, clients: Clients, caller: Caller, guard: Guard
) -> ScheduleOut:
    return await _authorized(clients, guard, caller, schedule_id, "read")


@router.put("/{schedule_id}", summary="Replace a schedule's spec")
async def update_schedule(
    schedule_id: str,
    body: ScheduleIn,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> ScheduleOut:
    await _authorized(clients, guard, caller, schedule_id, "update")
    await guard.require_workflow(caller, body.workflow_id, "update")
    await _workflow_exists(clients, body.workflow_id, tenant)
    reply = await clients.call(
        clients.scheduler.UpdateSchedule,
        scheduler_pb2.UpdateScheduleRequest(
            id=checked_id(schedule_id, "schedule"), spec=schedule_spec(body), tenant_id=tenant
        ),
    )
    return schedule_out(reply)


@router.delete(
    "/{schedule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a schedule",
)
async def delete_schedule(
    schedule_id: str, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> None:
    await _authorized(clients, guard, caller, schedule_id, "update")
    await clients.call(
        clients.scheduler.DeleteSchedule,
        scheduler_pb2.DeleteScheduleRequest(
            id=checked_id(schedule_id, "schedule"), tenant_id=tenant
        ),
    )


@router.post(
    "/{schedule_id}/trigger",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Fire a schedule now",
)
async def trigger_schedule(
    schedule_id: str, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> ScheduleTriggered:
    await _authorized(clients, guard, caller, schedule_id, "execute")
    reply = await clients.call(
        clients.scheduler.TriggerSchedule,
        scheduler_pb2.TriggerScheduleRequest(
            id=checked_id(schedule_id, "schedule"), tenant_id=tenant
        ),
    )
    return ScheduleTriggered(dedupe_key=reply.dedupe_key)
