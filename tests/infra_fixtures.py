"""Real-infrastructure helpers: URLs of this machine's servers, isolated databases, cleanup."""

from __future__ import annotations

import os
import subprocess
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


# ---- a deployment of its own on the shared RabbitMQ and Redis ------------------------------
#: Broker prefixes handed out by deployment_env() in this session (removed at its end).
_PREFIXES: list[str] = []


def deployment_prefix() -> str:
    """A broker prefix of one test deployment (its exchanges and queues: `<prefix>.name`)."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    _PREFIXES.append(prefix)
    return prefix


def deployment_env() -> dict[str, str]:
    """HEDDLE_* settings that make a topology a deployment of its own on the shared RabbitMQ
    and Redis: its exchanges and queues carry a prefix of its own (two topologies running at
    once, in parallel test workers or beside another engineer's run, never consume each
    other's messages), and its scheduler campaigns for a leadership lease of its own."""
    prefix = deployment_prefix()
    return {
        "HEDDLE_BROKER_PREFIX": prefix,
        "HEDDLE_LEADER_LEASE_NAME": f"{prefix}:scheduler:leader",
    }


def _rabbit_names(kind: str) -> list[str]:
    done = subprocess.run(
        ["rabbitmqctl", "-q", f"list_{kind}", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.split() if done.returncode == 0 else []


async def delete_deployments() -> None:
    """Delete the exchanges and queues of every prefix deployment_env() gave out (durable:
    they would stay on the broker after the topology stopped)."""
    if not _PREFIXES or "127.0.0.1:5672" not in RABBIT_URL:
        return  # another broker: its own lifecycle
    starts = tuple(f"{prefix}." for prefix in _PREFIXES)
    queues = [name for name in _rabbit_names("queues") if name.startswith(starts)]
    exchanges = [name for name in _rabbit_names("exchanges") if name.startswith(starts)]
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)
    _PREFIXES.clear()
