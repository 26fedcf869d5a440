"""Autogenerate a migration from the models: `python scripts/new_migration.py "message"`."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from alembic import command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from libs.common.db import create_engine  # noqa: E402
from libs.migrations import alembic_config, upgrade  # noqa: E402


def _revision(connection: Any, message: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.revision(config, message=message, autogenerate=True)


async def main(message: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp}/schema.db")
        await upgrade(engine)
        async with engine.connect() as connection:
            await connection.run_sync(_revision, message)
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "schema change"))
