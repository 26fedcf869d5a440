from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.common.bus import EventBus, InProcessBus
from libs.common.db import session_factory
from libs.common.rabbitmq import RabbitBus
from services.log import models  # noqa: F401  (registers the table)
from tests.infra_fixtures import RABBIT_URL, deployment_prefix, isolated_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with isolated_database(request.param, tmp_path) as created:
        yield created


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture(params=["memory", "rabbitmq"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    # On RabbitMQ: exchanges and queues of this test's own (parallel workers share the broker).
    instance: EventBus = (
        InProcessBus()
        if request.param == "memory"
        else RabbitBus(RABBIT_URL, prefix=deployment_prefix())
    )
    await instance.connect()
    yield instance
    await instance.close()
