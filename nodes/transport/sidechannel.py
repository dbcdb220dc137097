"""Length-prefixed JSON frames over TCP, optionally followed by raw payload bytes.

The side channel carries reservations and leases, the receiver's credits
(a leased slot is free again), liveness (a sender's connection closing is how
a receiver learns it died) and, for the fallback, the notification or the data
itself.
"""

from __future__ import annotations

import os
import select
import socket
import struct
from collections.abc import Callable
from typing import Any

import orjson

from .errors import TransportError, TransportTimeout

_LEN = struct.Struct("!I")
MAX_HEADER = 1 << 24


def send_frame(sock: socket.socket, header: dict) -> None:
    """Send one JSON header frame."""
    body = orjson.dumps(header)
    sock.sendall(_LEN.pack(len(body)) + body)


def recv_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from the socket.

    Raises:
        ConnectionError: the peer closed the connection first.
    """
    while view.nbytes:
        got = sock.recv_into(view)
        if got == 0:
            raise ConnectionError("peer closed the connection")
        view = view[got:]


def _frame_length(prefix: bytes | bytearray) -> int:
    """A frame's length from its 4-byte prefix.

    Raises:
        TransportError: longer than any header of ours.
    """
    (length,) = _LEN.unpack_from(prefix)
    if length > MAX_HEADER:
        raise TransportError(f"side-channel frame of {length} bytes; is something else on this port?")
    return length


def recv_frame(sock: socket.socket) -> dict:
    """Receive one JSON header frame.

    Raises:
        ConnectionError: the peer closed the connection.
        TransportError: the frame is not ours.
    """
    raw = bytearray(_LEN.size)
    recv_exact(sock, memoryview(raw))
    body = bytearray(_frame_length(raw))
    recv_exact(sock, memoryview(body))
    return orjson.loads(body)


class Connection:
    """A sender's persistent connection to one receiver's side channel.

    Args:
        host: receiver side-channel host.
        port: receiver side-channel port.
        timeout: seconds to connect.

    Raises:
        TransportError: the receiver is not reachable.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.peer = f"{host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise TransportError(
                f"cannot reach the edge receiver at {self.peer}: {exc}; is the receiving process up?"
            ) from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._timeout = -1.0
        self._poller = select.poll()
        self._poller.register(self.sock, select.POLLIN)
        # Bytes read but not yet parsed: one read takes every frame already
        # here (credits come in bursts), not two syscalls per frame.
        self._buf = bytearray()
        self._chunk = memoryview(bytearray(1 << 16))

    def ready(self) -> bool:
        """Whether a frame (or the peer's hang-up) is waiting: ~1 us, no read.

        Raises:
            TransportError: the buffered frame is longer than any header of ours.
        """
        return self._buffered_end() > 0 or bool(self._poller.poll(0))

    def _buffered_end(self) -> int:
        """Where the first buffered frame ends, if it is all here; else 0."""
        buf = self._buf
        if len(buf) < _LEN.size:
            return 0
        end = _LEN.size + _frame_length(buf)
        return end if len(buf) >= end else 0

    def read_waiting(self) -> None:
        """Buffer whatever bytes are already here, without waiting: one syscall.

        A socket with a timeout has a non-blocking descriptor (Python's
        documented timeout mode), so a plain read returns at once; going
        through ``recv`` would poll first.

        Raises:
            TransportError: the receiver closed the connection.
        """
        try:
            self._append(os.readv(self.sock.fileno(), [self._chunk]))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise TransportError(f"edge receiver at {self.peer} dropped the connection: {exc}") from exc

    def _append(self, n: int) -> None:
        """Keep the ``n`` bytes just read into the chunk (0: the peer closed the connection)."""
        if n == 0:
            raise ConnectionError("peer closed the connection")
        self._buf += self._chunk[:n]

    def take_if(self, wanted: Callable[[dict], bool]) -> dict | None:
        """The next frame already buffered if ``wanted(frame)``; else None, the frame left in place."""
        return self._frame(wanted)

    def _frame(self, wanted: Callable[[dict], bool] | None = None) -> dict | None:
        """The next whole frame from the buffer (if one is there and, given ``wanted``, wanted)."""
        end = self._buffered_end()
        if not end:
            return None
        buf = self._buf
        frame = orjson.loads(buf[_LEN.size : end])
        if wanted is not None and not wanted(frame):
            return None
        del buf[:end]
        return frame

    def _set_timeout(self, seconds: float) -> None:
        # settimeout costs two fcntl calls: skip it while the deadline is about the same.
        seconds = max(seconds, 1e-3)
        if not (0.9 * self._timeout <= seconds <= self._timeout):
            self.sock.settimeout(seconds)
            self._timeout = seconds

    def post(self, header: dict, payload: Any = None) -> None:
        """Send a frame (and payload buffers) without waiting; read its reply later.

        Raises:
            TransportError: the receiver closed the connection.
        """
        try:
            send_frame(self.sock, header)
            for part in payload or ():
                self.sock.sendall(part)
        except OSError as exc:
            raise TransportError(f"edge receiver at {self.peer} dropped the connection: {exc}") from exc

    def read(self, op: str, deadline_s: float) -> dict:
        """Read the next frame, whatever it is (a reply or a credit the receiver pushed).

        Raises:
            TransportTimeout: nothing within ``deadline_s`` seconds.
            TransportError: the receiver closed the connection.
        """
        try:
            while (frame := self._frame()) is None:
                self._set_timeout(deadline_s)
                self._append(self.sock.recv_into(self._chunk))
            return frame
        except TimeoutError as exc:
            raise TransportTimeout(f"edge receiver at {self.peer} did not answer {op!r} in time") from exc
        except OSError as exc:
            raise TransportError(f"edge receiver at {self.peer} dropped the connection: {exc}") from exc

    def check(self, reply: dict, op: str) -> dict:
        """Return ``reply`` unless it is a refusal.

        Raises:
            TransportError: the receiver refused ``op``. A ``{"busy": true}``
                reply is returned, not raised: the caller retries.
        """
        if not reply.get("ok") and not reply.get("busy"):
            raise TransportError(f"edge receiver at {self.peer} refused {op!r}: {reply.get('msg')}")
        return reply

    def close(self) -> None:
        """Close the connection (the receiver fails our unfinished transfers)."""
        try:
            self.sock.close()
        except OSError:
            pass
