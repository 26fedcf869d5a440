"""A worker module for the process tests of test_worker.py (loaded by `heddle worker`)."""

from __future__ import annotations

import time
from pathlib import Path

from heddle_sdk import Context, NodeError, node_type


@node_type("acme.sleep", title="Sleep")
def sleep(ctx: Context, seconds: float = 1.0, starts_file: str = "") -> dict[str, float]:
    """Sleeps in a thread (a plain def), noting each start in starts_file."""
    if starts_file:
        with Path(starts_file).open("a") as starts:
            starts.write(f"start {ctx.attempt}\n")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ctx.cancelled:
            raise NodeError("cancelled")
        time.sleep(0.02)
    return {"slept": seconds}
