"""A sender's side of the reservation protocol: slots asked for, and kept ahead.

Every transfer lands in a slot the receiver hands out over its side channel.
A round trip costs ~130 us, so the client keeps a few slots reserved ahead of
the next sends (``MAX_AHEAD``, at most a quarter of the receiver's region) and
reads their answers lazily: in a stream of sends the round trip leaves the
critical path. Replies arrive in request order, so every request first reads
the replies still owed.
"""

from __future__ import annotations

import collections
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import TransportError, TransportTimeout
from .sidechannel import Connection

MAX_AHEAD = 4  # slots a sender keeps reserved ahead of its next sends


@dataclass(frozen=True)
class Reservation:
    """A slot the receiver set aside for one transfer."""

    xfer_id: str
    offset: int
    nbytes: int
    receiver_id: str


class SlotClient:
    """One sender's persistent connection to one receiver's side channel.

    Args:
        host: receiver side-channel host.
        port: receiver side-channel port.
        capacity: the receiver's region size (bounds the slots kept ahead).
        connect_timeout: seconds to connect.

    Raises:
        TransportError: the receiver is unreachable.
    """

    def __init__(self, host: str, port: int, capacity: int, connect_timeout: float) -> None:
        self.host, self.port, self.capacity, self.connect_timeout = host, port, capacity, connect_timeout
        self.peer = f"{host}:{port}"
        self._conn: Connection | None = Connection(host, port, connect_timeout)
        # Replies still to read, in order, and slots reserved ahead for the next sends.
        self._inflight: collections.deque[tuple[str, str, int]] = collections.deque()
        self._spares: collections.deque[Reservation] = collections.deque()

    def reserve(self, nbytes: int, *, deadline: float, xfer_id: str | None = None) -> Reservation:
        """Ask the receiver for a slot, retrying while it is full until ``deadline`` (monotonic).

        Raises:
            TransportTimeout: still full at the deadline.
            TransportError: the transfer can never fit, or the receiver is gone.
        """
        xid = xfer_id or uuid.uuid4().hex
        backoff = 5e-5
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportTimeout(f"edge receiver at {self.peer} stayed full until the deadline")
            try:
                reply = self.request({"op": "alloc", "id": xid, "n": nbytes}, deadline)
            except TransportError:
                self.drop()
                raise
            if not reply.get("busy"):
                return Reservation(xid, int(reply["off"]), nbytes, str(reply["rx"]))
            time.sleep(min(backoff, max(remaining, 0)))
            backoff = min(backoff * 2, 0.005)

    def slot(self, nbytes: int, deadline: float, xfer_id: str | None = None) -> Reservation:
        """A slot for this send: one reserved ahead if it fits, else a fresh reservation.

        Then top up the slots reserved ahead without waiting for answers: in a
        stream of sends the reservation round trip (~130 us) leaves the
        critical path. Each request also tells the receiver which reserved
        slot we are about to write, so our death fails that transfer there.
        """
        while not self._spares and any(kind == "spare" for kind, _, _ in self._inflight):
            self._settle_one(deadline)
        activate = None
        spare = self._spares.popleft() if self._spares else None
        if spare is not None and xfer_id is None and spare.nbytes >= nbytes:
            reservation, activate = Reservation(spare.xfer_id, spare.offset, nbytes, spare.receiver_id), spare.xfer_id
        else:
            # Give back every slot reserved ahead (answered or not) before
            # asking for a different size, or they could crowd it out.
            self._settle(deadline)
            for unused in ([spare] if spare else []) + list(self._spares):
                self._post({"op": "free", "id": unused.xfer_id}, ("free", unused.xfer_id, 0))
            self._spares.clear()
            reservation = self.reserve(nbytes, deadline=deadline, xfer_id=xfer_id)
        # Up to MAX_AHEAD slots, at most a quarter of the receiver's region.
        want = max(1, min(MAX_AHEAD, self.capacity // 4 // max(nbytes, 1)))
        asked = len(self._spares) + sum(kind == "spare" for kind, _, _ in self._inflight)
        for i in range(max(want - asked, 0)):
            ahead = uuid.uuid4().hex
            header = {"op": "alloc", "id": ahead, "n": nbytes, "spare": True, "activate": activate if i == 0 else None}
            self._post(header, ("spare", ahead, nbytes))
        if activate is not None and want - asked <= 0:
            self._post({"op": "alloc", "id": "", "n": 0, "spare": True, "activate": activate}, ("spare", "", 0))
        return reservation

    def _post(self, header: dict, expect: tuple[str, str, int]) -> None:
        try:
            self._connection().post(header)
        except TransportError:
            self.drop()
            raise
        self._inflight.append(expect)

    def _settle(self, deadline: float) -> None:
        """Read every reply still owed to us (normally already here)."""
        while self._inflight:
            self._settle_one(deadline)

    def _settle_one(self, deadline: float) -> None:
        kind, xid, nbytes = self._inflight[0]
        try:
            reply = self._connection().reply(kind, deadline - time.monotonic())
        except TransportError:
            self.drop()
            raise
        self._inflight.popleft()
        if kind == "spare" and nbytes and reply.get("ok"):
            self._spares.append(Reservation(xid, int(reply["off"]), nbytes, str(reply["rx"])))

    def request(self, header: dict, deadline: float, payload: Any = None) -> dict:
        """Send one request after reading the replies still owed (replies come in order).

        Raises:
            TransportTimeout: no answer before ``deadline``.
            TransportError: the receiver refused or hung up (the connection is dropped).
        """
        self._settle(deadline)
        try:
            return self._connection().request(header, deadline - time.monotonic(), payload=payload)
        except TransportError:
            self.drop()
            raise

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = Connection(self.host, self.port, self.connect_timeout)
        return self._conn

    def drop(self) -> None:
        """Hang up; the receiver fails our unfinished transfers and frees our reservations."""
        self._inflight.clear()
        self._spares.clear()  # the receiver drops our reservations when we hang up
        if self._conn is not None:
            self._conn.close()
            self._conn = None
