"""The HTTP API of a node of your own (a raw ASGI app, as the frontend's: the frontend calls it on every
request, so it must add well under a millisecond).

* ``POST /v1/request`` (request nodes): ``{"kind", "body"}`` -> ``{"body"}``; a refusal is a 400
  ``{"error": {"code": "refused", "message"}}``; an exception in the node's code is a 500 naming the node
  (the process stays up).
* ``POST /v1/response`` (response nodes, a whole answer): ``{"kind", "request", "text"}`` ->
  ``{"text", "cut"}``.
* ``/v1/response/stream`` (response nodes, a websocket): the first message is ``{"kind", "request"}``,
  then ``{"piece": text}`` per piece of the answer and ``{"end": true}``; the node sends
  ``{"piece": text}`` as its code yields and ``{"end": true, "cut": bool}`` last (``cut``: it stopped the
  answer before the end).
* ``GET /health``, ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from graph.custom import Refusal, Request, RequestNode, ResponseNode, UserNode

from ..common.asgi import JSON, Receive, Scope, Send, read_json, run_lifespan, send_error, send_json, send_raw
from ..common.openai_errors import RequestError
from .metrics import CALLS, REGISTRY, SECONDS

log = logging.getLogger("servegraph.node")


class NodeApp:
    """ASGI callable serving one node of your own."""

    def __init__(self, node: UserNode, name: str) -> None:
        self.node = node
        self.name = name
        self.timeout_s = node.timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._stream(receive, send)
        elif scope["type"] == "lifespan":
            await run_lifespan(receive, send, _nothing, _nothing)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if method == "POST" and path == "/v1/request" and isinstance(self.node, RequestNode):
            await self._timed("request", self._request(receive, send))
        elif method == "POST" and path == "/v1/response" and isinstance(self.node, ResponseNode):
            await self._timed("response", self._response(receive, send))
        elif method in ("GET", "HEAD") and path == "/health":
            await send_raw(send, 200, b'{"status":"ok"}', JSON)
        elif method in ("GET", "HEAD") and path == "/metrics":
            await send_raw(send, 200, generate_latest(REGISTRY), [(b"content-type", CONTENT_TYPE_LATEST.encode())])
        else:
            await send_error(send, RequestError(404, f"no route {method} {path} on node '{self.name}'"))

    async def _timed(self, kind: str, work: Any) -> None:
        start = time.perf_counter()
        outcome = await work
        CALLS.labels(kind, outcome).inc()
        SECONDS.labels(kind).observe(time.perf_counter() - start)

    async def _request(self, receive: Receive, send: Send) -> str:
        assert isinstance(self.node, RequestNode)
        try:
            call = await read_json(receive)
            request = Request(call["body"], call.get("kind", "chat"))
        except (RequestError, KeyError, TypeError):
            await send_error(send, RequestError(400, "POST /v1/request takes {\"kind\", \"body\"}"))
            return "bad_call"
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await self.node.handle(request)
        except Refusal as exc:
            await send_json(send, 400, {"error": {"message": str(exc) or "refused", "code": "refused",
                                                  "type": "invalid_request_error", "param": None}})
            return "refused"
        except Exception as exc:  # noqa: BLE001 - the user's code: answer, log, stay up
            await self._failed(send, exc)
            return "error"
        if not isinstance(result, Request) or not isinstance(result.body, dict):
            await self._failed(send, TypeError(f"handle() returned {type(result).__name__}, not a Request"))
            return "error"
        await send_raw(send, 200, orjson.dumps({"body": result.body}), JSON)
        return "ok"

    async def _response(self, receive: Receive, send: Send) -> str:
        try:
            call = await read_json(receive)
            request = Request(call["request"], call.get("kind", "chat"))
            text = str(call["text"])
        except (RequestError, KeyError, TypeError):
            await send_error(send, RequestError(400, "POST /v1/response takes {\"kind\", \"request\", \"text\"}"))
            return "bad_call"
        pieces: list[str] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                cut = await self._transform(request, _one(text), pieces.append)
        except Exception as exc:  # noqa: BLE001 - the user's code
            await self._failed(send, exc)
            return "error"
        await send_raw(send, 200, orjson.dumps({"text": "".join(pieces), "cut": cut}), JSON)
        return "ok"

    async def _stream(self, receive: Receive, send: Send) -> None:
        """The websocket of one streamed answer: pieces in, pieces out, as they come."""
        msg = await receive()
        if msg["type"] != "websocket.connect" or not isinstance(self.node, ResponseNode):
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        start = time.perf_counter()
        first = orjson.loads(await _text(receive) or b"{}")
        request = Request(first.get("request") or {}, first.get("kind", "chat"))
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        reader = asyncio.get_running_loop().create_task(_feed(receive, pieces))

        async def out(piece: str) -> None:
            await send({"type": "websocket.send", "text": orjson.dumps({"piece": piece}).decode()})

        outcome = "ok"
        try:
            cut = await self._transform(request, _drain(pieces), out)
            await send({"type": "websocket.send", "text": orjson.dumps({"end": True, "cut": cut}).decode()})
        except Exception as exc:  # noqa: BLE001 - the user's code
            outcome = "error"
            log.exception("node '%s' failed on a streamed answer", self.name)
            message = f"node '{self.name}' failed: {type(exc).__name__}: {exc}"
            await send({"type": "websocket.send", "text": orjson.dumps({"error": message}).decode()})
        finally:
            reader.cancel()
            await send({"type": "websocket.close", "code": 1000})
        CALLS.labels("stream", outcome).inc()
        SECONDS.labels("stream").observe(time.perf_counter() - start)

    async def _transform(self, request: Request, pieces: AsyncIterator[str], emit: Any) -> bool:
        """Run the node's transform over ``pieces``, handing each piece it yields to ``emit``; True when it
        stopped before its input ended (it cut the answer)."""
        assert isinstance(self.node, ResponseNode)
        source = _Tracked(pieces)
        async for piece in self.node.transform(request, source):
            if not isinstance(piece, str):
                raise TypeError(f"transform() yielded {type(piece).__name__}, not str")
            result = emit(piece)
            if asyncio.iscoroutine(result):
                await result
        return not source.ended

    async def _failed(self, send: Send, exc: Exception) -> None:
        log.error("node '%s' failed: %s: %s", self.name, type(exc).__name__, exc, exc_info=exc)
        await send_json(send, 500, {"error": {"message": f"node '{self.name}' failed: {type(exc).__name__}: {exc}",
                                              "type": "node_error", "code": "node_error", "param": None}})


class _Tracked:
    """An async iterator that remembers whether it was read to the end."""

    def __init__(self, inner: AsyncIterator[str]) -> None:
        self._inner = inner
        self.ended = False

    def __aiter__(self) -> "_Tracked":
        return self

    async def __anext__(self) -> str:
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            self.ended = True
            raise


async def _one(text: str) -> AsyncIterator[str]:
    yield text


async def _drain(queue: "asyncio.Queue[str | None]") -> AsyncIterator[str]:
    while True:
        piece = await queue.get()
        if piece is None:
            return
        yield piece


async def _feed(receive: Receive, queue: "asyncio.Queue[str | None]") -> None:
    """Websocket messages -> pieces; ``{"end": true}`` or a disconnect ends them."""
    while True:
        raw = await _text(receive)
        if raw is None:
            await queue.put(None)
            return
        msg = orjson.loads(raw)
        if msg.get("end"):
            await queue.put(None)
            return
        await queue.put(str(msg.get("piece", "")))


async def _text(receive: Receive) -> bytes | str | None:
    msg = await receive()
    if msg["type"] == "websocket.disconnect":
        return None
    return msg.get("text") or msg.get("bytes") or b"{}"


async def _nothing() -> None:
    return None
