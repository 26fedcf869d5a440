"""Database migrations (Alembic) for every table of every service: one database, one history.

Services call `upgrade(engine)` at start-up; `heddle db upgrade` does the same from the shell.
On PostgreSQL an advisory lock serialises replicas that start together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

HERE = Path(__file__).resolve().parent
_LOCK_ID = 0x6865_6464  # "hedd": one advisory lock for schema changes


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(HERE / "versions"))
    return config


def _upgrade(connection: Any, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to revision (idempotent; safe when several services start at once)."""
    async with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            await connection.execute(text(f"SELECT pg_advisory_lock({_LOCK_ID})"))
        try:
            await connection.run_sync(_upgrade, revision)
            await connection.commit()
        finally:
            if postgres:
                await connection.execute(text(f"SELECT pg_advisory_unlock({_LOCK_ID})"))
                await connection.commit()
