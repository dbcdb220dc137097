"""Calling nodes of your own (graph.custom) at their places in a route.

Request nodes get the request before the model and return it (or refuse it: a 400
with the node's message). Response nodes rewrite the answer: a whole one in one
call, a stream over a websocket per stream, piece by piece, so a node can hold,
change or cut the text while the client still gets it as it comes. A node that
fails is a 502 naming it; a node that cannot be reached is tried on its other
replicas first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, AsyncIterator

import aiohttp
import orjson

from graph.plan import StageConfig, Upstream

from ..common.openai_errors import RequestError
from .relay import DONE
from .requests import ClientRequest
from .stage import StageRuntime
from .upstream import Reply, UpstreamError, UpstreamPool

log = logging.getLogger("servegraph.frontend")


class UserNodes:
    """The nodes of your own of one route."""

    def __init__(self, request_nodes: list[StageConfig], response_nodes: list[StageConfig],
                 pool: UpstreamPool) -> None:
        self.before = [StageRuntime(s) for s in request_nodes if not s.options.get("after_processor")]
        self.after = [StageRuntime(s) for s in request_nodes if s.options.get("after_processor")]
        self.response = [StageRuntime(s) for s in response_nodes]
        self.pool = pool

    async def requested(self, req: ClientRequest, stages: list[StageRuntime]) -> ClientRequest:
        """The request after each of ``stages``, in order.

        Raises:
            RequestError: 400 refused by a node (its message), 502 a node failed or is down.
        """
        for stage in stages:
            reply = await self._call(stage, "/v1/request", {"kind": req.kind, "body": req.body})
            if reply.status == 400 and _error(reply).get("code") == "refused":
                raise RequestError(400, str(_error(reply).get("message") or f"refused by {stage.name}"),
                                   code="refused")
            if reply.status != 200:
                raise _failed(stage, reply)
            req = ClientRequest(req.kind, req.path, reply.json()["body"])
        return req

    async def answered(self, req: ClientRequest, reply: Reply) -> Reply:
        """A whole answer rewritten by every response node, in order."""
        if not self.response or reply.status != 200:
            return reply
        answer = orjson.loads(reply.body)
        choice = (answer.get("choices") or [{}])[0]
        text = _text_of(req.kind, choice)
        for stage in self.response:
            got = await self._call(stage, "/v1/response", {"kind": req.kind, "request": req.body, "text": text})
            if got.status != 200:
                raise _failed(stage, got)
            result = got.json()
            text = str(result.get("text", ""))
            if result.get("cut"):
                choice["finish_reason"] = "content_filter"
        _set_text(req.kind, choice, text)
        return Reply(200, orjson.dumps(answer))

    def streamed(self, req: ClientRequest, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """A stream's events with the answer's text rewritten by every response node, piece by piece."""
        if not self.response:
            return events
        return _StreamRewrite(req, events, self.response, self.pool).run()

    async def _call(self, stage: StageRuntime, path: str, body: dict[str, Any]) -> Reply:
        """POST to a replica of ``stage``; unreachable replicas are skipped, any answer comes back."""
        timeout = float(stage.config.options.get("timeout_s", 10.0)) + 1.0

        async def send(u: Upstream) -> Reply:
            return await self.pool.post(u.service, u.url + path, body, timeout)

        try:
            return await stage.with_failover(send, upstream=None, retry_errors=False)
        except UpstreamError as exc:
            raise RequestError(502, f"node '{stage.name}' could not be reached: {exc}") from None


def _error(reply: Reply) -> dict[str, Any]:
    error = reply.json().get("error")
    return error if isinstance(error, dict) else {}


def _failed(stage: StageRuntime, reply: Reply) -> RequestError:
    message = _error(reply).get("message") or f"HTTP {reply.status}"
    return RequestError(502, f"node '{stage.name}' failed: {message}" if stage.name not in str(message)
                        else str(message), code="node_error")


def _text_of(kind: str, choice: dict[str, Any]) -> str:
    if kind == "chat":
        return str((choice.get("message") or {}).get("content") or "")
    return str(choice.get("text") or "")


def _set_text(kind: str, choice: dict[str, Any], text: str) -> None:
    if kind == "chat":
        choice.setdefault("message", {})["content"] = text
    else:
        choice["text"] = text


class _StreamRewrite:
    """One stream through the response nodes: engine pieces in, rewritten pieces out, in SSE events."""

    def __init__(self, req: ClientRequest, events: AsyncIterator[bytes], stages: list[StageRuntime],
                 pool: UpstreamPool) -> None:
        self.req = req
        self.events = events
        self.stages = stages
        self.pool = pool
        self.template: dict[str, Any] | None = None
        self.trailing: list[bytes] = []  # finish, usage and error events after the text began: sent after it

    async def run(self) -> AsyncIterator[bytes]:
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        head: deque[bytes] = deque()  # events before any text (the role chunk, an error): passed on at once
        reader = asyncio.get_running_loop().create_task(self._read(pieces, head))
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        try:
            text: AsyncIterator[str] = _queued(pieces)
            cut = [False] * len(self.stages)
            for i, stage in enumerate(self.stages):
                ws = await self._open(stage)
                sockets.append(ws)
                text = _through(ws, stage, self.req, text, cut, i)
            while head:
                yield head.popleft()
            async for piece in text:
                while head:
                    yield head.popleft()
                yield self._event(piece)
            if any(cut):
                reader.cancel()
                yield self._event("", "content_filter")
            else:
                await reader
                while head:  # what came after the last piece of text, or with none (an engine's error)
                    yield head.popleft()
                for event in self.trailing:
                    yield event
            yield DONE
        except RequestError as exc:
            yield exc.sse()
        finally:
            reader.cancel()
            for ws in sockets:
                await ws.close()
            close = getattr(self.events, "aclose", None)
            if close is not None:
                await close()

    async def _open(self, stage: StageRuntime) -> aiohttp.ClientWebSocketResponse:
        """A websocket to a replica of ``stage``; unreachable replicas are skipped, as in :meth:`UserNodes._call`."""

        async def connect(u: Upstream) -> aiohttp.ClientWebSocketResponse:
            try:
                ws = await self.pool.session.ws_connect(u.url.replace("http", "ws", 1) + "/v1/response/stream",
                                                        timeout=aiohttp.ClientWSTimeout(ws_close=5))
                await ws.send_bytes(orjson.dumps({"kind": self.req.kind, "request": self.req.body}))
                return ws
            except aiohttp.ClientError as exc:
                raise UpstreamError(u.service, f"unreachable ({exc})") from None

        try:
            return await stage.with_failover(connect, retry_errors=False)  # type: ignore[type-var]
        except UpstreamError as exc:
            raise RequestError(502, f"node '{stage.name}' could not be reached: {exc}") from None

    async def _read(self, pieces: "asyncio.Queue[str | None]", head: deque[bytes]) -> None:
        """Engine events -> text pieces (to the nodes), the events before the text (passed on at once)
        and the events after it (held until the nodes are done)."""
        try:
            async for chunk in self.events:
                for block in chunk.split(b"\n\n"):
                    if not block.startswith(b"data: {"):
                        continue  # [DONE] and keep-alives: the rewrite sends its own [DONE]
                    event = orjson.loads(block[6:])
                    choices = event.get("choices") or []
                    piece = _text_of_delta(self.req.kind, choices[0]) if choices else ""
                    if piece:
                        if self.template is None:
                            self.template = event
                        await pieces.put(piece)
                        if choices[0].get("finish_reason"):
                            _set_delta(self.req.kind, choices[0], "")
                            self.trailing.append(b"data: " + orjson.dumps(event) + b"\n\n")
                    elif self.template is None and ("error" in event or choices and not choices[0].get("finish_reason")):
                        head.append(block + b"\n\n")  # before any text (the role chunk, an error): passed on at once
                    else:  # after the text began (an error too: it must not overtake the text still in the nodes)
                        self.trailing.append(block + b"\n\n")
        finally:
            await pieces.put(None)

    def _event(self, piece: str, finish_reason: str | None = None) -> bytes:
        event = dict(self.template or {"object": "chat.completion.chunk" if self.req.kind == "chat"
                                       else "text_completion", "choices": [{"index": 0}]})
        choice = dict((event.get("choices") or [{"index": 0}])[0])
        _set_delta(self.req.kind, choice, piece)
        choice["finish_reason"] = finish_reason
        event["choices"] = [choice]
        event.pop("usage", None)
        return b"data: " + orjson.dumps(event) + b"\n\n"


def _text_of_delta(kind: str, choice: dict[str, Any]) -> str:
    if kind == "chat":
        return str((choice.get("delta") or {}).get("content") or "")
    return str(choice.get("text") or "")


def _set_delta(kind: str, choice: dict[str, Any], text: str) -> None:
    if kind == "chat":
        choice["delta"] = {"content": text}
    else:
        choice["text"] = text


async def _queued(queue: "asyncio.Queue[str | None]") -> AsyncIterator[str]:
    while True:
        piece = await queue.get()
        if piece is None:
            return
        yield piece


async def _through(ws: aiohttp.ClientWebSocketResponse, stage: StageRuntime, req: ClientRequest,
                   text: AsyncIterator[str], cut: list[bool], index: int) -> AsyncIterator[str]:
    """``text`` sent through one node's websocket; what it sends back, as it comes."""

    async def pump() -> None:
        async for piece in text:
            await ws.send_bytes(orjson.dumps({"piece": piece}))
        await ws.send_bytes(b'{"end":true}')

    sender = asyncio.get_running_loop().create_task(pump())
    timeout = float(stage.config.options.get("timeout_s", 10.0))
    try:
        while True:
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                raise RequestError(502, f"node '{stage.name}' sent nothing for {timeout:g} s") from None
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise RequestError(502, f"node '{stage.name}' closed the stream before its end")
            data = orjson.loads(msg.data)
            if "error" in data:
                raise RequestError(502, str(data["error"]), code="node_error")
            if data.get("end"):
                cut[index] = bool(data.get("cut"))
                return
            yield str(data.get("piece", ""))
    finally:
        sender.cancel()
