"""Prometheus metrics shared across services, and the /metrics endpoint of gRPC services.
A service's own metrics live with it (services/<name>/metrics.py).

Names are the contract with deploy/grafana dashboards and deploy/prometheus alert rules: a
test checks that every metric a dashboard queries is defined in the code.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
