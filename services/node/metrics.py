"""Metrics of the node service (libs/common/metrics.py keeps what services share)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

NODES_IN_FLIGHT = Gauge("heddle_nodes_in_flight", "Node attempts running on this node replica.")
AGENT_STEPS = Counter(
    "heddle_agent_steps", "Journaled agent steps, by type (model_call, tool_call, ...).", ["type"]
)
AGENT_TOKENS = Counter("heddle_agent_tokens", "Model tokens used by agent runs.")
AGENT_BUDGET_EXCEEDED = Counter(
    "heddle_agent_budget_exceeded",
    "Agent runs stopped by a budget, by budget (tokens, steps, tenant_tokens).",
    ["budget"],
)
