"""Length-prefixed JSON frames over TCP, optionally followed by raw payload bytes.

The side channel carries reservations and leases, the receiver's credits
(a leased slot is free again), liveness (a sender's connection closing is how
a receiver learns it died) and, for the fallback, the notification or the data
itself.
"""

from __future__ import annotations

import select
import socket
import struct
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


def recv_frame(sock: socket.socket) -> dict:
    """Receive one JSON header frame.

    Raises:
        ConnectionError: the peer closed the connection.
        TransportError: the frame is not ours.
    """
    raw = bytearray(_LEN.size)
    recv_exact(sock, memoryview(raw))
    (length,) = _LEN.unpack(raw)
    if length > MAX_HEADER:
        raise TransportError(f"side-channel frame of {length} bytes; is something else on this port?")
    body = bytearray(length)
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

    def ready(self) -> bool:
        """Whether a frame (or the peer's hang-up) is waiting: ~1 us, no read."""
        return bool(self._poller.poll(0))

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
        self._set_timeout(deadline_s)
        try:
            return recv_frame(self.sock)
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
