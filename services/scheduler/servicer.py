"""SchedulerService over gRPC: protobuf <-> the schedule manager, nothing more."""

from __future__ import annotations

import grpc
from heddle.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

from libs.common import jsonutil
from libs.common.errors import InvalidArgument
from libs.common.timeutil import field_datetime, optional_timestamp
from services.scheduler.models import Schedule
from services.scheduler.schedules import ScheduleManager, ScheduleSpec

MAX_PAGE_SIZE = 1000


def to_spec(spec: scheduler_pb2.ScheduleSpec) -> ScheduleSpec:
    try:
        inputs = jsonutil.loads(spec.inputs_json)
    except ValueError as error:
        raise InvalidArgument(
            f"inputs_json: not valid JSON: {error}",
            details=[{"path": "inputs_json", "message": str(error)}],
        ) from error
    return ScheduleSpec(
        workflow_id=spec.workflow_id,
        cron=spec.cron,
        timezone=spec.timezone or "UTC",
        inputs=inputs,
        enabled=spec.enabled,
        misfire_policy=spec.misfire_policy,
        misfire_limit=spec.misfire_limit,
        start_at=field_datetime(spec, "start_at"),
        end_at=field_datetime(spec, "end_at"),
        name=spec.name,
        priority=spec.priority if spec.HasField("priority") else 5,
    )


def to_proto(schedule: Schedule) -> scheduler_pb2.Schedule:
    return scheduler_pb2.Schedule(
        id=schedule.id,
        tenant_id=schedule.tenant_id,
        spec=scheduler_pb2.ScheduleSpec(
            workflow_id=schedule.workflow_id,
            cron=schedule.cron,
            timezone=schedule.timezone,
            inputs_json=jsonutil.dumps(schedule.inputs),
            enabled=schedule.enabled,
            misfire_policy=schedule.misfire_policy,
            misfire_limit=schedule.misfire_limit,
            start_at=optional_timestamp(schedule.start_at),
            end_at=optional_timestamp(schedule.end_at),
            name=schedule.name,
            priority=schedule.priority,
        ),
        next_fire_at=optional_timestamp(schedule.next_fire_at),
        last_fire_at=optional_timestamp(schedule.last_fire_at),
        created_at=optional_timestamp(schedule.created_at),
        updated_at=optional_timestamp(schedule.updated_at),
    )


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, manager: ScheduleManager, default_page_size: int = 50) -> None:
        self._manager = manager
        self._default_page_size = default_page_size

    async def CreateSchedule(
        self, request: scheduler_pb2.CreateScheduleRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.Schedule:
        schedule = await self._manager.create(to_spec(request.spec), request.tenant_id)
        return to_proto(schedule)

    async def UpdateSchedule(
        self, request: scheduler_pb2.UpdateScheduleRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.Schedule:
        schedule = await self._manager.update(request.id, to_spec(request.spec), request.tenant_id)
        return to_proto(schedule)

    async def GetSchedule(
        self, request: scheduler_pb2.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.Schedule:
        return to_proto(await self._manager.get(request.id, request.tenant_id))

    async def ListSchedules(
        self, request: scheduler_pb2.ListSchedulesRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.ListSchedulesResponse:
        page = request.page.page or 1
        page_size = min(request.page.page_size or self._default_page_size, MAX_PAGE_SIZE)
        schedules, total = await self._manager.list_schedules(
            request.tenant_id, workflow_id=request.workflow_id, page=page, page_size=page_size
        )
        return scheduler_pb2.ListSchedulesResponse(
            schedules=[to_proto(schedule) for schedule in schedules],
            page=common_pb2.PageInfo(page=page, page_size=page_size, total=total),
        )

    async def DeleteSchedule(
        self, request: scheduler_pb2.DeleteScheduleRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.DeleteScheduleResponse:
        await self._manager.delete(request.id, request.tenant_id)
        return scheduler_pb2.DeleteScheduleResponse()

    async def TriggerSchedule(
        self, request: scheduler_pb2.TriggerScheduleRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.TriggerScheduleResponse:
        dedupe_key = await self._manager.trigger_now(request.id, request.tenant_id)
        return scheduler_pb2.TriggerScheduleResponse(dedupe_key=dedupe_key)

    async def PreviewSchedule(
        self, request: scheduler_pb2.PreviewScheduleRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.PreviewScheduleResponse:
        fires = self._manager.preview(
            request.cron, request.timezone, request.count, field_datetime(request, "after")
        )
        return scheduler_pb2.PreviewScheduleResponse(
            fire_times=[stamp for fire in fires if (stamp := optional_timestamp(fire)) is not None]
        )
