"""A stage of a route (processor, encoder, prefill, decode, worker): its replicas, its
routing policy, and the one way to call them — replica after replica until one answers,
with metrics and in-flight counts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, TypeVar

from graph.plan import StageConfig, Upstream

from .metrics import UPSTREAM, UPSTREAM_SECONDS
from .routing import Picker, make_picker
from .upstream import Reply, Streamed, Unavailable, UpstreamError, UpstreamPool

T = TypeVar("T", Reply, Streamed)


@dataclass
class StageRuntime:
    """A stage of a route with its routing policy."""

    config: StageConfig
    picker: Picker = field(init=False)

    def __post_init__(self) -> None:
        self.picker = make_picker(self.config)

    @property
    def name(self) -> str:
        return self.config.node

    async def post(self, pool: UpstreamPool, path: str, body: dict[str, Any], timeout_s: float,
                   prompt: str = "", upstream: Upstream | None = None) -> Reply:
        """POST ``body`` to a replica (``upstream`` if given); any status comes back as the reply,
        after the other replicas were tried on 5xx."""
        async def send(u: Upstream) -> Reply:
            self.picker.started(u)
            try:
                return await pool.post(u.service, u.url + path, body, timeout_s)
            finally:
                self.picker.finished(u)

        return await self.with_failover(send, prompt, upstream)

    async def with_failover(self, send: Callable[[Upstream], Awaitable[T]], prompt: str = "",
                            upstream: Upstream | None = None, retry_errors: bool = True) -> T:
        """Try replicas until one answers; unreachable ones (and, with ``retry_errors``, 5xx answers)
        move on to the next.

        Raises:
            Unavailable: every replica sits out after failing (a 503 with Retry-After).
            UpstreamError: no replica answered (the last error), or a 4xx raised by ``send``.
        """
        tried: set[str] = set()
        attempts = 1 if upstream else max(len(self.config.upstreams), 1)
        last: UpstreamError | None = None
        for _ in range(attempts):
            if upstream is None:
                wait = self.picker.retry_in(frozenset(tried))
                if wait is not None:  # every replica left sits out: fail now, not at a dead one's deadline
                    raise last or Unavailable(self.name, self.picker.down(), wait)
            target = upstream or self.picker.pick(frozenset(tried), prompt)
            tried.add(target.service)
            start = time.perf_counter()
            try:
                result = await send(target)
            except UpstreamError as exc:
                self._count(target, str(exc.status or "unreachable"))
                if exc.status is None:
                    self.picker.failed(target)
                if exc.status is None or exc.status >= 500:
                    last = exc
                    continue
                raise
            status = getattr(result, "status", 200)
            self._count(target, str(status))
            UPSTREAM_SECONDS.labels(self.config.stage, self.name).observe(time.perf_counter() - start)
            if status >= 500 and retry_errors and len(tried) < attempts:
                last = UpstreamError(target.service, f"HTTP {status}", status, getattr(result, "body", b""))
                continue
            self.picker.recovered(target)
            return result
        assert last is not None
        raise last

    def _count(self, target: Upstream, status: str) -> None:
        UPSTREAM.labels(self.config.stage, self.name, target.service, status).inc()
