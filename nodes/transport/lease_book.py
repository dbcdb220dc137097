"""The receiver's record of the slots it leased to senders.

A NIXL sender leases a few equal slots of the region once (``grant``) and
writes them again and again; each notification names the slot and how many
times the sender has written it (``written``). Releasing the transfer makes
the slot the sender's again and pushes it a credit (``release``). Leases come
back when the sender asks for other sizes or says goodbye (``give_back``),
each with its write count, so a slot whose last notification is still on the
way is freed only once that notification lands; a sender that vanishes
loses its idle slots at once and its busy ones when their transfers are
released (``peer_gone``). The leases senders may write take at most half the
region together; a slot given back that still holds a transfer (``orphan``,
``closing``) is not counted, since it ends on its own: a sender that moves to
another size while its consumer holds its last transfers gets as many new
slots as one that did not (issue 22: a 1 GiB sender got 2 slots instead of 3
and its third send waited for the consumer's release).

Every method is called with the receiver's lock held.
"""

from __future__ import annotations

from dataclasses import dataclass

from .slots import SlotAllocator


@dataclass
class Lease:
    """A slot leased to one sender connection."""

    cid: int
    n: int
    agent: str
    # idle (sender may write) -> busy (holds a notified transfer) -> idle ...;
    # closing: the sender said goodbye while its notification was on the way;
    # orphan: busy, but the sender is gone or gave it back: free on release
    state: str = "idle"
    t0: float = 0.0
    seq: int = 0  # notifications seen for this slot (the sender counts its writes alike)
    expect: int = 0  # closing: free once ``seq`` reaches this


class LeaseBook:
    """Leased slots by offset, carved from the receiver's allocator.

    Args:
        allocator: the receiver's region allocator (reservations share it).
        capacity: the region's size; leases together keep to half of it.
    """

    def __init__(self, allocator: SlotAllocator, capacity: int) -> None:
        self._allocator = allocator
        self._capacity = capacity
        self._leases: dict[int, Lease] = {}  # by offset

    def grant(self, cid: int, nbytes: int, count: int, agent: str) -> list[int]:
        """Lease up to ``count`` slots of ``nbytes`` to connection ``cid``; their offsets (maybe none)."""
        offsets: list[int] = []
        live = sum(lease.n for lease in self._leases.values() if lease.state in ("idle", "busy"))
        while len(offsets) < count and live + nbytes <= self._capacity // 2:
            off = self._allocator.alloc(nbytes)
            if off is None:
                break
            self._leases[off] = Lease(cid=cid, n=nbytes, agent=agent)
            live += nbytes
            offsets.append(off)
        return offsets

    def give_back(self, cid: int, leases: list, *, free_now: bool, now: float) -> None:
        """A sender gives leases back, each ``[offset, writes it made]``: wait for notifications not yet seen."""
        for off, writes in leases:
            lease = self._leases.get(int(off))
            if lease is None or lease.cid != cid:
                continue
            if lease.seq < int(writes):  # its last notification is still on the way
                lease.state, lease.t0, lease.expect = "closing", now, int(writes)
            elif lease.state == "busy":
                lease.state = "orphan"
            elif lease.state == "idle" and free_now:
                self._unlease(int(off))

    def writable(self, off: int, agent: str) -> Lease | None:
        """The lease at ``off`` if its holder may write it now (and, given an agent name, is that agent)."""
        lease = self._leases.get(off)
        if lease is None or lease.state not in ("idle", "closing") or (agent and lease.agent and agent != lease.agent):
            return None
        return lease

    @staticmethod
    def written(lease: Lease, seq: int) -> None:
        """A notification for ``lease`` (its ``seq``-th write) arrived: it holds a transfer now."""
        lease.seq = max(lease.seq, seq)
        lease.state = "busy" if lease.state == "idle" or lease.seq < lease.expect else "orphan"

    def release(self, off: int) -> int | None:
        """The transfer in the slot at ``off`` was released: the connection to credit, or None if the
        lease ended with it (given back or its sender gone)."""
        lease = self._leases[off]
        if lease.state == "busy":
            lease.state = "idle"
            return lease.cid
        self._unlease(off)
        return None

    def idle_of(self, cid: int) -> list[int]:
        """Offsets of the connection's idle leases (slots it may be writing right now)."""
        return [off for off, lease in self._leases.items() if lease.cid == cid and lease.state == "idle"]

    def peer_gone(self, cid: int) -> None:
        """The connection is gone: free its idle slots; its busy ones go when their transfers are released."""
        for off, lease in list(self._leases.items()):
            if lease.cid != cid:
                continue
            if lease.state == "idle":
                self._unlease(off)
            elif lease.state == "busy":
                lease.state = "orphan"

    def pending(self) -> int:
        """Leased slots a sender may be writing (idle, or given back with a notification on the way)."""
        return sum(1 for lease in self._leases.values() if lease.state in ("idle", "closing"))

    def sweep(self, now: float, ttl_s: float) -> None:
        """Free slots given back whose last notification never came within ``ttl_s``."""
        for off, lease in list(self._leases.items()):
            if lease.state == "closing" and now - lease.t0 > ttl_s:
                self._unlease(off)

    def _unlease(self, off: int) -> None:
        self._leases.pop(off)
        self._allocator.free(off)
