"""Real-infrastructure helpers: URLs of this machine's servers, isolated databases, cleanup."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from libs.common.db import create_engine, create_schema

RABBIT_URL = os.environ.get("HEDDLE_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("HEDDLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "HEDDLE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


async def delete_rabbit_queues(*names: str) -> None:
    """Delete queues (and their dead-letter queues) a test declared."""
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        for name in names:
            for queue in (name, f"{name}.dlq"):
                channel = await connection.channel()
                await channel.queue_delete(queue)
                await channel.close()


async def delete_rabbit_exchanges(*names: str) -> None:
    """Delete exchanges a test declared."""
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.exchange_delete(name)


@asynccontextmanager
async def isolated_database(kind: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh SQLite file, or on a PostgreSQL schema of its own (dropped after).

    Every imported model's table is created.
    """
    if kind == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        await create_schema(engine)
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_URL)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_async_engine(
        POSTGRES_URL,
        connect_args={"server_settings": {"search_path": schema}},
        pool_size=5,
    )
    try:
        await create_schema(engine)
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()
