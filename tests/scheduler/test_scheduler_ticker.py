"""The ticker against real databases (SQLite, PostgreSQL) and real buses (in-process, RabbitMQ)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.bus import EventBus, InProcessBus
from services.scheduler.models import Schedule
from services.scheduler.ticker import Ticker
from tests.helpers import assert_eventually
from tests.scheduler.support import FireRecorder

pytestmark = pytest.mark.integration

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


async def add_schedule(sessions: async_sessionmaker[AsyncSession], **overrides: object) -> Schedule:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "workflow_id": "wf-1",
        "cron": "* * * * *",
        "timezone": "UTC",
        "inputs": {"n": 1},
        "next_fire_at": T0,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(overrides)
    schedule = Schedule(**values)
    async with sessions() as session, session.begin():
        session.add(schedule)
    return schedule


async def reload(sessions: async_sessionmaker[AsyncSession], schedule_id: str) -> Schedule:
    async with sessions() as session:
        row = await session.get(Schedule, schedule_id)
        assert row is not None
        return row


def make_ticker(
    sessions: async_sessionmaker[AsyncSession], bus: EventBus, clock: Clock, **kwargs: object
) -> Ticker:
    return Ticker(sessions, bus, is_leader=lambda: True, clock=clock, **kwargs)  # type: ignore[arg-type]


async def test_due_schedule_publishes_one_fire_and_advances(
    sessions: async_sessionmaker[AsyncSession], bus: EventBus, recorder: FireRecorder
) -> None:
    schedule = await add_schedule(sessions)
    clock = Clock(T0 + dt.timedelta(seconds=2))
    ticker = make_ticker(sessions, bus, clock)

    assert await ticker.tick() >= 1
    await assert_eventually(lambda: len(recorder.of(schedule.id)) == 1)
    fire = recorder.of(schedule.id)[0]
    assert fire.dedupe_key == f"{schedule.id}:2024-01-01T12:00:00+00:00"
    assert fire.workflow_id == "wf-1"
    assert fire.source == "schedule"
    assert fire.tenant_id == "default"
    assert jsonutil.loads(fire.inputs_json) == {"n": 1}
    assert fire.scheduled_time.ToDatetime(tzinfo=UTC) == T0

    row = await reload(sessions, schedule.id)
    assert row.last_fire_at == T0
    assert row.next_fire_at == T0 + dt.timedelta(minutes=1)

    await ticker.tick()  # nothing new is due
    clock.now = T0 + dt.timedelta(minutes=1, seconds=1)
    await ticker.tick()
    await assert_eventually(lambda: len(recorder.of(schedule.id)) == 2)
    assert recorder.keys(schedule.id)[1] == f"{schedule.id}:2024-01-01T12:01:00+00:00"


async def test_disabled_not_started_and_ended_schedules_do_not_fire(
    sessions: async_sessionmaker[AsyncSession], bus: EventBus, recorder: FireRecorder
) -> None:
    disabled = await add_schedule(sessions, enabled=False)
    later = await add_schedule(sessions, start_at=T0 + dt.timedelta(days=1))
    ended = await add_schedule(sessions, next_fire_at=None)
    due = await add_schedule(sessions)
    ticker = make_ticker(sessions, bus, Clock(T0 + dt.timedelta(seconds=1)))

    await ticker.tick()
    await assert_eventually(lambda: len(recorder.of(due.id)) == 1)
    for quiet in (disabled, later, ended):
        assert recorder.of(quiet.id) == []


async def test_misfire_policy_applies_after_downtime(
    sessions: async_sessionmaker[AsyncSession], bus: EventBus, recorder: FireRecorder
) -> None:
    run_all = await add_schedule(sessions, cron="0 * * * *", misfire_policy="run_all")
    skip = await add_schedule(sessions, cron="0 * * * *", misfire_policy="skip")
    ticker = make_ticker(sessions, bus, Clock(T0 + dt.timedelta(hours=3, minutes=5)), grace_s=60)

    await ticker.tick()
    await assert_eventually(lambda: len(recorder.of(run_all.id)) == 4)
    assert recorder.of(skip.id) == []
    assert (await reload(sessions, skip.id)).next_fire_at == T0 + dt.timedelta(hours=4)
    assert (await reload(sessions, run_all.id)).last_fire_at == T0 + dt.timedelta(hours=3)


async def test_a_failed_publish_does_not_advance_the_schedule(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    class BrokenBus(InProcessBus):
        async def publish(self, *args: object, **kwargs: object) -> None:
            raise ConnectionError("broker down")

    schedule = await add_schedule(sessions)
    ticker = make_ticker(sessions, BrokenBus(), Clock(T0 + dt.timedelta(seconds=1)))

    assert await ticker.tick() == 0
    row = await reload(sessions, schedule.id)
    assert row.next_fire_at == T0 and row.last_fire_at is None


async def test_not_leader_publishes_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    bus = InProcessBus()
    schedule = await add_schedule(sessions)
    ticker = Ticker(sessions, bus, is_leader=lambda: False, clock=Clock(T0))
    assert await ticker.tick() == 0
    assert (await reload(sessions, schedule.id)).next_fire_at == T0
