"""How to type the `heddle` command here, for the hints the CLI and `heddle serve` print."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def cli_command() -> str:
    """`heddle` when it is on PATH, else its path (`.venv/bin/heddle` after `make run`),
    relative to the working directory when it is under it."""
    script = Path(sys.executable).parent / "heddle"
    on_path = shutil.which("heddle")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "heddle"
    if not script.exists():
        return f"{sys.executable} -m libs.cli.main"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
