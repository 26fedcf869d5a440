"""Autogenerate the next migration from the models: `python scripts/new_migration.py "message"`.

The revision is the next four-digit number; the file is tidied and formatted.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from alembic import command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from libs.common.db import create_engine  # noqa: E402
from libs.migrations import alembic_config, upgrade  # noqa: E402

VERSIONS = ROOT / "libs" / "migrations" / "versions"


def _next_id() -> str:
    numbers = [int(p.name[:4]) for p in VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py")]
    return f"{max(numbers, default=0) + 1:04d}"


def _revision(connection: Any, message: str, rev_id: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.revision(config, message=message, autogenerate=True, rev_id=rev_id)


def _tidy(rev_id: str) -> Path:
    # Autogenerate writes JSONB(astext_type=Text()) without importing Text, plus banners.
    (path,) = VERSIONS.glob(f"{rev_id}_*.py")
    lines = path.read_text().replace("astext_type=Text()", "astext_type=sa.Text()").splitlines()
    path.write_text("\n".join(line for line in lines if "# ###" not in line) + "\n")
    return path


async def generate(message: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp}/schema.db")
        await upgrade(engine)
        rev_id = _next_id()
        async with engine.connect() as connection:
            await connection.run_sync(_revision, message, rev_id)
        await engine.dispose()
    return rev_id


def main(message: str) -> None:
    path = _tidy(asyncio.run(generate(message)))
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(path)], check=False)
    subprocess.run([sys.executable, "-m", "ruff", "check", "-q", "--fix", str(path)], check=False)
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "schema change")
