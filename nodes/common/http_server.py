"""The HTTP/1.1 server of the processes on the request path (frontend, mock engine, processor).

asyncio + httptools (llhttp, the parser uvicorn uses) on uvloop, serving an ASGI 3
app, plus one extension for streams: ``scope["extensions"]["servegraph.body"]`` is the
response's :class:`~.http_cycle.DirectBody`, whose ``write`` puts bytes on the socket at
once, from plain code (a protocol callback), with no coroutine or message dict per write.
This module reads requests off connections; :mod:`.http_cycle` runs the app on each.

Why not uvicorn, which served these processes before with the same parser and loop:
a stream costs one ``send`` per event, and uvicorn's ``send`` is ~40 lines of Python
(checks, framing, flow control) per call: a fifth of the frontend's CPU in a py-spy
profile of 128-token streams. The frontend's own figures, with the client of
:mod:`.http_client`, are in that module; the mock engine alone, one write per token,
served 1,170-1,237 streams/s here against 1,117-1,156 under uvicorn. The rest of what a
server owes its clients is here too: keep-alive (75 s idle, longer than the load
balancers' usual 60 s, so they never reuse a connection we are closing), pipelining,
``Expect: 100-continue``, HEAD, chunked or sized bodies either way, back-pressure
both ways, a 400 for what does not parse and a 431 for oversized headers, and a
graceful stop on SIGTERM/SIGINT (in-flight requests get ``graceful_s``).

Websockets are not served here (:mod:`nodes.custom` needs them and runs under uvicorn).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import urllib.parse
from collections import deque
from typing import Any, Callable

import httptools

from .http_cycle import ASGIApp, Cycle, plain_response

log = logging.getLogger("servegraph.http")

KEEP_ALIVE_S = 75.0
MAX_HEADER_BYTES = 64 << 10
#: Request body bytes buffered before the connection stops reading (the app reads more).
BODY_HIGH_WATER = 256 << 10


class _HeaderTooLarge(Exception):
    pass


class Connection(asyncio.Protocol):
    """One client connection: parses requests, runs one at a time (pipelined ones wait their turn)."""

    def __init__(self, server: "Server") -> None:
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.cycle: Cycle | None = None
        self.waiting: deque[Cycle] = deque()
        self.write_paused = False
        self._resumed: list[Callable[[], None]] = []
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closing = False
        # the request being parsed
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._parsing: Cycle | None = None
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = _address(transport.get_extra_info("peername"))
        self.local = _address(transport.get_extra_info("sockname"))
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        self._disarm_idle()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Not served here (h2c, websocket): the request is answered as plain HTTP/1.1, then the
            # connection closes, since what follows on it is not HTTP/1.1 any more.
            if self._parsing is not None:
                self._parsing.keep_alive = False
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeaderTooLarge):
                self._refuse(431, f"request headers larger than {MAX_HEADER_BYTES} bytes")
            else:
                log.error("failed parsing a request from %s", self.client, exc_info=exc.__context__)
                self._refuse(500, "Internal Server Error")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")

    def eof_received(self) -> bool | None:
        return None  # close our side too: a client that half-closes has sent all it will

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._disarm_idle()
        for cycle in (self.cycle, *self.waiting):
            if cycle is not None:
                cycle.client_gone()
        self.waiting.clear()
        self._resume_writers()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._resume_writers()

    # --- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _HeaderTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _HeaderTooLarge
        # llhttp keeps trailing whitespace, which RFC 9110 section 5.5 excludes from the value
        self._headers.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = httptools.parse_url(self._url)
        raw_path = url.path
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = urllib.parse.unquote(path)
        version = parser.get_http_version()
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version, "method": parser.get_method().decode("ascii"), "scheme": "http",
            "path": path, "raw_path": raw_path, "query_string": url.query or b"", "root_path": "",
            "headers": self._headers, "client": self.client, "server": self.local,
            "state": dict(self.server.state),
        }
        expect_continue = any(n == b"expect" and v.lower() == b"100-continue" for n, v in self._headers)
        cycle = Cycle(self, scope, keep_alive=version != "1.0" and parser.should_keep_alive(),
                      expect_continue=expect_continue)
        self._parsing = cycle
        if self.cycle is None:
            self._start(cycle)
        else:
            self.waiting.append(cycle)
            self.transport.pause_reading()  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        cycle = self._parsing
        if cycle is not None and cycle.body_received(body) > BODY_HIGH_WATER:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        if self._parsing is not None:
            self._parsing.body_complete()
            self._parsing = None

    # --- cycles -------------------------------------------------------------------------

    def _start(self, cycle: "Cycle") -> None:
        self.cycle = cycle
        task = self.loop.create_task(cycle.run(self.server.app))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def cycle_done(self, cycle: "Cycle") -> None:
        """``cycle``'s response is complete: close, or go on with the next request."""
        if self.cycle is cycle:
            self.cycle = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not cycle.keep_alive or self._closing:
            transport.close()
            return
        if self.waiting:
            self._start(self.waiting.popleft())
        else:
            transport.resume_reading()
            self._arm_idle()

    def shutdown(self) -> None:
        """Stop taking requests: close now when idle, after the current response otherwise."""
        self._closing = True
        if self.cycle is None and self.transport is not None:
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        log.debug("refused a request from %s: %s", self.client, message)
        if self.transport is None or self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.started:
            self.transport.write(plain_response(status, message))
        self.transport.close()

    # --- flow control and idle connections ---------------------------------------------------

    def when_resumed(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once writing may go on (at once when it is not paused)."""
        if self.write_paused and self.transport is not None and not self.transport.is_closing():
            self._resumed.append(callback)
        else:
            callback()

    def _resume_writers(self) -> None:
        callbacks, self._resumed = self._resumed, []
        for callback in callbacks:
            callback()

    def _arm_idle(self) -> None:
        self._idle_timer = self.loop.call_later(self.server.keep_alive_s, self._idle_timeout)

    def _disarm_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_timeout(self) -> None:
        if self.cycle is None and self.transport is not None:
            self.transport.close()


def _address(value: Any) -> tuple[str, int] | None:
    return (str(value[0]), int(value[1])) if isinstance(value, tuple) and len(value) >= 2 else None


class Server:
    """An ASGI app on listening sockets until SIGTERM/SIGINT."""

    def __init__(self, app: ASGIApp, name: str, keep_alive_s: float = KEEP_ALIVE_S, graceful_s: float = 5.0) -> None:
        self.app = app
        self.name = name
        self.keep_alive_s = keep_alive_s
        self.graceful_s = graceful_s
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.state: dict[str, Any] = {}
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]

    async def serve(self, sockets: list[socket.socket]) -> None:
        self.loop = asyncio.get_running_loop()
        lifespan = _Lifespan(self.app, self.state)
        await lifespan.startup()
        servers = [await self.loop.create_server(lambda: Connection(self), sock=s, backlog=2048) for s in sockets]
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.remove_signal_handler(sig)
            for server in servers:
                server.close()
            await self._drain()
            await lifespan.shutdown()

    async def _drain(self) -> None:
        """Finish in-flight responses (``graceful_s`` at most), then cut what is left."""
        for conn in list(self.connections):
            conn.shutdown()
        deadline = self.loop.time() + self.graceful_s
        while self.tasks and self.loop.time() < deadline:
            await asyncio.wait(set(self.tasks), timeout=max(deadline - self.loop.time(), 0))
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=1)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()


class _Lifespan:
    """ASGI lifespan: startup before the first connection, shutdown after the last response."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self.task = asyncio.get_running_loop().create_task(self.app(scope, self.inbox.get, self.replies.put))
        reply = await self._ask("lifespan.startup")
        if reply is None:
            return
        if reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"startup failed: {reply.get('message', '')}")

    async def shutdown(self) -> None:
        if self.task is not None and not self.task.done():
            reply = await self._ask("lifespan.shutdown")
            if reply is not None and reply["type"] == "lifespan.shutdown.failed":
                log.error("shutdown failed: %s", reply.get("message", ""))

    async def _ask(self, kind: str) -> dict[str, Any] | None:
        """The app's answer to ``kind``; None when the app does not speak lifespan."""
        assert self.task is not None
        self.inbox.put_nowait({"type": kind})
        answer = asyncio.ensure_future(self.replies.get())
        await asyncio.wait({answer, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if answer.done():
            return answer.result()
        answer.cancel()
        if kind == "lifespan.startup" and self.task.exception() is not None:
            raise self.task.exception()  # type: ignore[misc]
        return None


def bind(host: str, port: int, name: str, hint: str = "pick another port") -> socket.socket:
    """A listening socket on ``host:port``, or SystemExit naming the port and what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"{name}: cannot listen on {host}:{port}: {exc.strerror} "
                         f"(another process holds the port? {hint})") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def run(app: ASGIApp, sockets: list[socket.socket], name: str, graceful_s: float = 5.0,
        keep_alive_s: float = KEEP_ALIVE_S) -> None:
    """Serve ``app`` on ``sockets`` until SIGTERM/SIGINT (uvloop when installed)."""
    server = Server(app, name, keep_alive_s=keep_alive_s, graceful_s=graceful_s)
    try:
        import uvloop
    except ImportError:
        asyncio.run(server.serve(sockets))
    else:
        uvloop.run(server.serve(sockets))
