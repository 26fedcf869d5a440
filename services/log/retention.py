"""Deletes log records past the retention period, a bounded batch per transaction so the
sweep never holds long locks."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.db import utcnow
from services.log import repository

log = logging.getLogger(__name__)


async def sweep(
    sessions: async_sessionmaker[AsyncSession],
    retention: dt.timedelta,
    batch_rows: int,
    now: dt.datetime | None = None,
) -> int:
    """Delete every record older than now - retention; the number deleted."""
    cutoff = (now or utcnow()) - retention
    total = 0
    while True:
        async with sessions() as session, session.begin():
            deleted = await repository.delete_older_than(session, cutoff, batch_rows)
        total += deleted
        if deleted < batch_rows:
            break
    if total:
        log.info("retention sweep", extra={"deleted": total, "cutoff": cutoff.isoformat()})
    return total
