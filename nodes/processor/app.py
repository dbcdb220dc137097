"""HTTP: POST /v1/process (the request back with its media checked and inlined), /health, /metrics."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from graph.plan import ProcessorConfig
from nodes.common.openai_errors import RequestError

from .fetch import FetchLimits, make_session
from .media import MediaProcessor
from .metrics import REGISTRY, REQUESTS, SECONDS


def body_limit(config: ProcessorConfig) -> int:
    """Largest request body read: room for several parts of ``max_bytes`` each, base64-encoded."""
    return 8 * config.max_bytes + 2**20


def create_app(config: ProcessorConfig) -> Starlette:
    """The processor app (plain Starlette: three routes need no FastAPI, and it starts seconds faster)."""
    state: dict[str, MediaProcessor] = {}
    limit = body_limit(config)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        session = make_session(FetchLimits(config.max_bytes, config.fetch_timeout_s, config.allow_private_urls))
        state["media"] = MediaProcessor(config, session)
        yield
        await session.close()

    app = Starlette(lifespan=lifespan)

    async def process(request: Request) -> Response:
        start = time.perf_counter()
        try:
            body = orjson.loads(await _read(request, limit))
            if not isinstance(body, dict):
                raise RequestError(400, "request body must be a JSON object")
            await state["media"].process(body)
        except orjson.JSONDecodeError:
            return _refused(RequestError(400, "request body is not valid JSON"))
        except RequestError as exc:
            return _refused(exc)
        REQUESTS.labels("200").inc()
        SECONDS.observe(time.perf_counter() - start)
        return Response(orjson.dumps(body), media_type="application/json")

    async def health(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.router.add_route("/v1/process", process, methods=["POST"])
    app.router.add_route("/health", health, methods=["GET"])
    app.router.add_route("/metrics", prometheus, methods=["GET"])
    return app


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body is larger than the processor's limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"request body is larger than the processor's limit of {limit} bytes")
    return bytes(body)


def _refused(exc: RequestError) -> Response:
    REQUESTS.labels(str(exc.status)).inc()
    return exc.response()
