"""The frontend's HTTP API: OpenAI routes, health, metrics.

A raw ASGI app, as the mock engine is: routes are found in a dict, bodies are
parsed once with orjson, upstream bytes pass through without re-encoding, and a
client that goes away cancels its request (and so closes the engine's stream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NamedTuple

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from compiler.ir import FrontendConfig

from ..common.asgi import (
    JSON, SSE_START, Receive, Scope, Send, cancel_on_disconnect, read_body, run_lifespan, send_error, send_raw,
)
from ..common.openai_errors import RequestError
from . import metrics
from .pipeline import Route
from .protocols import Outcome
from .relay import relay
from .requests import ClientRequest, Kind, parse
from .upstream import UpstreamError, UpstreamPool

log = logging.getLogger("servegraph.frontend")

_GENERATE: dict[str, Kind] = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}


class HttpRoute(NamedTuple):
    """A path the app serves and its methods (for tools that check probe paths)."""

    path: str
    methods: frozenset[str]


class FrontendApp:
    """ASGI callable serving one graph's models."""

    def __init__(self, config: FrontendConfig) -> None:
        self.pool = UpstreamPool()
        self.models = {r.model: Route(r, self.pool, config.request_timeout_s, config.stage_timeout_s,
                                      config.migration_limit) for r in config.routes}
        self.created = int(time.time())
        self._get = {"/v1/models": self._list_models, "/health": self._health, "/metrics": self._metrics}
        self.routes = [HttpRoute(p, frozenset({"POST"})) for p in _GENERATE] + \
                      [HttpRoute(p, frozenset({"GET", "HEAD"})) for p in self._get]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await run_lifespan(receive, send, self.pool.start, self.pool.close)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        kind = _GENERATE.get(path)
        if kind is not None and method == "POST":
            await self._generate(kind, path, receive, send)
            return
        answer = self._get.get(path)
        if answer is not None and method in ("GET", "HEAD"):
            await send_raw(send, 200, *answer())
            return
        known = kind is not None or answer is not None
        await send_error(send, RequestError(405 if known else 404,
                                            f"{method} {path} is not supported" if known else f"no route {path}"))

    async def _generate(self, kind: Kind, path: str, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        model, status, timed_as = "?", 500, kind  # a stream's seconds run to its last event: timed apart
        metrics.INFLIGHT.inc()
        try:
            req = parse(await read_body(receive), kind, path)
            model = req.model
            route = self.models.get(model)
            if route is None:
                known = ", ".join(sorted(self.models))
                raise RequestError(404, f"The model `{model}` does not exist. Served: {known}", "model", "model_not_found")
            outcome = await route.execute(req)
            if outcome.stream is not None:
                status, timed_as = 200, "stream"
                await self._stream(req, route, outcome, model, start, receive, send)
            else:
                reply = outcome.reply
                assert reply is not None
                if reply.status != 200:
                    raise UpstreamError(outcome.service, f"HTTP {reply.status}", reply.status, reply.body)
                status = 200
                await send_raw(send, 200, reply.body, JSON)
        except RequestError as exc:
            status = exc.status
            await send_error(send, exc)
        except UpstreamError as exc:
            status, body = _upstream_error(exc)
            await send_raw(send, status, body, JSON)
        finally:
            metrics.INFLIGHT.dec()
        metrics.REQUESTS.labels(model, kind, str(status)).inc()
        metrics.REQUEST_SECONDS.labels(model, timed_as).observe(time.perf_counter() - start)

    async def _stream(self, req: ClientRequest, route: Route, outcome: Outcome, model: str, start: float,
                      receive: Receive, send: Send) -> None:
        events = relay(req, outcome, route.resume, model, start, route.idle_timeout_s, route.migration_limit)
        watch = asyncio.get_running_loop().create_task(cancel_on_disconnect(receive, asyncio.current_task()))
        try:
            await send(SSE_START)
            async for chunk in events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            log.info("client went away during a %s stream", model)  # the engine's stream is closed below
        finally:
            watch.cancel()
            await events.aclose()

    def _list_models(self) -> tuple[bytes, list]:
        data = [{"id": m, "object": "model", "created": self.created, "owned_by": "servegraph"}
                for m in sorted(self.models)]
        return orjson.dumps({"object": "list", "data": data}), JSON

    def _health(self) -> tuple[bytes, list]:
        return b'{"status":"ok"}', JSON

    def _metrics(self) -> tuple[bytes, list]:
        return generate_latest(metrics.REGISTRY), [(b"content-type", CONTENT_TYPE_LATEST.encode())]


def create_app(config: FrontendConfig) -> FrontendApp:
    """The frontend app for one graph."""
    return FrontendApp(config)


def _upstream_error(exc: UpstreamError) -> tuple[int, bytes]:
    """An engine's 4xx passes through as it is (it is about the request); anything else is a 502."""
    if exc.status is not None and 400 <= exc.status < 500:
        try:
            body = orjson.loads(exc.body)
            if isinstance(body, dict) and "error" in body:
                return exc.status, exc.body
        except orjson.JSONDecodeError:
            pass
        error = RequestError(exc.status, f"{exc.service}: {exc.body[:500].decode(errors='replace')}")
    elif exc.status == 503:
        error = RequestError(503, f"{exc.service} is not ready: {exc}")
    else:
        error = RequestError(502, f"upstream {exc}")
    return error.status, orjson.dumps(error.body())
