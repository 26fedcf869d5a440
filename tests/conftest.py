"""Fixtures shared by every suite: databases (SQLite and the real PostgreSQL) and the
embedded stack (every service in this process, on ephemeral ports)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

# Parallel workers (pytest-xdist: `make test` runs `-n 3`): each worker's tests use a Redis
# database of their own (keys such as rate limits and leases are not named per test). Set
# before tests/infra_fixtures.py and tests/e2e/conftest.py read it.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _XDIST_WORKER.startswith("gw") and "HEDDLE_TEST_REDIS_URL" not in os.environ:
    # Databases 4-15 (tests/integration/test_cache_tiers.py names database 3).
    _index = 4 + int(_XDIST_WORKER[2:]) % 12
    os.environ["HEDDLE_TEST_REDIS_URL"] = f"redis://127.0.0.1:6379/{_index}"

from libs.cli.stack import Stack, start_stack  # noqa: E402
from tests.infra_fixtures import delete_deployments  # noqa: E402

POSTGRES_ADMIN_DSN = os.environ.get(
    "HEDDLE_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_url(name: str) -> str:
    host_part = POSTGRES_ADMIN_DSN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{host_part}/{name}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The exchanges and queues of the topologies this session started go with it."""
    asyncio.run(delete_deployments())


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


# ---- integration / e2e markers -------------------------------------------------------------
# Tests under tests/integration and tests/e2e, tests that take a real PostgreSQL database
# (pg_url), and the real-infrastructure cases of the fixtures parametrized over memory and
# the real thing (database_url "postgres", bus "rabbitmq", kv "redis", ...) are marked here,
# so `-m "not integration"` runs what needs no infrastructure. Any other test that opens a
# connection to the shared PostgreSQL, Redis, RabbitMQ or MariaDB ports without one of the
# markers fails, naming them.
_INFRA_PORTS = {5432: "PostgreSQL", 6379: "Redis", 5672: "RabbitMQ", 3306: "MariaDB"}
_INFRA_MARKERS = ("integration", "e2e")
# The parameters of the fixtures that run a test against memory and the real thing.
_REAL_PARAMS = {"postgres", "postgresql", "rabbitmq", "redis", "mariadb", "mysql"}
_unmarked_connections: list[str] | None = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
        elif "integration" in parts:
            item.add_marker(pytest.mark.integration)
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        fixtures = getattr(item, "fixturenames", ())
        real = any(isinstance(value, str) and value in _REAL_PARAMS for value in params.values())
        if "pg_url" in fixtures or real:
            item.add_marker(pytest.mark.integration)


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event != "socket.connect" or _unmarked_connections is None:
        return
    address = args[1]
    if isinstance(address, tuple) and len(address) >= 2 and address[1] in _INFRA_PORTS:
        _unmarked_connections.append(f"{_INFRA_PORTS[address[1]]} at {address[0]}:{address[1]}")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _infra_needs_a_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    global _unmarked_connections
    marked = any(request.node.get_closest_marker(name) for name in _INFRA_MARKERS)
    _unmarked_connections = None if marked else []
    try:
        yield
    finally:
        seen, _unmarked_connections = _unmarked_connections, None
    if seen:
        pytest.fail(
            "this test connects to real infrastructure "
            f"({', '.join(sorted(set(seen)))}) but is not marked integration or e2e"
        )
