"""The custom node type of bench/custom_types.py: a no-op served by an SDK worker."""

from __future__ import annotations

from typing import Any

from heddle_sdk import node_type


@node_type("bench.noop", title="No-op (worker)", category="testing", version="1")
async def noop() -> dict[str, Any]:
    """Do nothing: what remains is the cost of dispatching to a worker."""
    return {}
