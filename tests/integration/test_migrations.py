"""The Alembic history builds exactly the schema the models describe, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import services.gateway.models
import services.log.models
import services.scheduler.models
import services.tool.knowledge.models
import services.workflow.models
import services.workflow.worker_models  # noqa: F401
from libs.common.db import Base, create_engine
from libs.migrations import upgrade


def _diff(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_match_models_and_are_idempotent(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        await upgrade(engine)  # a second replica starting finds nothing to do
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert {"workflows", "executions", "node_runs", "execution_events"} <= tables
            assert {"schedules", "log_records", "alembic_version"} <= tables
            assert await connection.run_sync(_diff) == []
    finally:
        await engine.dispose()
