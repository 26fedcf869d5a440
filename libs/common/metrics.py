"""Prometheus metrics shared across services, and the /metrics endpoint of gRPC services.

Names are the contract with deploy/grafana dashboards and deploy/prometheus alert rules: a
test checks that every metric a dashboard queries is defined in the code.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EXECUTIONS = Counter(
    "heddle_executions_total", "Executions that reached a final status.", ["status"]
)
EXECUTIONS_STARTED = Counter("heddle_executions_started_total", "Executions started.", ["trigger"])
EXECUTIONS_RUNNING = Gauge(
    "heddle_executions_running", "Executions this workflow replica is driving now."
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
BUS_CONSUMED = Counter(
    "heddle_bus_messages_consumed_total",
    "Broker messages handled, by queue and outcome.",
    ["queue", "outcome"],
)
BUS_QUEUE_DEPTH = Gauge("heddle_bus_queue_depth", "Messages waiting in a broker queue.", ["queue"])
PERIODIC_ITERATIONS = Counter(
    "heddle_periodic_iterations_total", "Runs of a periodic background loop.", ["loop"]
)
PERIODIC_FAILURES = Counter(
    "heddle_periodic_failures_total", "Runs of a periodic background loop that raised.", ["loop"]
)
PERIODIC_DURATION = Histogram(
    "heddle_periodic_duration_seconds",
    "Duration of one run of a periodic background loop.",
    ["loop"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)


def serve_metrics(port: int | None, host: str = "0.0.0.0") -> None:
    """Expose /metrics on port (no-op when None): every gRPC service calls this in main()."""
    if port is not None:
        start_http_server(port, addr=host)
