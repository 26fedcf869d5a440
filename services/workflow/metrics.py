"""Metrics of the workflow service (libs/common/metrics.py keeps what services share).

Names are the contract with deploy/grafana dashboards and deploy/prometheus alert rules.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EXECUTIONS = Counter(
    "heddle_executions_total", "Executions that reached a final status.", ["status"]
)
EXECUTIONS_STARTED = Counter("heddle_executions_started_total", "Executions started.", ["trigger"])
EXECUTIONS_RUNNING = Gauge(
    "heddle_executions_running", "Executions this workflow replica is driving now."
)
EXECUTIONS_LOADED = Gauge(
    "heddle_executions_loaded",
    "Executions this workflow replica holds in memory (a runner each); a parked one is not.",
)
EXECUTIONS_PARKED = Gauge(
    "heddle_executions_parked",
    "Executions this workflow replica owns that only wait and are unloaded "
    "(services/workflow/parking.py).",
)
NODE_DURATION = Histogram(
    "heddle_node_duration_seconds",
    "Duration of node attempts, by node type and outcome.",
    ["node_type", "outcome"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
NODE_RETRIES = Counter(
    "heddle_node_retries_total", "Node attempts that were retried.", ["node_type"]
)
NODES_FINISHED = Counter(
    "heddle_nodes_total", "Nodes that reached a terminal status.", ["node_type", "status"]
)
DISPATCH_LATENCY = Histogram(
    "heddle_dispatch_latency_seconds",
    "From a node becoming ready to its attempt starting on a node replica.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
DISPATCH_IN_FLIGHT = Gauge(
    "heddle_dispatch_in_flight", "Node attempts this workflow replica has dispatched and awaits."
)
OUTBOX_BACKLOG = Gauge("heddle_outbox_backlog", "Events written but not yet relayed to the broker.")
EVENTS_PUBLISHED = Counter("heddle_events_published_total", "Events relayed to the broker.")
