"""Execution and node statuses (the contract's vocabulary)."""

from __future__ import annotations

EXECUTION_STATUSES = ("pending", "running", "paused", "succeeded", "failed", "cancelled")
FINAL_EXECUTION_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE_EXECUTION_STATUSES = frozenset({"pending", "running", "paused"})

NODE_STATUSES = (
    "pending",
    "queued",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "skipped",
    "cached",
    "cancelled",
    "waiting",
)
TERMINAL_NODE_STATUSES = frozenset({"succeeded", "failed", "skipped", "cached", "cancelled"})
