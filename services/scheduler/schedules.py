"""Schedule management: validation, CRUD, "trigger now" and previews (no gRPC here)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from heddle.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.bus import TRIGGERS_EXCHANGE, EventBus, publishing
from libs.common.db import utcnow
from libs.common.errors import InvalidArgument, NotFound
from libs.common.timeutil import to_timestamp
from services.scheduler import repository
from services.scheduler.cron import (
    DEFAULT_MISFIRE_LIMIT,
    first_fire,
    next_fires,
    validate_cron,
    validate_misfire_policy,
    validate_timezone,
)
from services.scheduler.models import DEFAULT_TENANT, Schedule

TRIGGER_ROUTING_KEY = "trigger.schedule"
MAX_PREVIEW = 100


@dataclass
class ScheduleSpec:
    """What a client sets on a schedule."""

    workflow_id: str
    cron: str
    timezone: str = "UTC"
    inputs: Any = None
    enabled: bool = True
    misfire_policy: str = "skip"
    misfire_limit: int = DEFAULT_MISFIRE_LIMIT
    start_at: dt.datetime | None = None
    end_at: dt.datetime | None = None
    name: str = ""
    priority: int = 5


@dataclass
class _Problems:
    items: list[dict[str, str]] = field(default_factory=list)

    def check(self, path: str, action: Any) -> Any:
        try:
            return action()
        except InvalidArgument as error:
            self.items.extend(error.details or [{"path": path, "message": error.message}])
            return None

    def add(self, path: str, message: str) -> None:
        self.items.append({"path": path, "message": message})

    def raise_if_any(self) -> None:
        if self.items:
            summary = "; ".join(f"{item['path']}: {item['message']}" for item in self.items)
            raise InvalidArgument(f"invalid schedule: {summary}", details=self.items)


def validate_spec(spec: ScheduleSpec) -> ScheduleSpec:
    """A normalized copy of spec; InvalidArgument listing every bad field otherwise."""
    problems = _Problems()
    if not spec.workflow_id:
        problems.add("workflow_id", "is required")
    cron = problems.check("cron", lambda: validate_cron(spec.cron))
    problems.check("timezone", lambda: validate_timezone(spec.timezone))
    policy = problems.check("misfire_policy", lambda: validate_misfire_policy(spec.misfire_policy))
    if spec.misfire_limit < 0:
        problems.add("misfire_limit", "must not be negative")
    if spec.start_at is not None and spec.end_at is not None and spec.end_at <= spec.start_at:
        problems.add("end_at", "must be after start_at")
    if len(spec.name) > 200:
        problems.add("name", "is longer than 200 characters")
    if not 0 <= spec.priority <= 9:
        problems.add("priority", "must be 0-9")
    problems.raise_if_any()
    return ScheduleSpec(
        workflow_id=spec.workflow_id,
        cron=cron,
        timezone=spec.timezone or "UTC",
        inputs=spec.inputs,
        enabled=spec.enabled,
        misfire_policy=policy,
        misfire_limit=spec.misfire_limit or DEFAULT_MISFIRE_LIMIT,
        start_at=spec.start_at,
        end_at=spec.end_at,
        name=spec.name,
        priority=spec.priority,
    )


def _first_fire(spec: ScheduleSpec, now: dt.datetime) -> dt.datetime | None:
    return first_fire(spec.cron, spec.timezone, now, spec.start_at, spec.end_at)


def fire_message(
    schedule: Schedule, scheduled_time: dt.datetime, *, source: str, dedupe_key: str
) -> events_pb2.TriggerFire:
    """The TriggerFire body the workflow service turns into one execution per dedupe key."""
    fire = events_pb2.TriggerFire(
        dedupe_key=dedupe_key,
        workflow_id=schedule.workflow_id,
        schedule_id=schedule.id,
        inputs_json=jsonutil.dumps(schedule.inputs),
        source=source,
        tenant_id=schedule.tenant_id,
        priority=schedule.priority if schedule.priority is not None else 5,
    )
    fire.scheduled_time.CopyFrom(to_timestamp(scheduled_time))
    return fire


def scheduled_dedupe_key(schedule_id: str, scheduled_time: dt.datetime) -> str:
    """One execution per schedule and scheduled time, however often the fire is published."""
    return f"{schedule_id}:{scheduled_time.astimezone(dt.UTC).isoformat()}"


async def publish_fire(bus: EventBus, fire: events_pb2.TriggerFire) -> None:
    """Publish a fire in a PRODUCER span: the execution it starts continues that trace (a
    scheduled one's trace starts here; a "trigger now" one's at the request)."""
    with publishing(TRIGGERS_EXCHANGE, "scheduler") as trace_headers:
        await bus.publish(
            TRIGGERS_EXCHANGE,
            TRIGGER_ROUTING_KEY,
            fire.SerializeToString(),
            {"dedupe-key": fire.dedupe_key, "source": fire.source, **trace_headers},
        )


class ScheduleManager:
    """The operations behind the SchedulerService RPCs."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], bus: EventBus) -> None:
        self._sessions = sessions
        self._bus = bus

    async def create(self, spec: ScheduleSpec, tenant_id: str = "") -> Schedule:
        spec = validate_spec(spec)
        now = utcnow()
        schedule = Schedule(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id or DEFAULT_TENANT,
            created_at=now,
            updated_at=now,
        )
        _apply(schedule, spec, now)
        async with self._sessions() as session, session.begin():
            await repository.add_schedule(session, schedule)
        return schedule

    async def update(self, schedule_id: str, spec: ScheduleSpec, tenant_id: str = "") -> Schedule:
        spec = validate_spec(spec)
        now = utcnow()
        async with self._sessions() as session, session.begin():
            schedule = await repository.get_schedule(
                session, schedule_id, tenant_id or DEFAULT_TENANT, for_update=True
            )
            if schedule is None:
                raise NotFound(f"schedule {schedule_id} not found")
            _apply(schedule, spec, now)
            schedule.updated_at = now
        return schedule

    async def get(self, schedule_id: str, tenant_id: str = "") -> Schedule:
        async with self._sessions() as session:
            schedule = await repository.get_schedule(
                session, schedule_id, tenant_id or DEFAULT_TENANT
            )
        if schedule is None:
            raise NotFound(f"schedule {schedule_id} not found")
        return schedule

    async def list_schedules(
        self, tenant_id: str = "", *, workflow_id: str = "", page: int = 1, page_size: int = 50
    ) -> tuple[Sequence[Schedule], int]:
        if page < 1 or page_size < 1:
            raise InvalidArgument("page and page_size must be positive")
        async with self._sessions() as session:
            return await repository.list_schedules(
                session,
                tenant_id or DEFAULT_TENANT,
                workflow_id=workflow_id,
                offset=(page - 1) * page_size,
                limit=page_size,
            )

    async def delete(self, schedule_id: str, tenant_id: str = "") -> None:
        async with self._sessions() as session, session.begin():
            if not await repository.delete_schedule(
                session, schedule_id, tenant_id or DEFAULT_TENANT
            ):
                raise NotFound(f"schedule {schedule_id} not found")

    async def trigger_now(self, schedule_id: str, tenant_id: str = "") -> str:
        """Publish a manual fire (a fresh dedupe key: every call starts an execution)."""
        schedule = await self.get(schedule_id, tenant_id)
        dedupe_key = f"{schedule.id}:manual:{uuid.uuid4()}"
        fire = fire_message(schedule, utcnow(), source="manual", dedupe_key=dedupe_key)
        await publish_fire(self._bus, fire)
        return dedupe_key

    @staticmethod
    def preview(
        cron: str, timezone: str, count: int, after: dt.datetime | None = None
    ) -> list[dt.datetime]:
        problems = _Problems()
        normalized = problems.check("cron", lambda: validate_cron(cron))
        problems.check("timezone", lambda: validate_timezone(timezone))
        if count < 0 or count > MAX_PREVIEW:
            problems.add("count", f"must be between 1 and {MAX_PREVIEW}")
        problems.raise_if_any()
        return next_fires(normalized, timezone or "UTC", after or utcnow(), count or 5)


def _apply(schedule: Schedule, spec: ScheduleSpec, now: dt.datetime) -> None:
    timing_changed = (
        schedule.cron != spec.cron
        or schedule.timezone != spec.timezone
        or schedule.start_at != spec.start_at
        or schedule.end_at != spec.end_at
        or (spec.enabled and not schedule.enabled)
    )
    schedule.workflow_id = spec.workflow_id
    schedule.name = spec.name
    schedule.inputs = spec.inputs
    schedule.misfire_policy = spec.misfire_policy
    schedule.misfire_limit = spec.misfire_limit
    schedule.priority = spec.priority
    schedule.cron = spec.cron
    schedule.timezone = spec.timezone
    schedule.start_at = spec.start_at
    schedule.end_at = spec.end_at
    schedule.enabled = spec.enabled
    if timing_changed:
        # A new timing starts from now; re-enabling does not replay what fired while disabled.
        schedule.next_fire_at = _first_fire(spec, now)
