"""The frontend's HTTP API: OpenAI routes, health, metrics.

A plain Starlette app (FastAPI's core, without its per-request validation layer
and ~0.5 s of import): bodies are parsed once with orjson and upstream bytes are
passed through without re-encoding.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import orjson
from starlette.applications import Starlette
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.routing import Route as HttpRoute
from starlette.responses import Response, StreamingResponse

from compiler.ir import FrontendConfig

from ..common.openai_errors import RequestError
from . import metrics
from .pipeline import Route
from .protocols import Outcome
from .relay import relay
from .requests import ClientRequest, Kind, parse
from .upstream import UpstreamError, UpstreamPool

log = logging.getLogger("servegraph.frontend")


def create_app(config: FrontendConfig) -> Starlette:
    """The frontend app for one graph."""
    pool = UpstreamPool()
    routes = {r.model: Route(r, pool, config.request_timeout_s, config.stage_timeout_s, config.migration_limit)
              for r in config.routes}
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await pool.start()
        yield
        await pool.close()


    async def handle(request: Request, kind: Kind) -> Response:
        start = time.perf_counter()
        model = "?"
        metrics.INFLIGHT.inc()
        try:
            req = parse(await request.body(), kind, request.url.path)
            model = req.model
            route = routes.get(req.model)
            if route is None:
                known = ", ".join(sorted(routes))
                raise RequestError(404, f"The model `{req.model}` does not exist. Served: {known}", "model", "model_not_found")
            outcome = await route.execute(req)
            response = _respond(req, route, outcome, model, start)
            status = response.status_code
        except RequestError as exc:
            response, status = exc.response(), exc.status
        except UpstreamError as exc:
            response = _upstream_error(exc)
            status = response.status_code
        finally:
            metrics.INFLIGHT.dec()
        metrics.REQUESTS.labels(model, kind, str(status)).inc()
        if not isinstance(response, StreamingResponse):
            metrics.REQUEST_SECONDS.labels(model, kind).observe(time.perf_counter() - start)
        return response

    async def chat(request: Request) -> Response:
        return await handle(request, "chat")

    async def completions(request: Request) -> Response:
        return await handle(request, "completions")

    async def models(_: Request) -> Response:
        data = [{"id": m, "object": "model", "created": created, "owned_by": "servegraph"} for m in sorted(routes)]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    async def health(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Starlette(lifespan=lifespan, routes=[
        HttpRoute("/v1/chat/completions", chat, methods=["POST"]),
        HttpRoute("/v1/completions", completions, methods=["POST"]),
        HttpRoute("/v1/models", models, methods=["GET"]),
        HttpRoute("/health", health, methods=["GET"]),
        HttpRoute("/metrics", prometheus, methods=["GET"]),
    ])


def _upstream_error(exc: UpstreamError) -> Response:
    """An engine's 4xx passes through as it is (it is about the request); anything else is a 502."""
    if exc.status is not None and 400 <= exc.status < 500:
        try:
            body = orjson.loads(exc.body)
            if isinstance(body, dict) and "error" in body:
                return Response(exc.body, status_code=exc.status, media_type="application/json")
        except orjson.JSONDecodeError:
            pass
        return RequestError(exc.status, f"{exc.service}: {exc.body[:500].decode(errors='replace')}").response()
    if exc.status == 503:
        return RequestError(503, f"{exc.service} is not ready: {exc}").response()
    return RequestError(502, f"upstream {exc}").response()


def _respond(req: ClientRequest, route: Route, outcome: Outcome, model: str, start: float) -> Response:
    if outcome.reply is not None:
        reply = outcome.reply
        if reply.status != 200:
            raise UpstreamError(outcome.service, f"HTTP {reply.status}", reply.status, reply.body)
        return Response(reply.body, media_type="application/json")
    stream = _timed(relay(req, outcome, route.resume, model, start, route.idle_timeout_s, route.migration_limit),
                    model, start)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _timed(events: AsyncIterator[bytes], model: str, start: float) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield event
    finally:
        metrics.REQUEST_SECONDS.labels(model, "stream").observe(time.perf_counter() - start)
