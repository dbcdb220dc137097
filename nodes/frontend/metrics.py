"""Prometheus metrics of the frontend."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)

REQUESTS = Counter("servegraph_requests", "client requests", ["model", "kind", "status"], registry=REGISTRY)
REQUEST_SECONDS = Histogram("servegraph_request_seconds", "client request latency", ["model", "kind"],
                            buckets=_LATENCY, registry=REGISTRY)
TTFT = Histogram("servegraph_time_to_first_token_seconds", "time to first streamed chunk", ["model"],
                 buckets=_LATENCY, registry=REGISTRY)
ITL = Histogram("servegraph_inter_token_latency_seconds", "gap between streamed chunks", ["model"],
                buckets=_ITL, registry=REGISTRY)
INFLIGHT = Gauge("servegraph_requests_in_flight", "client requests being served", registry=REGISTRY)
UPSTREAM = Counter("servegraph_upstream_requests", "calls to nodes of the graph", ["stage", "node", "service", "status"],
                   registry=REGISTRY)
UPSTREAM_SECONDS = Histogram("servegraph_upstream_seconds", "latency of calls to nodes", ["stage", "node"],
                             buckets=_LATENCY, registry=REGISTRY)
STREAM_ERRORS = Counter("servegraph_stream_errors", "streams that failed after they started", ["model", "node"],
                        registry=REGISTRY)
FALLBACKS = Counter("servegraph_disagg_skipped", "P/D requests served by decode alone", ["node", "reason"],
                    registry=REGISTRY)
MIGRATIONS = Counter("servegraph_stream_migrations", "streams moved to another replica mid-way", ["model", "node"],
                     registry=REGISTRY)
RETRIES = Counter("servegraph_request_retries", "requests run again after a server-side failure of a stage",
                  ["model", "node", "reason"], registry=REGISTRY)
