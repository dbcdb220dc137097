"""A sender's leased slots: lease once, write again and again, get them back as credits.

Over NIXL a sender leases up to ``MAX_LEASES`` equal slots of the receiver's
region once (power-of-two sizes, at most half the region). It WRITEs into a
free one at once and names it, with how many times it wrote it, in the
notification; when the receiver's consumer releases the transfer, the
receiver pushes a credit frame (``{"credit": offset}``) and the slot is free
again. No side-channel traffic per send, and the same slots come back, so
prepared NIXL transfers are re-posted. While a write is in flight the next
send's slot is set aside, and the credits already there are read once few
free slots are left; when none is left, a send blocks for one (until the
deadline: a silent receiver is a ``TransportTimeout``). Leases given back
(``unlease``, ``bye``) carry the write counts, so a slot whose last
notification is still on its way is freed only after it lands.

The lease half of ``slot_client.SlotClient`` (a mixin of it): the requests,
frames and connection are the client's.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from .errors import TransportError
from .memory import new_tuple
from .sidechannel import Connection

MAX_LEASES = 16  # slots a sender leases: a burst of sends outruns the receiver's turnaround
MIN_LEASE = 64 << 10
# While a write is in flight, credits are read once this few leased slots are free. Into DRAM,
# always: the slot freed last is written next, so a stream keeps to 2-3 slots that are still in
# the CPU's cache (a 4 MiB write took 384 us into one slot, 649 us into 16 in turn; bench/
# nixl_edge.py --device cpu --profile on a 16-core host). Into VRAM moving on costs nothing
# (29.7 vs 30.1 us) while a read costs ~5 us of a ~27 us write: only when few are left.
CREDIT_LOW_WATER = {"DRAM": MAX_LEASES, "VRAM": 2}
LEASE_SHARE = 2  # one sender leases at most 1/LEASE_SHARE of the region (the receiver caps all leases alike)
LEASE_RETRY_S = 1.0  # after a refused lease, use reservations this long before asking again
LEASE_SHRINK = 8  # lease smaller slots once a send needs less than 1/LEASE_SHRINK of ours: more of them fit


class Reservation(NamedTuple):
    """A slot the receiver set aside for one transfer (a tuple: one is made per send)."""

    xfer_id: str
    offset: int
    nbytes: int
    receiver_id: str
    seq: int = 0  # leased slots: how many times this sender has written it, this time included


class Owed(NamedTuple):
    """A reply still to read: its request's kind and, for a slot reserved ahead, its id and size."""

    kind: str  # "spare" (a slot reserved ahead, or only an activation), "free" or "unlease"
    xfer_id: str = ""
    nbytes: int = 0


def _is_credit(frame: dict) -> bool:
    return "credit" in frame


def lease_size(nbytes: int) -> int:
    """Leased slots come in powers of two (>= 64 KiB): sizes that vary a little reuse them."""
    return max(MIN_LEASE, 1 << (max(nbytes, 1) - 1).bit_length())


