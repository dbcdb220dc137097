"""Raw ASGI pieces for our hot-path servers (mock engine, frontend): nothing between
uvicorn and the handler but these few functions."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import orjson

from .openai_errors import RequestError

Scope = dict[str, Any]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

JSON = [(b"content-type", b"application/json")]
SSE_START = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                         (b"x-accel-buffering", b"no")]}
MAX_BODY = 64 << 20


async def read_body(receive: Receive, max_bytes: int = MAX_BODY) -> bytes:
    """The whole request body.

    Raises:
        RequestError: 413 when it is larger than ``max_bytes``.
    """
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts, size = [body], len(body)
    while msg.get("more_body"):
        msg = await receive()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, f"request body larger than {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def read_json(receive: Receive) -> Any:
    """The request body parsed; a 400 naming the problem when it is empty or not JSON."""
    body = await read_body(receive)
    if not body:
        raise RequestError(400, "the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"the request body is not valid JSON: {exc}") from None


async def send_raw(send: Send, status: int, body: bytes, headers: list) -> None:
    """A complete response."""
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, obj: Any, headers: list | None = None) -> None:
    await send_raw(send, status, orjson.dumps(obj), JSON + (headers or []))


async def send_error(send: Send, exc: RequestError, headers: list | None = None) -> None:
    """OpenAI's error body with the error's status (and ``headers``, e.g. a 405's Allow)."""
    await send_json(send, exc.status, exc.body(), headers)


async def cancel_on_disconnect(receive: Receive, task: "asyncio.Task[Any] | None") -> None:
    """Cancel ``task`` when the client goes away (run beside a long response; cancel it after)."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            if task is not None:
                task.cancel()
            return


async def run_lifespan(receive: Receive, send: Send, startup: Callable[[], Awaitable[None]],
                       shutdown: Callable[[], Awaitable[None]]) -> None:
    """Answer the ASGI lifespan protocol with these two hooks."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await startup()
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
