"""A pooled HTTP/1.1 client for calls between our processes on the request path.

asyncio + httptools' response parser on keep-alive connections. A response's body
can be read whole, iterated, or *piped*: each chunk handed to a function from within
the protocol callback that parsed it, so a relay forwards an event to its client
with no task switch in between (the frontend's streams, :mod:`nodes.frontend.relay`).

Why not aiohttp, which these calls used before: per streamed chunk, aiohttp's reader
(StreamReader.readany, its flow control, a future per wait) and the async iteration
on top of it took about a quarter of the frontend's CPU in a py-spy profile of
128-token streams at 32 connections. With this client and the server of
:mod:`.http_server`, the frontend's CPU per such stream fell from 0.58-0.63 ms to
0.47-0.49 ms (one engine write per token) and from 0.31-0.33 to 0.21 ms (the engine's
writes coalesced), and its non-streaming req/s in bench/frontend_vs_dynamo.py rose
from 5,265 to 8,155-9,080 (this 2-core machine, the same run conditions).

Connections idle longer than ``idle_s`` are not reused (default 4 s: uvicorn, and so
vLLM, closes idle connections after 5 s); a request whose reused connection turns out
to be closed before any byte of the answer came is sent once more on a new one.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Callable
from urllib.parse import urlsplit

from .http_client_conn import Broken, ClientConnection, HttpClientError, Response, Stale, Stalled, Unreachable

__all__ = ["Broken", "HttpClient", "HttpClientError", "Response", "Stalled", "Unreachable"]

SocketSetup = Callable[[socket.socket], None]


class HttpClient:
    """Keep-alive connections per (host, port), made with ``setup`` applied to each socket."""

    def __init__(self, setup: SocketSetup | None = None, connect_timeout_s: float = 5.0, idle_s: float = 4.0) -> None:
        self.setup = setup
        self.connect_timeout_s = connect_timeout_s
        self.idle_s = idle_s
        self.loop = asyncio.get_running_loop()
        self._idle: dict[tuple[str, int], list[ClientConnection]] = {}
        self._open: set[ClientConnection] = set()

    async def request(self, method: str, url: str, body: bytes = b"",
                      headers: tuple[tuple[str, str], ...] = ()) -> Response:
        """Send a request and return once the response's status and headers are in."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"{method} {target} HTTP/1.1\r\nhost: {parts.netloc}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"content-length: {len(body)}\r\n")
        request = "".join(head).encode("latin-1") + b"\r\n" + body
        key = (host, port)
        for _attempt in range(2):
            conn, reused = self._reuse(key)
            if conn is None:
                conn = await self._connect(key)
            answer = conn.start(request)
            try:
                return await answer
            except Stale:
                if not reused:
                    raise Broken("connection closed before the answer") from None
            except asyncio.CancelledError:
                conn.done_reading()
                raise
        raise Broken("connection closed before the answer, twice")

    def _reuse(self, key: tuple[str, int]) -> tuple[ClientConnection | None, bool]:
        idle = self._idle.get(key)
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            if not conn.lost and now - conn.idle_since < self.idle_s:
                return conn, True
            if conn.transport is not None:
                conn.transport.close()
        return None, False

    async def _connect(self, key: tuple[str, int]) -> ClientConnection:
        host, port = key
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                error: OSError | None = None
                for family, type_, proto, _name, address in infos:
                    sock = socket.socket(family, type_, proto)
                    try:
                        sock.setblocking(False)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        if self.setup is not None:
                            self.setup(sock)
                        await self.loop.sock_connect(sock, address)
                    except OSError as exc:
                        sock.close()
                        error = exc
                        continue
                    _transport, conn = await self.loop.create_connection(lambda: ClientConnection(self, key), sock=sock)
                    self._open.add(conn)
                    return conn
                raise Unreachable(f"cannot connect to {host}:{port}: {error.strerror if error else 'no address'}")
        except TimeoutError:
            raise Unreachable(f"cannot connect to {host}:{port} within {self.connect_timeout_s:g} s") from None
        except socket.gaierror as exc:
            raise Unreachable(f"cannot resolve {host}: {exc.strerror}") from None

    def give_back(self, conn: ClientConnection) -> None:
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)

    def forget(self, conn: ClientConnection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def close(self) -> None:
        for conn in list(self._open):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        await asyncio.sleep(0)
