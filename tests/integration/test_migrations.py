"""The Alembic history builds exactly the schema the models describe, on both databases."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

import services.gateway.models
import services.log.models
import services.scheduler.models
import services.tool.knowledge.models
import services.workflow.models
import services.workflow.worker_models  # noqa: F401
from libs.common.db import Base, create_engine, create_schema
from libs.migrations import alembic_config, upgrade


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


async def test_forks_recorded_in_the_trigger_move_to_the_forked_from_columns(
    database_url: str,
) -> None:
    # Before 0020_cag a fork's origin was `fork:<22 base64url characters of its id>/<node>`.
    source = uuid.uuid4()
    packed = base64.urlsafe_b64encode(source.bytes).decode().rstrip("=")
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0019_b15d")
        async with engine.begin() as connection:
            for execution_id, trigger in (("fork-1", f"fork:{packed}/first"), ("api-1", "api")):
                await connection.execute(
                    text(
                        "INSERT INTO executions (id, tenant_id, workflow_id, workflow_version, "
                        'status, depth, "trigger", trace_id, trace_parent, created_at, '
                        "last_seq, crashes, priority) VALUES (:id, 't', 'w', 1, 'succeeded', 0, "
                        ":trigger, '', '', CURRENT_TIMESTAMP, 0, 0, 5)"
                    ),
                    {"id": execution_id, "trigger": trigger},
                )
        await upgrade(engine)
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text(
                        'SELECT id, "trigger", forked_from_execution_id, forked_from_node '
                        "FROM executions ORDER BY id"
                    )
                )
            ).all()
        assert [tuple(row) for row in rows] == [
            ("api-1", "api", None, None),
            ("fork-1", "fork", str(source), "first"),
        ]
    finally:
        await engine.dispose()


def _downgrade(connection: Any, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


async def test_unpublished_events_move_to_the_outbox_and_back(database_url: str) -> None:
    # Before 0024_p17 each event carried a published flag; after, the outbox names what the
    # broker has not confirmed.
    engine = create_engine(database_url)
    insert = text(
        "INSERT INTO execution_events (execution_id, seq, type, ts, trace_id, tenant_id,"
        " workflow_id, published) VALUES ('x', :seq, 'node.started', CURRENT_TIMESTAMP,"
        " '', 't', 'w', :published)"
    )
    try:
        await upgrade(engine, "0023_p15")
        async with engine.begin() as connection:
            for seq, published in ((1, True), (2, False), (3, True), (4, False)):
                await connection.execute(insert, {"seq": seq, "published": published})
        await upgrade(engine)
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT execution_id, low_seq, high_seq FROM event_outbox ORDER BY low_seq")
            )
            assert [tuple(row) for row in rows] == [("x", 2, 2), ("x", 4, 4)]
            await connection.execute(text("DELETE FROM event_outbox WHERE low_seq = 4"))
            await connection.run_sync(_downgrade, "0023_p15")
            await connection.commit()
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT seq, published FROM execution_events ORDER BY seq")
            )
            assert [(seq, bool(flag)) for seq, flag in rows] == [
                (1, True),
                (2, False),
                (3, True),
                (4, True),
            ]
    finally:
        await engine.dispose()


async def test_the_hot_path_tables_leave_room_for_hot_updates(pg_url: str) -> None:
    """executions and node_runs keep a fifth of each page free (0025), whether the schema
    comes from the migrations or from the models."""
    migrated, created = create_engine(pg_url), create_engine(pg_url)
    try:
        await upgrade(migrated)
        async with migrated.connect() as connection:
            await connection.execute(text("DROP TABLE node_runs"))
            await connection.commit()
        await create_schema(created)  # the models create the table dropped
        async with migrated.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT relname, reloptions FROM pg_class"
                    " WHERE relname IN ('executions', 'node_runs', 'execution_events')"
                )
            )
            assert dict(rows.all()) == {
                "executions": ["fillfactor=80"],
                "node_runs": ["fillfactor=80"],
                "execution_events": None,
            }
    finally:
        await migrated.dispose()
        await created.dispose()
