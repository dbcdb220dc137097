"""Relay an engine's SSE stream to the client, whole events at a time, and keep it alive.

If the engine's stream breaks or stalls mid-way, the request migrates: the
prompt plus the text already sent is resubmitted as a continuation (to another
replica: the failed one sits out) and the client's stream goes on seamlessly.
When no replica can continue, the stream ends with an OpenAI error event, which
the ``openai`` client raises on — a failed stream never ends looking like success.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Awaitable, Callable, Protocol

import orjson

from ..common.openai_errors import RequestError
from . import metrics
from .protocols import Outcome
from .requests import ClientRequest
from .upstream import UpstreamError

log = logging.getLogger("servegraph.frontend")

DONE = b"data: [DONE]\n\n"

Resume = Callable[[ClientRequest], Awaitable[Outcome]]


class Sink(Protocol):
    """Where relayed events go: a response body written at once (``http_cycle.DirectBody``) or a queue."""

    @property
    def paused(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def when_resumed(self, callback: Callable[[], None]) -> None: ...


async def relay(req: ClientRequest, outcome: Outcome, resume: Resume, model: str, start: float,
                idle_timeout_s: float, migration_limit: int, sink: Sink) -> None:
    """Write ``outcome``'s stream to ``sink`` in complete SSE events until [DONE], migrating the
    request when the stream fails (``migration_limit`` times at most; then an error event ends it)."""
    await _Relay(req, resume, model, start, sink).run(outcome, idle_timeout_s, migration_limit)


class _Relay:
    """One stream's relay. Events are cut, checked and written from within the upstream connection's
    protocol callback (:meth:`on_data`): no task switch per event between the engine and the client."""

    def __init__(self, req: ClientRequest, resume: Resume, model: str, start: float, sink: Sink) -> None:
        self.req = req
        self.resume = resume
        self.model = model
        self.sink = sink
        self.sent: list[bytes] = []
        self.carried = 0  # content events streamed before the current stream took over
        self.first = True
        self.last = start
        self.ttft = metrics.TTFT.labels(model)
        self.itl = metrics.ITL.labels(model)
        self.buffer = b""
        self.done = False
        self.current: Outcome | None = None

    async def run(self, outcome: Outcome, idle_timeout_s: float, migration_limit: int) -> None:
        migrations = 0
        current = outcome
        while True:
            stream = current.stream
            assert stream is not None
            self.current, self.buffer = current, b""
            try:
                await stream.pipe(self.on_data, idle_timeout_s)
                if self.done:
                    return
                raise UpstreamError(current.service, "stream ended without [DONE]")
            except UpstreamError as exc:
                stream.close()
                failed = exc.service
                if current.stage is not None:
                    for u in current.stage.config.upstreams:
                        if u.service == failed:
                            current.stage.picker.failed(u)
                if migrations >= migration_limit:
                    self.sink.write(_give_up(self.model, failed, exc))
                    return
                migrations += 1
                metrics.MIGRATIONS.labels(self.model, failed).inc()
                log.warning("stream from %s failed (%s); migrating (%d/%d)", failed, exc, migrations, migration_limit)
                self.carried = generated_so_far(self.req.kind, self.sent)[1]
                try:
                    current = await self.resume(continuation(self.req, self.sent))
                except (UpstreamError, RequestError) as again:
                    self.sink.write(_give_up(self.model, failed, again))
                    return
            except BaseException:  # the client went away (cancelled): free the engine's slot now
                stream.close()
                raise

    def on_data(self, chunk: bytes) -> None:
        buffer = self.buffer + chunk if self.buffer else chunk
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self.buffer = buffer
            return
        events, self.buffer = buffer[: cut + 2], buffer[cut + 2:]
        current = self.current
        assert current is not None and current.stream is not None
        if b'"error"' in events:  # rare: checked by a byte search before any parsing
            events, failure = _split_at_error(events, current.service)
            if failure is not None:
                if events:
                    self._emit(events)
                raise failure
        now = time.perf_counter()
        if self.first:
            self.ttft.observe(now - self.last)
            self.first = False
        else:
            self.itl.observe(now - self.last)
        self.last = now
        if self.carried:
            events = _fix_usage(events, self.carried)
        self._emit(events)
        if events.endswith(DONE):
            self.done = True
            current.stream.finish()

    def _emit(self, events: bytes) -> None:
        self.sent.append(events)
        sink = self.sink
        sink.write(events)
        if sink.paused:  # the client reads slower than the engine writes: hold the engine's stream
            stream = self.current.stream  # type: ignore[union-attr]
            stream.pause_reading()
            sink.when_resumed(stream.resume_reading)


class EventQueue:
    """A sink read as an async iterator (a stream that goes on through nodes of the user's own)."""

    paused = False

    def __init__(self) -> None:
        self._items: asyncio.Queue[bytes | None] = asyncio.Queue()

    def write(self, data: bytes) -> None:
        self._items.put_nowait(data)

    def when_resumed(self, callback: Callable[[], None]) -> None:
        callback()

    def end(self) -> None:
        self._items.put_nowait(None)

    async def events(self) -> AsyncIterator[bytes]:
        while (item := await self._items.get()) is not None:
            yield item


def _split_at_error(events: bytes, service: str) -> tuple[bytes, UpstreamError | None]:
    """The events before an engine's in-stream error event, and that error.

    vLLM reports a request that failed after its stream started (a KV load that
    failed, ``finish_reason`` "error") as an error event before ``[DONE]``; the
    stream is then over, so it is migrated like a broken one.
    """
    blocks = events.split(b"\n\n")
    for i, block in enumerate(blocks):
        if block.startswith(b"data: {") and b'"error"' in block:
            try:
                data = orjson.loads(block[6:])
            except orjson.JSONDecodeError:
                continue
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict):
                kept = b"".join(b + b"\n\n" for b in blocks[:i] if b)
                return kept, UpstreamError(service, f"error event in the stream: {error.get('message', error)}", 500)
    return events, None


