"""The gateway's database is migrated on first use in a task of its own: a caller that gives
up (a /readyz check's one-second deadline under load) does not cut the migration short."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from libs.common.db import create_engine
from libs.migrations import alembic_config
from services.gateway.auth import GatewayDatabase
from services.gateway.models import AuditRow
from tests.helpers import assert_eventually


async def test_a_callers_deadline_does_not_cut_the_migration_short(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    db = GatewayDatabase(url)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):  # a fresh schema takes ~0.2 s on a quiet machine
                await db.sessions()

        async def at_head() -> bool:  # nobody asks again: the migration goes on by itself
            check = create_engine(url)
            try:
                async with check.connect() as connection:
                    query = text("SELECT version_num FROM alembic_version")
                    found = await connection.execute(query)
                    return found.scalar() == head
            except OperationalError:  # not made yet, or locked by the migration
                return False
            finally:
                await check.dispose()

        await assert_eventually(
            at_head, timeout=60, interval=0.1, message="the migration stopped with its caller"
        )
        async with db.session() as session:
            assert list(await session.scalars(select(AuditRow))) == []
    finally:
        await db.close()
