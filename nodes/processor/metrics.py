"""The processor's Prometheus metrics (one registry per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()
#: Media parts by kind (image, video, audio, embeds) and outcome (ok, refused).
PARTS = Counter("servegraph_processor_media_parts", "media content parts processed", ["kind", "outcome"],
                registry=REGISTRY)
#: Bytes of media received (downloaded or decoded from base64), by kind.
BYTES = Counter("servegraph_processor_media_bytes", "bytes of media received", ["kind"], registry=REGISTRY)
#: Time spent decoding and checking one part, by kind.
DECODE_SECONDS = Histogram("servegraph_processor_decode_seconds", "time to decode and check one media part", ["kind"],
                           buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
REQUESTS = Counter("servegraph_processor_requests", "requests processed, by HTTP status", ["status"], registry=REGISTRY)
SECONDS = Histogram("servegraph_processor_seconds", "time to process one request", registry=REGISTRY)
