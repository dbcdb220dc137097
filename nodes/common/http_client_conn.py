"""One keep-alive connection of :mod:`.http_client`'s pool, the responses read off it, and the errors.

A response's body is read whole, iterated, or piped: handed to a function from
within the protocol callback that parsed it, the bytes of one loop turn in one call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, AsyncIterator, Callable

import httptools

if TYPE_CHECKING:
    from .http_client import HttpClient


class HttpClientError(Exception):
    """The server could not be reached, or a response broke off."""


class Unreachable(HttpClientError):
    """No connection (refused, unresolvable, or no answer to connect within the limit)."""


class Broken(HttpClientError):
    """The connection ended before the response was complete."""


class Stalled(HttpClientError):
    """No body bytes for longer than the caller allows."""


class Stale(Exception):
    """A reused connection was found closed before the answer started."""


class Response:
    """One response: status and headers are known; the body is read, iterated or piped."""

    def __init__(self, conn: "ClientConnection", status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers

    async def read(self) -> bytes:
        """The whole body."""
        parts = [chunk async for chunk in self.chunks(None)]
        return b"".join(parts)

    async def chunks(self, idle_timeout_s: float | None) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; :class:`Stalled` after ``idle_timeout_s`` without any."""
        conn = self._conn
        try:
            while True:
                chunk = await conn.next_chunk(idle_timeout_s)
                if chunk is None:
                    return
                yield chunk
        finally:
            conn.done_reading()

    def pipe(self, on_data: Callable[[bytes], None], idle_timeout_s: float) -> "asyncio.Future[None]":
        """Hand every body chunk to ``on_data`` as it is parsed; the future ends with the body.

        It fails with what ``on_data`` raised (reading stops), :class:`Broken`, or :class:`Stalled`
        after ``idle_timeout_s`` without bytes.
        """
        return self._conn.pipe(on_data, idle_timeout_s)

    def pause_reading(self) -> None:
        self._conn.pause()

    def resume_reading(self) -> None:
        self._conn.resume()

    def detach(self) -> None:
        """Stop delivering: the rest of the body is read and dropped, then the connection is reused."""
        self._conn.detach()

    def close(self) -> None:
        """Drop the response (an unfinished one closes its connection)."""
        self._conn.done_reading()


