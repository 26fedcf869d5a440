"""The leader's loop: publish due fires, then advance the schedules.

A fire is published (and confirmed by the broker) before the schedule's next fire time is
moved past it, in the transaction that locked the schedule: a crash between the two
republishes the fire, which the dedupe key makes harmless; no crash loses one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.bus import EventBus
from libs.common.db import utcnow
from libs.common.periodic import run_periodic
from services.scheduler import repository
from services.scheduler.cron import plan_fires
from services.scheduler.models import Schedule
from services.scheduler.schedules import fire_message, publish_fire, scheduled_dedupe_key

log = logging.getLogger(__name__)

FIRES_PUBLISHED = Counter(
    "heddle_scheduler_fires_published_total", "Schedule fires published to the broker."
)
FIRES_MISSED = Counter(
    "heddle_scheduler_fires_missed_total", "Missed schedule fires the misfire policy dropped."
)


class Ticker:
    """Every tick_s, while `is_leader()`, fire what is due."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        *,
        is_leader: Callable[[], bool],
        tick_s: float = 1.0,
        grace_s: float = 60.0,
        batch_size: int = 200,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self._is_leader = is_leader
        self.tick_s = tick_s
        self._grace_s = grace_s
        self._batch_size = batch_size
        self._clock = clock

    async def run(self) -> None:
        """Tick until cancelled; a cancelled ticker first finishes the tick in progress."""
        await run_periodic(
            "scheduler-ticker", lambda: self.tick_s, self._tick_as_leader, immediately=True
        )

    async def _tick_as_leader(self) -> None:
        if not self._is_leader():
            return
        tick = asyncio.ensure_future(self.tick())
        try:
            await asyncio.shield(tick)
        except asyncio.CancelledError:
            await asyncio.gather(tick, return_exceptions=True)
            raise

    async def tick(self) -> int:
        """Publish every due fire once; the number of fires published."""
        now = self._clock()
        published = 0
        async with self._sessions() as session, session.begin():
            due = await repository.due_schedules(session, now, self._batch_size)
            if not due or not self._is_leader():
                return 0
            plans = [(schedule, self._plan(schedule, now)) for schedule in due]
            results = await asyncio.gather(
                *(self._publish(schedule, fires) for schedule, (fires, _) in plans),
                return_exceptions=True,
            )
            for (schedule, (fires, next_fire_at)), result in zip(plans, results, strict=True):
                if isinstance(result, BaseException):
                    # Not advanced: the next tick publishes these fires again.
                    log.error(
                        "publishing fires failed",
                        exc_info=result,
                        extra={"schedule_id": schedule.id},
                    )
                    continue
                published += len(fires)
                await repository.advance_schedule(
                    session,
                    schedule.id,
                    expected_next_fire_at=schedule.next_fire_at,
                    next_fire_at=next_fire_at,
                    last_fire_at=fires[-1] if fires else None,
                    now=now,
                )
        FIRES_PUBLISHED.inc(published)
        return published

    def _plan(
        self, schedule: Schedule, now: dt.datetime
    ) -> tuple[list[dt.datetime], dt.datetime | None]:
        try:
            plan = plan_fires(
                schedule.cron,
                schedule.timezone,
                schedule.next_fire_at,
                now,
                policy=schedule.misfire_policy,
                misfire_limit=schedule.misfire_limit,
                grace_s=self._grace_s,
                end_at=schedule.end_at,
            )
        except Exception:
            # Validated on write, so only a hand-edited row gets here: stop it, loudly.
            log.exception(
                "schedule cannot be planned; ending it", extra={"schedule_id": schedule.id}
            )
            return [], None
        if plan.missed:
            FIRES_MISSED.inc(plan.missed)
            log.warning(
                "missed fires dropped by the misfire policy",
                extra={"schedule_id": schedule.id, "policy": schedule.misfire_policy},
            )
        return plan.fires, plan.next_fire_at

    async def _publish(self, schedule: Schedule, fires: list[dt.datetime]) -> None:
        for scheduled_time in fires:
            fire = fire_message(
                schedule,
                scheduled_time,
                source="schedule",
                dedupe_key=scheduled_dedupe_key(schedule.id, scheduled_time),
            )
            await publish_fire(self._bus, fire)
