"""Alembic environment: runs on the connection handed over by `libs.migrations.upgrade`."""

from __future__ import annotations

from alembic import context

import libs.common.agents  # noqa: F401  (registers the agent tables)
import services.gateway.models
import services.log.models
import services.scheduler.models
import services.tool.knowledge.models
import services.workflow.models
import services.workflow.worker_models  # noqa: F401  (every model registers its tables)
from libs.common.db import Base

target_metadata = Base.metadata
connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through libs.migrations.upgrade (it passes a connection)")
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