class ClientConnection(asyncio.Protocol):
    """One keep-alive connection; one response at a time."""

    def __init__(self, pool: "HttpClient", key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.lost = False
        self._head: asyncio.Future[Response] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._got_bytes = False
        self._framed = False  # sized or chunked: the body's end is in the bytes, not the connection's end
        self._complete = False
        self._keep_alive = False
        self._consumer_done = False
        self._released = False
        # body delivery: buffered for next_chunk, or piped
        self._buffer: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Callable[[bytes], None] | None = None
        self._piece: list[bytes] = []  # piped body bytes not handed on yet
        self._flush_due = False
        self._piped: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._idle_timeout = 0.0
        self._last = 0.0

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self.parser.feed_data(data)
            if self._piece and not self._flush_due:
                # The body bytes of every read in this loop turn go to the sink in one call, at its end.
                self._flush_due = True
                self.loop.call_soon(self._flush)
        except httptools.HttpParserCallbackError as exc:
            self._fail(exc.__context__ or exc)
        except httptools.HttpParserError as exc:
            self._fail(Broken(f"malformed response: {exc}"))
        except Exception as exc:  # noqa: BLE001 - what the sink raised, handed to whoever awaits the pipe
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        if self._complete:
            return
        if self._head is not None and not self._head.done():
            self._head.set_exception(Stale() if not self._got_bytes else Broken("connection closed mid-answer"))
        elif self._head is not None and not self._framed:
            self._on_complete()  # a body delimited by the connection's end
        else:
            self._fail(Broken(f"connection closed mid-answer{f' ({exc})' if exc else ''}"))

    # --- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in (b"content-length", b"transfer-encoding"):
            self._framed = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._keep_alive = self.parser.should_keep_alive()
        if self._head is not None and not self._head.done():
            self._head.set_result(Response(self, self.parser.get_status_code(), self._headers))

    def on_body(self, body: bytes) -> None:
        if self._consumer_done:
            return
        if self._sink is not None:
            self._piece.append(body)
        else:
            self._buffer.append(body)
            self._wake()

    def on_message_complete(self) -> None:
        if self._piece:
            self._deliver()
        self._on_complete()

    def _flush(self) -> None:
        self._flush_due = False
        if not self._piece:
            return
        try:
            self._deliver()
        except Exception as exc:  # noqa: BLE001 - what the sink raised, handed to whoever awaits the pipe
            self._fail(exc)

    def _deliver(self) -> None:
        piece, self._piece = self._piece, []
        if self._sink is not None:
            self._last = self.loop.time()
            self._sink(piece[0] if len(piece) == 1 else b"".join(piece))

    # --- a request ----------------------------------------------------------------------------

    def start(self, request: bytes) -> "asyncio.Future[Response]":
        self._head = self.loop.create_future()
        self._headers = []
        self._got_bytes = self._framed = self._complete = self._consumer_done = self._released = False
        self._buffer.clear()
        self._piece = []
        self._sink = self._piped = None
        self._error = None
        assert self.transport is not None
        self.transport.write(request)
        return self._head

    def _on_complete(self) -> None:
        self._complete = True
        self._cancel_stall()
        self._wake()
        if self._piped is not None and not self._piped.done():
            self._piped.set_result(None)
        if self._consumer_done or self._piped is not None:
            self._release()

    def _release(self) -> None:
        """Back to the pool when the answer is complete and the connection may be reused; closed otherwise."""
        if self._released:
            return
        self._released = True
        self._cancel_stall()
        if self._complete and self._keep_alive and not self.lost and self._error is None:
            self.resume()
            self.pool.give_back(self)
        elif self.transport is not None:
            self.transport.close()

    def done_reading(self) -> None:
        if self._consumer_done:
            return
        self._consumer_done = True
        self._buffer.clear()
        if self._complete:
            self._release()
        elif self.transport is not None:
            self.transport.close()

    def detach(self) -> None:
        self._sink = None
        self._consumer_done = True
        self._cancel_stall()
        if self._piped is not None and not self._piped.done():
            self._piped.set_result(None)
        if self._complete:
            self._release()

    def _fail(self, error: BaseException) -> None:
        if self._error is not None:
            return
        self._error = error
        self._cancel_stall()
        if self._piped is not None and not self._piped.done():
            self._piped.set_exception(error)
        self._wake()
        if self.transport is not None:
            self.transport.close()

    # --- buffered reading ---------------------------------------------------------------------

    async def next_chunk(self, idle_timeout_s: float | None) -> bytes | None:
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            self._waiter = self.loop.create_future()
            try:
                if idle_timeout_s is None:
                    await self._waiter
                else:
                    async with asyncio.timeout(idle_timeout_s):
                        await self._waiter
            except TimeoutError:
                raise Stalled(f"no bytes for {idle_timeout_s:g} s") from None
            finally:
                self._waiter = None
        return self._buffer.popleft()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- piping --------------------------------------------------------------------------------------

    def pipe(self, on_data: Callable[[bytes], None], idle_timeout_s: float) -> "asyncio.Future[None]":
        piped = self._piped = self.loop.create_future()
        piped.add_done_callback(self._pipe_ended)
        if self._buffer:  # what came with the head, in one piece
            early = b"".join(self._buffer)
            self._buffer.clear()
            try:
                on_data(early)
            except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
                self._fail(exc)
        if piped.done():
            return piped
        if self._error is not None:
            piped.set_exception(self._error)
        elif self._complete:
            piped.set_result(None)
            self._release()
        else:
            self._sink = on_data
            self._idle_timeout = idle_timeout_s
            self._last = self.loop.time()
            self._stall_timer = self.loop.call_later(idle_timeout_s, self._check_stall)
        return piped

    def _pipe_ended(self, piped: "asyncio.Future[None]") -> None:
        if piped.cancelled():  # the caller went away: the unfinished answer is dropped with its connection
            self._sink = None
            self.done_reading()

    def _check_stall(self) -> None:
        quiet = self.loop.time() - self._last
        if quiet >= self._idle_timeout:
            self._stall_timer = None
            self._fail(Stalled(f"no bytes for {self._idle_timeout:g} s"))
        else:
            self._stall_timer = self.loop.call_later(self._idle_timeout - quiet, self._check_stall)

    def _cancel_stall(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    # --- flow control ----------------------------------------------------------------------------

    def pause(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()
