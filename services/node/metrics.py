"""Metrics of the node service (libs/common/metrics.py keeps what services share)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

NODES_IN_FLIGHT = Gauge("heddle_nodes_in_flight", "Node attempts running on this node replica.")
AGENT_STEPS = Counter(
    "heddle_agent_steps", "Journaled agent steps, by type (model_call, tool_call, ...).", ["type"]
)
AGENT_TOKENS = Counter("heddle_agent_tokens", "Model tokens used by agent runs.")
AGENT_TENANT_TOKENS = Gauge(
    "heddle_agent_tenant_tokens_today",
    "Model tokens a tenant's agent runs used this UTC day (the shared counter as this replica "
    "last read it). One series per tenant: fine for tens of tenants, not for thousands.",
    ["tenant"],
)
AGENT_BUDGET_EXCEEDED = Counter(
    "heddle_agent_budget_exceeded",
    "Agent runs stopped by a budget, by budget (tokens, steps, tenant_tokens).",
    ["budget"],
)
