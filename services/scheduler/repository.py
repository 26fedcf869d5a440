"""Queries on `schedules`; every function takes an AsyncSession and the caller owns the
transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler.models import Schedule


async def add_schedule(session: AsyncSession, schedule: Schedule) -> Schedule:
    session.add(schedule)
    await session.flush()
    return schedule


async def get_schedule(
    session: AsyncSession, schedule_id: str, tenant_id: str, *, for_update: bool = False
) -> Schedule | None:
    query = select(Schedule).where(Schedule.id == schedule_id, Schedule.tenant_id == tenant_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def list_schedules(
    session: AsyncSession,
    tenant_id: str,
    *,
    workflow_id: str = "",
    offset: int = 0,
    limit: int = 50,
) -> tuple[Sequence[Schedule], int]:
    """A page of schedules, newest first, and the total count."""
    conditions = [Schedule.tenant_id == tenant_id]
    if workflow_id:
        conditions.append(Schedule.workflow_id == workflow_id)
    total = (
        await session.execute(select(func.count()).select_from(Schedule).where(*conditions))
    ).scalar_one()
    rows = (
        await session.execute(
            select(Schedule)
            .where(*conditions)
            .order_by(Schedule.created_at.desc(), Schedule.id)
            .offset(offset)
            .limit(limit)
        )
    ).scalars()
    return list(rows), int(total)


async def delete_schedule(session: AsyncSession, schedule_id: str, tenant_id: str) -> bool:
    result = await session.execute(
        delete(Schedule).where(Schedule.id == schedule_id, Schedule.tenant_id == tenant_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def due_schedules(session: AsyncSession, now: dt.datetime, limit: int) -> Sequence[Schedule]:
    """Enabled schedules whose next fire is due, oldest first, locked for this transaction
    (SKIP LOCKED on PostgreSQL, so a concurrent update of one never stalls the tick)."""
    query = (
        select(Schedule)
        .where(
            Schedule.enabled.is_(True),
            Schedule.next_fire_at.is_not(None),
            Schedule.next_fire_at <= now,
            or_(Schedule.start_at.is_(None), Schedule.start_at <= now),
        )
        .order_by(Schedule.next_fire_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(query)).scalars())


async def advance_schedule(
    session: AsyncSession,
    schedule_id: str,
    *,
    expected_next_fire_at: dt.datetime | None,
    next_fire_at: dt.datetime | None,
    last_fire_at: dt.datetime | None,
    now: dt.datetime,
) -> bool:
    """Move a schedule past its fires, unless someone changed its next fire meanwhile."""
    values: dict[str, object] = {"next_fire_at": next_fire_at, "updated_at": now}
    if last_fire_at is not None:
        values["last_fire_at"] = last_fire_at
    result = await session.execute(
        update(Schedule)
        .where(Schedule.id == schedule_id, Schedule.next_fire_at == expected_next_fire_at)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
