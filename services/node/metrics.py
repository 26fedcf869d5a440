"""Metrics of the node service (libs/common/metrics.py keeps what services share)."""

from __future__ import annotations

from prometheus_client import Gauge

NODES_IN_FLIGHT = Gauge("heddle_nodes_in_flight", "Node attempts running on this node replica.")
