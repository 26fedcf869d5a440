"""Log queries (filters, keyset pagination) and retention on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.errors import InvalidArgument
from services.log import repository, retention
from services.log.models import LEVELS, LogRecordRow
from services.log.repository import LogQuery

pytestmark = pytest.mark.integration

T0 = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)


def row(i: int, **overrides: Any) -> dict[str, Any]:
    level = ["debug", "info", "warning", "error"][i % 4]
    values: dict[str, Any] = {
        "tenant_id": "default",
        "execution_id": "exec-1",
        "node_id": f"node-{i % 2}",
        "attempt": 1,
        "level": level,
        "level_no": LEVELS[level],
        "message": f"Step {i} done",
        "ts": T0 + dt.timedelta(seconds=i // 2),  # pairs share a timestamp
        "trace_id": "",
        "logger": "test",
        "service": "node",
        "fields": {"i": i},
    }
    values.update(overrides)
    return values


async def seed(sessions: async_sessionmaker[AsyncSession], rows: list[dict[str, Any]]) -> None:
    async with sessions() as session, session.begin():
        await repository.insert_records(session, rows)


async def query(sessions: async_sessionmaker[AsyncSession], **kwargs: Any) -> list[LogRecordRow]:
    async with sessions() as session:
        rows, _ = await repository.query_records(session, LogQuery(tenant_id="default", **kwargs))
    return list(rows)


async def test_filters(sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessions, [row(i) for i in range(20)])
    await seed(sessions, [row(0, execution_id="exec-2", message="other 100% done")])

    assert len(await query(sessions, execution_id="exec-1")) == 20
    assert {r.node_id for r in await query(sessions, execution_id="exec-1", node_id="node-1")} == {
        "node-1"
    }
    errors = await query(sessions, execution_id="exec-1", min_level_no=LEVELS["warning"])
    assert {r.level for r in errors} == {"warning", "error"} and len(errors) == 10
    window = await query(
        sessions,
        execution_id="exec-1",
        since=T0 + dt.timedelta(seconds=2),
        until=T0 + dt.timedelta(seconds=4),
    )
    assert [r.fields["i"] for r in window] == [4, 5, 6, 7]
    assert [r.fields["i"] for r in await query(sessions, text="step 1")] == [
        1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19
    ]  # fmt: skip
    # % and _ are literal characters, not wildcards.
    assert [r.execution_id for r in await query(sessions, text="100%")] == ["exec-2"]
    assert await query(sessions, text="Step_") == []
    assert await query(sessions, execution_id="exec-1", node_id="none") == []


async def test_keyset_pagination_walks_every_record_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed(sessions, [row(i) for i in range(25)])
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        async with sessions() as session:
            rows, token = await repository.query_records(
                session,
                LogQuery(
                    tenant_id="default", execution_id="exec-1", page_size=10, page_token=token
                ),
            )
        seen.extend(r.fields["i"] for r in rows)
        pages += 1
        if not token:
            break
    assert pages == 3
    assert seen == list(range(25))


async def test_a_forged_page_token_is_invalid_argument(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(InvalidArgument):
        await query(sessions, page_token="not-a-token")


async def test_retention_deletes_old_records_in_batches(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    old = [row(i, ts=T0 - dt.timedelta(days=40, seconds=i)) for i in range(7)]
    await seed(sessions, old + [row(i) for i in range(3)])

    deleted = await retention.sweep(sessions, dt.timedelta(days=30), batch_rows=3, now=T0)

    assert deleted == 7
    async with sessions() as session:
        left = (await session.execute(select(func.count()).select_from(LogRecordRow))).scalar()
    assert left == 3