class LeasedSlots:
    """The leases of one sender's connection to one receiver (``SlotClient`` is one).

    What it uses of the client: ``capacity``, ``agent``, ``peer``, ``_conn``,
    ``_ids``, ``_inflight``, ``request``, ``_post``, ``_settle_one``,
    ``_next_frame`` and ``drop``.
    """

    capacity: int
    agent: str
    peer: str
    _conn: Connection | None
    _ids: Iterator[str]
    _inflight: collections.deque[Owed]
    _credit_low_water: int

    def request(self, header: dict, deadline: float, payload: Any = None) -> dict:
        raise NotImplementedError

    def _post(self, header: dict, expect: Owed) -> None:
        raise NotImplementedError

    def _settle_one(self, deadline: float) -> None:
        raise NotImplementedError

    def _next_frame(self, deadline: float, op: str) -> dict | None:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError

    def _reset_leases(self) -> None:
        self._lease_n = 0  # size of our leased slots; 0: none
        self._lease_floor = 0  # sends this small or smaller re-lease smaller slots
        self._generation = getattr(self, "_generation", 0) + 1
        self._seq: dict[int, int] = {}  # offset of each current lease -> writes into it so far
        self._free: list[int] = []  # leased and credited: writable now
        self._ready: Reservation | None = None  # taken from _free ahead of the next send (see collect_credits)
        self._rx_id = ""
        self._no_lease_until = 0.0

    def lease(self, nbytes: int, deadline: float, xfer_id: str | None = None) -> Reservation | None:
        """A leased slot for ``nbytes``, waiting for a credit if all are in use.

        The slot set aside for the next send (``ready``) is kept for it while
        another is free: a send that was not made ready (another array, the
        general path, its own transfer id) leaves the armed send of a stream
        armed (``FastPath._while_in_flight``).

        Returns None when no lease can be had (the region is too small or its
        lease share is taken): reserve per send then.

        Raises:
            TransportTimeout: every leased slot stayed in use until ``deadline``.
            TransportError: the receiver is gone (the connection is dropped).
        """
        if not self._lease_floor < nbytes <= self._lease_n:
            self._unready()
            if not self._renew(nbytes, deadline):
                return None
        if not self._free and self._ready is not None:
            self._unready()  # the slot set aside is the only free one: better than waiting
        if not self._free:
            self._await_credits(deadline)
        return self._take_free(xfer_id or next(self._ids), nbytes)

    @property
    def ready(self) -> Reservation | None:
        """The slot set aside for the next send (by ``collect_credits``), if any."""
        return self._ready

    def take_ready(self, slot: Reservation) -> bool:
        """Take ``slot`` if it is still the one set aside (leases unchanged since): a lease without a lookup."""
        if self._ready is slot:
            self._ready = None
            return True
        return False

    def _take_free(self, xfer_id: str, nbytes: int) -> Reservation:
        """The slot freed last (in DRAM, the warmest in the caches), counted as written once more."""
        offset = self._free.pop()
        seq = self._seq[offset] = self._seq[offset] + 1
        return new_tuple(Reservation, (xfer_id, offset, nbytes, self._rx_id, seq))

    def collect_credits(self) -> None:
        """Set the next send's slot aside, first taking the credits already here (without
        waiting) if few free slots are left. Call it while a write is in flight: the next
        ``lease`` is then a field read.

        A broken connection is only noted (the connection is dropped): the
        write in flight does not depend on it, the next send reconnects.
        """
        conn = self._conn
        if conn is None:
            return
        # Reading costs a syscall and a parse per credit (~5 us on a fast host), and it is not
        # hidden behind the write: NIXL finds the write done only when we ask (see
        # CREDIT_LOW_WATER for when it pays). A reply owed to an earlier request stays buffered
        # for whoever waits for it.
        if len(self._free) <= self._credit_low_water:
            try:
                conn.read_waiting()
                while (frame := conn.take_if(_is_credit)) is not None:
                    self._credit(int(frame["credit"]))
            except TransportError:
                self.drop()
                return
        if self._ready is None and self._free:
            self._ready = self._take_free(next(self._ids), self._lease_n)

    def _unready(self) -> None:
        """Put the slot set aside for the next send back: it was not written."""
        ready, self._ready = self._ready, None
        if ready is not None and ready.offset in self._seq:
            self._seq[ready.offset] -= 1
            self._free.append(ready.offset)

    def _await_credits(self, deadline: float) -> None:
        """Block for a credit, then take every frame already here (credits come in bursts)."""
        try:
            while not self._free or self._conn.ready():
                if self._inflight:
                    self._settle_one(deadline)
                else:
                    frame = self._next_frame(deadline, "credit")
                    if frame is not None:
                        raise TransportError(f"edge receiver at {self.peer} sent an unexpected frame {frame!r}")
        except TransportError:
            self.drop()
            raise

    @property
    def generation(self) -> int:
        """Changes whenever our leases do."""
        return self._generation

    @property
    def lease_count(self) -> int:
        """How many slots we lease now."""
        return len(self._seq)

    def leased_offsets(self) -> list[int]:
        """Offsets of the current leases."""
        return list(self._seq)

    def _renew(self, nbytes: int, deadline: float) -> bool:
        """Give back our leases and lease slots big enough for ``nbytes``; False if none were granted."""
        size = lease_size(nbytes)
        count = min(MAX_LEASES, self.capacity // LEASE_SHARE // size)
        self._retire()  # our smaller leases would only crowd out the new slots or the reservation
        if count == 0 or time.monotonic() < self._no_lease_until:
            return False
        reply = self.request({"op": "lease", "n": size, "count": count, "agent": self.agent}, deadline)
        offsets = [int(off) for off in reply.get("offs") or ()]
        if not offsets:
            self._no_lease_until = time.monotonic() + LEASE_RETRY_S
            return False
        self._lease_n, self._rx_id = size, str(reply["rx"])
        self._lease_floor = size // LEASE_SHRINK if size // LEASE_SHRINK >= MIN_LEASE else 0
        self._generation += 1
        self._seq = dict.fromkeys(offsets, 0)
        self._free.extend(offsets)
        return True

    def _retire(self) -> None:
        """Give all our leases back; the receiver keeps those whose last notification is still on the way."""
        if self._seq:
            self._post({"op": "unlease", "leases": self.leases()}, Owed("unlease"))
        self._seq, self._lease_n, self._lease_floor = {}, 0, 0
        self._free.clear()

    def _credit(self, offset: int) -> None:
        if offset in self._seq:  # else a lease given back since
            self._free.append(offset)

    def leases(self) -> list[list[int]]:
        """``[offset, writes]`` per leased slot: the receiver frees a slot once it saw that many notifications."""
        self._unready()
        return [[off, seq] for off, seq in self._seq.items()]