def _give_up(model: str, service: str, exc: Exception) -> bytes:
    metrics.STREAM_ERRORS.labels(model, service).inc()
    return RequestError(502, f"stream failed and could not be resumed: {exc}").sse()


def _events(data: list[bytes]) -> list[dict]:
    out = []
    for block in b"".join(data).split(b"\n\n"):
        if block.startswith(b"data: {"):
            try:
                out.append(orjson.loads(block[6:]))
            except orjson.JSONDecodeError:
                continue
    return out


def generated_so_far(kind: str, sent: list[bytes]) -> tuple[str, int]:
    """The text already streamed and the number of content events carrying it."""
    text, count = [], 0
    for event in _events(sent):
        for choice in event.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content") if kind == "chat" else choice.get("text")
            if piece:
                text.append(piece)
                count += 1
    return "".join(text), count


def continuation(req: ClientRequest, sent: list[bytes]) -> ClientRequest:
    """The request that continues a stream after ``sent``: prompt + what was already generated."""
    partial, count = generated_so_far(req.kind, sent)
    body = {k: v for k, v in req.body.items() if k not in ("kv_transfer_params", "ec_transfer_params")}
    if not partial:  # nothing streamed yet: the request as the client sent it
        return ClientRequest(req.kind, req.path, body)
    for key in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(key), int):
            body[key] = max(body[key] - count, 1)
    if req.kind == "chat":
        body["messages"] = [*body["messages"], {"role": "assistant", "content": partial}]
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    elif isinstance(body.get("prompt"), str):
        body["prompt"] = body["prompt"] + partial
    return ClientRequest(req.kind, req.path, body)


def _fix_usage(events: bytes, before: int) -> bytes:
    """After a migration, the ``before`` tokens streamed earlier count as completion, not prompt."""
    if b'"usage":{' not in events and b'"usage": {' not in events:
        return events
    out = []
    for block in events.split(b"\n\n"):
        if block.startswith(b"data: {") and b"usage" in block:
            try:
                data = orjson.loads(block[6:])
            except orjson.JSONDecodeError:
                out.append(block)
                continue
            usage = data.get("usage")
            if isinstance(usage, dict):
                usage["prompt_tokens"] = max(usage.get("prompt_tokens", 0) - before, 0)
                usage["completion_tokens"] = usage.get("completion_tokens", 0) + before
                block = b"data: " + orjson.dumps(data)
        out.append(block)
    return b"\n\n".join(out)
