"""Prometheus metrics of a node of your own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()
CALLS = Counter("servegraph_node_calls", "calls of the node's code", ["kind", "outcome"], registry=REGISTRY)
SECONDS = Histogram("servegraph_node_seconds", "time in the node per call", ["kind"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5), registry=REGISTRY)
