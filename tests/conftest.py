"""Fixtures shared by every suite: databases (SQLite and the real PostgreSQL) and the
embedded stack (every service in this process, on ephemeral ports)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from libs.cli.stack import Stack, start_stack

POSTGRES_ADMIN_DSN = os.environ.get(
    "HEDDLE_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_url(name: str) -> str:
    host_part = POSTGRES_ADMIN_DSN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{host_part}/{name}"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    name = f"heddle_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _pg_url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'heddle.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test using it runs twice: on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'heddle.db'}"
        return
    name = f"heddle_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _pg_url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def stack(sqlite_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """The embedded stack on SQLite; a test may pass settings with
    `@pytest.mark.parametrize("stack_settings", [{...}])`-style indirect params."""
    overrides = {"database_url": sqlite_url, "http_allow_hosts": ["127.0.0.1"]}
    overrides.update(getattr(request, "param", None) or {})
    running = await start_stack(overrides, ephemeral_ports=True)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the stack's gateway, authenticated as an admin of the default
    tenant (tests/security covers the other principals)."""
    headers = {"Authorization": f"Bearer {stack.admin_key}"} if stack.admin_key else {}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=headers) as http:
        yield http
