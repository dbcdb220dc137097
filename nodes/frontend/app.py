"""The frontend's HTTP API: OpenAI routes, health, metrics, its OpenAPI document.

The generate routes are a raw ASGI path, as the mock engine is: bodies are parsed
once with orjson and checked by pydantic's validator, upstream bytes pass through
without re-encoding, and a client that goes away cancels its request (and so closes
the engine's stream). Every other path is handed to a FastAPI app (:mod:`.docs`):
/v1/models, /health, /metrics, /openapi.json and /docs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NamedTuple

import orjson

from graph.plan import FrontendConfig

from ..common.asgi import (
    JSON, SSE_START, Receive, Scope, Send, cancel_on_disconnect, read_body, run_lifespan, send_error, send_raw,
)
from ..common.http_cycle import DirectBody
from ..common.openai_errors import RequestError
from . import metrics
from .docs import admin_app
from .limits import ContextLengths
from .pipeline import Route
from .protocols import Outcome
from .relay import EventQueue, relay
from .requests import ClientRequest, Kind, parse
from .upstream import UpstreamError, UpstreamPool
from .user_nodes import UserNodes

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
        finals = {m: r.stages.get("decode") or r.stages.get("aggregate") for m, r in self.models.items()}
        self.lengths = ContextLengths({m: s.config.upstreams for m, s in finals.items() if s is not None}, self.pool)
        self.admin = admin_app(list(self.models), self.created, self.lengths)
        self._admin_get = frozenset({"/v1/models", "/health", "/metrics", "/openapi.json", "/docs"})
        self.routes = [HttpRoute(p, frozenset({"POST"})) for p in _GENERATE] + \
                      [HttpRoute(p, frozenset({"GET", "HEAD"})) for p in sorted(self._admin_get)]
        self._learning: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await run_lifespan(receive, send, self._start, self._stop)

    async def _start(self) -> None:
        await self.pool.start()
        self._learning = asyncio.get_running_loop().create_task(self.lengths.run())

    async def _stop(self) -> None:
        if self._learning is not None:
            self._learning.cancel()
        await self.pool.close()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        kind = _GENERATE.get(path)
        if kind is not None:
            if method == "POST":
                await self._generate(kind, path, scope, receive, send)
            else:
                await send_error(send, RequestError(405, f"{method} {path} is not supported; use POST"),
                                 [(b"allow", b"POST")])
            return
        if method == "HEAD" and path in self._admin_get:
            scope = {**scope, "method": "GET"}  # the server still sends no body: it answers the HEAD it read
        await self.admin(scope, receive, send)

    async def _generate(self, kind: Kind, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        model, status, timed_as = "?", 500, kind  # a stream's seconds run to its last event: timed apart
        metrics.INFLIGHT.inc()
        try:
            req = parse(await read_body(receive), kind, path, self.lengths.known)
            model = req.model
            route = self.models.get(model)
            if route is None:
                known = ", ".join(sorted(self.models))
                raise RequestError(404, f"The model `{model}` does not exist. Served: {known}", "model", "model_not_found")
            outcome = await route.execute(req)
            if outcome.stream is not None:
                status, timed_as = 200, "stream"
                await self._stream(req, route, outcome, model, start, scope, receive, send)
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
            await send_raw(send, status, body, JSON + exc.headers)
        finally:
            metrics.INFLIGHT.dec()
        metrics.REQUESTS.labels(model, kind, str(status)).inc()
        metrics.REQUEST_SECONDS.labels(model, timed_as).observe(time.perf_counter() - start)

    async def _stream(self, req: ClientRequest, route: Route, outcome: Outcome, model: str, start: float,
                      scope: Scope, receive: Receive, send: Send) -> None:
        body: DirectBody = scope["extensions"]["servegraph.body"]
        args = (outcome.request or req, outcome, route.resume, model, start, route.idle_timeout_s, route.migration_limit)
        watch = asyncio.get_running_loop().create_task(cancel_on_disconnect(receive, asyncio.current_task()))
        try:
            await send(SSE_START)
            if not route.nodes.response:
                await relay(*args, body)
            else:
                await self._through_nodes(route.nodes, args, send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            log.info("client went away during a %s stream", model)  # relay closed the engine's stream
        finally:
            watch.cancel()

    @staticmethod
    async def _through_nodes(nodes: UserNodes, args: tuple, send: Send) -> None:
        """The relayed events go on through the route's response nodes before they reach the client."""
        queue = EventQueue()

        async def fill() -> None:
            try:
                await relay(*args, queue)
            finally:
                queue.end()

        filling = asyncio.get_running_loop().create_task(fill())
        out = nodes.streamed(args[0], queue.events())
        try:
            async for chunk in out:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            filling.cancel()
            await out.aclose()


def create_app(config: FrontendConfig) -> FrontendApp:
    """The frontend app for one graph."""
    return FrontendApp(config)


def _engine_message(body: bytes) -> str:
    """``: <the engine's error message>`` when its body carries one."""
    try:
        message = orjson.loads(body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ""
    return f": {message}" if isinstance(message, str) and message else ""


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
        error = RequestError(502, f"upstream {exc}{_engine_message(exc.body)}")
    return error.status, orjson.dumps(error.body())
