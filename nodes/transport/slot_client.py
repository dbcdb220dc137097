"""A sender's side of the slot protocol: leased slots with credits, or one reservation per send.

Every transfer lands in a slot of the receiver's region. Two ways to get one:

* Leases (NIXL): a few equal slots leased once and written again and again,
  coming back as credits (``leased_slots``, the lease half of this client).
* Reservations (shared memory, TCP, and NIXL when no lease fits): ask for a
  slot per send (a round trip of ~130 us), keeping a few reserved ahead
  (``MAX_AHEAD``, at most a quarter of the region) whose answers are read
  lazily.

Replies arrive in request order, interleaved with credits; every read goes
through ``_next_reply`` which applies credits on the way.
"""

from __future__ import annotations

import collections
import itertools
import time
import uuid
from typing import Any

from .errors import TransportError, TransportTimeout
from .leased_slots import CREDIT_LOW_WATER, LeasedSlots, Owed, Reservation
from .sidechannel import Connection

__all__ = ["MAX_AHEAD", "Reservation", "SlotClient"]

MAX_AHEAD = 4  # slots a sender keeps reserved ahead of its next sends


class SlotClient(LeasedSlots):
    """One sender's persistent connection to one receiver's side channel.

    Args:
        host: receiver side-channel host.
        port: receiver side-channel port.
        capacity: the receiver's region size (bounds the slots kept ahead and leased).
        connect_timeout: seconds to connect.
        agent: this sender's NIXL agent name (the receiver checks notifications against it).
        mem: the receiver region's memory kind, "DRAM" or "VRAM" (when credits are read).

    Raises:
        TransportError: the receiver is unreachable.
    """

    def __init__(
        self, host: str, port: int, capacity: int, connect_timeout: float, agent: str = "", mem: str = "DRAM"
    ) -> None:
        self.host, self.port, self.capacity, self.connect_timeout = host, port, capacity, connect_timeout
        self.agent = agent
        self._credit_low_water = CREDIT_LOW_WATER[mem]
        self.peer = f"{host}:{port}"
        self._conn: Connection | None = Connection(host, port, connect_timeout)
        # Replies still to read, in order, and slots reserved ahead for the next sends.
        self._inflight: collections.deque[Owed] = collections.deque()
        self._spares: collections.deque[Reservation] = collections.deque()
        prefix = uuid.uuid4().hex[:16]
        self._ids = (f"{prefix}-{n:x}" for n in itertools.count())
        self._reset_leases()

    def new_id(self) -> str:
        """A fresh transfer id (random per sender, then a counter: cheaper than uuid4 per send)."""
        return next(self._ids)

    # -- reservations -------------------------------------------------------------

    def reserve(self, nbytes: int, *, deadline: float, xfer_id: str | None = None) -> Reservation:
        """Ask the receiver for a slot, retrying while it is full until ``deadline`` (monotonic).

        Raises:
            TransportTimeout: still full at the deadline.
            TransportError: the transfer can never fit, or the receiver is gone.
        """
        xid = xfer_id or self.new_id()
        backoff = 5e-5
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportTimeout(f"edge receiver at {self.peer} stayed full until the deadline")
            reply = self.request({"op": "alloc", "id": xid, "n": nbytes}, deadline)
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
        try:
            while not self._spares and any(owed.kind == "spare" for owed in self._inflight):
                self._settle_one(deadline)
        except TransportError:
            self.drop()
            raise
        activate = None
        spare = self._spares.popleft() if self._spares else None
        if spare is not None and xfer_id is None and spare.nbytes >= nbytes:
            reservation, activate = Reservation(spare.xfer_id, spare.offset, nbytes, spare.receiver_id), spare.xfer_id
        else:
            # Give back every slot reserved ahead (answered or not) before
            # asking for a different size, or they could crowd it out.
            self.settle(deadline)
            for unused in ([spare] if spare else []) + list(self._spares):
                self._post({"op": "free", "id": unused.xfer_id}, Owed("free", unused.xfer_id))
            self._spares.clear()
            reservation = self.reserve(nbytes, deadline=deadline, xfer_id=xfer_id)
        # Up to MAX_AHEAD slots, at most a quarter of the receiver's region.
        want = max(1, min(MAX_AHEAD, self.capacity // 4 // max(nbytes, 1)))
        asked = len(self._spares) + sum(owed.kind == "spare" for owed in self._inflight)
        for i in range(max(want - asked, 0)):
            ahead = self.new_id()
            header = {"op": "alloc", "id": ahead, "n": nbytes, "spare": True, "activate": activate if i == 0 else None}
            self._post(header, Owed("spare", ahead, nbytes))
        if activate is not None and want - asked <= 0:
            self._post({"op": "alloc", "id": "", "n": 0, "spare": True, "activate": activate}, Owed("spare"))
        return reservation

    # -- frames -------------------------------------------------------------------

    def _post(self, header: dict, expect: Owed) -> None:
        try:
            self._connection().post(header)
        except TransportError:
            self.drop()
            raise
        self._inflight.append(expect)

    def settle(self, deadline: float) -> None:
        """Read every reply still owed to us (normally already here)."""
        try:
            while self._inflight:
                self._settle_one(deadline)
        except TransportError:
            self.drop()
            raise

    def _next_frame(self, deadline: float, op: str) -> dict | None:
        """Read one frame: a credit is applied (returns None), anything else is returned."""
        frame = self._connection().read(op, deadline - time.monotonic())
        if "credit" in frame:
            self._credit(int(frame["credit"]))
            return None
        return frame

    def _next_reply(self, deadline: float, op: str) -> dict:
        while (frame := self._next_frame(deadline, op)) is None:
            pass
        return self._connection().check(frame, op)

    def _settle_one(self, deadline: float) -> None:
        owed = self._inflight[0]
        reply = self._next_reply(deadline, owed.kind)
        self._inflight.popleft()
        if owed.kind == "spare" and owed.nbytes and reply.get("ok"):
            self._spares.append(Reservation(owed.xfer_id, int(reply["off"]), owed.nbytes, str(reply["rx"])))

    def request(self, header: dict, deadline: float, payload: Any = None) -> dict:
        """Send one request after reading the replies still owed (replies come in order).

        Raises:
            TransportTimeout: no answer before ``deadline``.
            TransportError: the receiver refused or hung up (the connection is dropped).
        """
        self.settle(deadline)
        try:
            self._connection().post(header, payload)
            return self._next_reply(deadline, header["op"])
        except TransportError:
            self.drop()
            raise

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = Connection(self.host, self.port, self.connect_timeout)
        return self._conn

    def close(self) -> None:
        """Say goodbye (with the writes per leased slot, so none still on its way is lost), then hang up."""
        if self._conn is not None:
            try:
                self.request({"op": "bye", "leases": self.leases()}, time.monotonic() + 1.0)
            except TransportError:
                pass
        self.drop()

    def drop(self) -> None:
        """Hang up; the receiver fails our unfinished transfers and frees our reservations and leases."""
        self._inflight.clear()
        self._spares.clear()  # the receiver drops our reservations when we hang up
        self._reset_leases()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
