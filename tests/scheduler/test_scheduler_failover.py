"""Two schedulers share Redis: one leads; kill it and the standby goes on, no fire lost or
repeated."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.bus import EventBus
from libs.common.db import utcnow
from libs.common.kv import KV, RedisKV
from services.scheduler.leader import LeaderElector
from services.scheduler.models import Schedule
from services.scheduler.ticker import Ticker
from tests.helpers import assert_eventually
from tests.infra_fixtures import REDIS_URL
from tests.scheduler.support import FireRecorder

pytestmark = pytest.mark.integration

# A stall of the event loop longer than the lease minus a renewal period lets the standby take
# over legitimately before the kill: 0.6 s did that at load ~20 (a 0.4 s stall).
LEASE_S = 1.5
TICK_S = 0.1


@pytest.fixture
async def redis() -> AsyncIterator[KV]:
    kv = RedisKV(REDIS_URL)
    yield kv
    await kv.close()


class Instance:
    """One scheduler process, as far as leadership and ticking go."""

    def __init__(
        self,
        kv: KV,
        lease: str,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        owner: str,
    ) -> None:
        # release_on_stop=False: a killed process does not hand its lease back.
        self.elector = LeaderElector(
            kv, name=lease, owner=owner, ttl_s=LEASE_S, release_on_stop=False
        )
        self.ticker = Ticker(sessions, bus, is_leader=lambda: self.elector.is_leader, tick_s=TICK_S)
        self.tasks = [
            asyncio.create_task(self.elector.run()),
            asyncio.create_task(self.ticker.run()),
        ]

    async def kill(self) -> None:
        for task in self.tasks:
            task.cancel()
        # Bounded: a loop that outlives its cancel fails here, naming itself, rather than
        # holding the test to its 120 s timeout (the ticker only finishes its tick).
        _, running = await asyncio.wait(self.tasks, timeout=10)
        assert not running, f"still running after cancel: {running}"


@pytest.mark.parametrize(
    ("engine", "bus"), [("sqlite", "memory"), ("postgresql", "rabbitmq")], indirect=True
)
async def test_standby_takes_over_without_duplicate_or_missed_fires(
    sessions: async_sessionmaker[AsyncSession],
    bus: EventBus,
    recorder: FireRecorder,
    redis: KV,
) -> None:
    lease = f"test:scheduler-leader:{uuid.uuid4().hex}"
    now = utcnow()
    schedule = Schedule(
        id=str(uuid.uuid4()),
        workflow_id="wf",
        cron="* * * * * *",  # every second
        next_fire_at=now.replace(microsecond=0) + dt.timedelta(seconds=1),
        created_at=now,
        updated_at=now,
    )
    async with sessions() as session, session.begin():
        session.add(schedule)

    first = Instance(redis, lease, sessions, bus, "first")
    await assert_eventually(lambda: first.elector.is_leader)
    second = Instance(redis, lease, sessions, bus, "second")
    try:
        await assert_eventually(lambda: len(recorder.of(schedule.id)) >= 2)
        assert not second.elector.is_leader
        await first.kill()
        killed_at = len(recorder.of(schedule.id))

        await assert_eventually(lambda: second.elector.is_leader, timeout=LEASE_S * 5)
        await assert_eventually(lambda: len(recorder.of(schedule.id)) >= killed_at + 2)
    finally:
        await first.kill()
        await second.kill()
        await redis.release_lease(lease, "second")

    keys = recorder.keys(schedule.id)
    assert len(keys) == len(set(keys)), "a fire was published twice"
    times = sorted(
        fire.scheduled_time.ToDatetime(tzinfo=dt.UTC) for fire in recorder.of(schedule.id)
    )
    gaps = {later - earlier for earlier, later in itertools.pairwise(times)}
    assert gaps == {dt.timedelta(seconds=1)}, "a fire was missed"
    assert times[0] == schedule.next_fire_at
