"""One request and its response as an ASGI app sees them, and the response's bytes on the wire.

:class:`Cycle` is what :mod:`.http_server`'s connections run an app with; its
:class:`DirectBody` is the extension for streams (``scope["extensions"]["servegraph.body"]``):
``write`` frames and sends at once, from plain code, with no message dict or
coroutine per write. The response head waits for the first body bytes (one write
for both) but never past the current loop turn.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .http_server import Connection

log = logging.getLogger("servegraph.http")

ASGIApp = Callable[..., Any]

STATUS_LINE = {code: f"HTTP/1.1 {code} {phrase}\r\n".encode()
               for code in range(100, 600)
               for phrase in [http.HTTPStatus(code).phrase if code in http.HTTPStatus._value2member_map_ else ""]}


class _Date:
    """The Date header, formatted at most once a second."""

    second = -1
    value = b""

    @classmethod
    def header(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second = now
            cls.value = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return cls.value


def plain_response(status: int, text: str) -> bytes:
    body = text.encode()
    return (STATUS_LINE[status] + _Date.header() + b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(body), body))


class DirectBody:
    """A started response's body, written synchronously (``scope["extensions"]["servegraph.body"]``).

    ``write`` frames and sends at once; when the client's socket buffer is full, ``paused`` is true
    and ``when_resumed`` calls back once it drains (stop producing meanwhile). Writes after the
    client went away are dropped; ``gone`` says so. End the response with ASGI's last body message.
    """

    __slots__ = ("_cycle",)

    def __init__(self, cycle: "Cycle") -> None:
        self._cycle = cycle

    def write(self, data: bytes) -> None:
        self._cycle.write_body(data, False)

    @property
    def paused(self) -> bool:
        return self._cycle.conn.write_paused

    @property
    def gone(self) -> bool:
        return self._cycle.disconnected

    def when_resumed(self, callback: Callable[[], None]) -> None:
        self._cycle.conn.when_resumed(callback)


async def resumed(body: DirectBody) -> None:
    """Wait until ``body`` may be written again (at once when it is not paused)."""
    if body.paused:
        waiter = asyncio.get_running_loop().create_future()
        body.when_resumed(lambda: waiter.done() or waiter.set_result(None))
        await waiter


class Cycle:
    """One request and its response, as ASGI sees them."""

    def __init__(self, conn: Connection, scope: dict[str, Any], keep_alive: bool, expect_continue: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.body_writer = DirectBody(self)
        scope["extensions"] = {"servegraph.body": self.body_writer}
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.head = scope["method"] == "HEAD"
        self.body = bytearray()
        self.more_body = True
        self.delivered_all = False
        self.disconnected = False
        self.started = False
        self.complete = False
        self.chunked = False
        self.sized = False
        self.bodyless = False
        self.remaining = 0  # bytes still owed of a sized body
        self._pending_head: bytes | None = None
        self._event = asyncio.Event()

    # --- from the connection -----------------------------------------------------------

    def body_received(self, data: bytes) -> int:
        self.body += data
        self._event.set()
        return len(self.body)

    def body_complete(self) -> None:
        self.more_body = False
        self._event.set()

    def client_gone(self) -> None:
        self.disconnected = True
        self._event.set()

    # --- ASGI ---------------------------------------------------------------------------------

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.error("the app failed on %s %s", self.scope["method"], self.scope["path"], exc_info=exc)
            self._end_unfinished()
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
        else:
            if not self.complete and not self.disconnected:
                log.error("the app ended %s %s without completing its response", self.scope["method"],
                          self.scope["path"])
            self._end_unfinished()

    def _end_unfinished(self) -> None:
        """After the app: a response it never started is a 500; one it left half-sent is cut off."""
        if self.complete:
            return
        if not self.started and not self.disconnected:
            self.keep_alive = False
            self._write_now(plain_response(500, "Internal Server Error"))
            self._finish()
        else:
            self._abort()

    async def receive(self) -> dict[str, Any]:
        if self.expect_continue:
            self.expect_continue = False
            if self.more_body and not self.started:
                self._write_now(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not self.delivered_all:
            while not (self.body or not self.more_body or self.disconnected or self.complete):
                self.conn.transport.resume_reading()  # type: ignore[union-attr]
                self._event.clear()
                await self._event.wait()
            if not (self.disconnected or self.complete):
                message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
                self.body.clear()
                if self.more_body:
                    self.conn.transport.resume_reading()  # type: ignore[union-attr]
                else:
                    self.delivered_all = True
                return message
        # the whole body was read: what comes next is the end of the response or of the connection
        while not (self.disconnected or self.complete):
            self._event.clear()
            await self._event.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self._start_response(message["status"], message.get("headers") or [])
        elif kind == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body sent before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body sent after the response completed")
            more = message.get("more_body", False)
            self.write_body(message.get("body", b""), not more)
            if more and self.conn.write_paused and not self.disconnected:
                await resumed(self.body_writer)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    # --- writing ------------------------------------------------------------------------------

    def _start_response(self, status: int, headers: list) -> None:
        self.started = True
        self.bodyless = self.head or status < 200 or status in (204, 304)
        parts = [STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status, _Date.header()]
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                self.sized = True
                self.remaining = int(value)
                continue
            if lname == b"transfer-encoding":
                continue  # ours to decide
            if lname == b"connection" and b"close" in value.lower():
                self.keep_alive = False
                continue
            parts += (name, b": ", value, b"\r\n")
        if self.sized:
            parts += (b"content-length: %d\r\n" % self.remaining,)
        elif not self.bodyless:
            if self.scope["http_version"] == "1.0":
                self.keep_alive = False  # the body ends when the connection does
            else:
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
        if self.conn._closing:
            self.keep_alive = False
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        # Held until the first body bytes (one write for both); sent within this loop turn regardless.
        self._pending_head = b"".join(parts)
        self.conn.loop.call_soon(self._flush_head)

    def _flush_head(self) -> None:
        if self._pending_head is not None:
            head, self._pending_head = self._pending_head, None
            self._write_now(head)

    def write_body(self, data: bytes, last: bool) -> None:
        if not self.started:
            raise RuntimeError("response body written before http.response.start")
        if self.complete:
            if data:
                raise RuntimeError("response body written after the response completed")
            return
        if self.bodyless:
            data = b""
        elif self.sized and data:
            self.remaining -= len(data)
            if self.remaining < 0:
                self._abort()
                raise RuntimeError("response body longer than its content-length")
        out = data
        if self.chunked:
            out = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
            if last:
                out += b"0\r\n\r\n"
        if self._pending_head is not None:
            out, self._pending_head = self._pending_head + out, None
        if out:
            self._write_now(out)
        if last:
            if self.sized and not self.bodyless and self.remaining > 0:
                self._abort()
                raise RuntimeError("response body shorter than its content-length")
            self._finish()

    def _write_now(self, data: bytes) -> None:
        transport = self.conn.transport
        if not self.disconnected and transport is not None and not transport.is_closing():
            transport.write(data)

    def _finish(self) -> None:
        self.complete = True
        self._event.set()
        self.conn.cycle_done(self)

    def _abort(self) -> None:
        """A response that cannot be completed: the client sees the connection end."""
        self.keep_alive = False
        self._flush_head()
        if self.conn.transport is not None:
            self.conn.transport.close()
        self._finish()
