"""The receiver's book of its region: every transfer's slot and state, and the leased slots.

A transfer's slot is reserved for it (the fallbacks, and NIXL senders whose
lease does not fit) or is one of its sender's leased slots (``lease_book``).
States of a transfer::

    spare (reserved ahead, unused) -> alloc (in use) -> done -> taken -> freed
                      or failed (reported to ``recv``) / abandoned (its ``recv`` gave up)

One condition (``cond``) guards it all: the receiver's ``recv`` waits on it,
its side channel's threads and NIXL notifications change it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import TransportError
from .lease_book import LeaseBook
from .slots import SlotAllocator

log = logging.getLogger(__name__)

_FORGET_IDS = 4096  # ids of transfers a recv gave up on, remembered to drop their late notifications


@dataclass
class Xfer:
    """One transfer's slot and state (see the module docstring)."""

    off: int
    n: int
    conn: int
    t0: float
    state: str = "alloc"
    meta: dict | None = None
    error: TransportError | None = None
    lease: bool = False  # the slot is a sender's lease: releasing it credits the sender


class Transfers:
    """Transfers by id, the region's allocator and its leases.

    Args:
        receiver_id: the receiver's id (for messages).
        capacity: the region's size.
        slot_ttl_s: a slot not released this long after its reservation is reclaimed.
        credit: ``credit(connection id, offset)`` tells a sender its leased slot is free again.
    """

    def __init__(self, receiver_id: str, capacity: int, slot_ttl_s: float, credit: Callable[[int, int], None]) -> None:
        self.cond = threading.Condition()
        self._id, self._capacity, self._ttl_s, self._credit = receiver_id, capacity, slot_ttl_s, credit
        self._xfers: dict[str, Xfer] = {}
        self._events: collections.deque[str] = collections.deque()  # ids that finished or failed, in order
        self._allocator = SlotAllocator(capacity)
        self.leases = LeaseBook(self._allocator, capacity)
        self._forgotten: collections.OrderedDict[str, None] = collections.OrderedDict()

    # -- the consumer's side (caller holds ``cond``) -----------------------------

    def next_event(self, xfer_id: str | None) -> str | None:
        """The id of a finished or failed transfer: ``xfer_id``'s, or any (None)."""
        if xfer_id is None:
            while self._events:
                xid = self._events.popleft()
                if xid in self._xfers and self._xfers[xid].state in ("done", "failed"):
                    return xid
            return None
        x = self._xfers.get(xfer_id)
        if x is not None and x.state in ("done", "failed"):
            try:
                self._events.remove(xfer_id)
            except ValueError:
                pass
            return xfer_id
        return None

    def take(self, xid: str) -> Xfer:
        """Hand a finished transfer to its consumer.

        Raises:
            TransportError: it failed (the error it failed with).
        """
        x = self._xfers[xid]
        if x.state == "failed":
            del self._xfers[xid]
            raise x.error or TransportError(f"transfer {xid} failed")
        x.state = "taken"
        return x

    def give_up(self, xfer_id: str | None) -> None:
        """The consumer stopped waiting for ``xfer_id``: its late notification frees the slot."""
        x = self._xfers.get(xfer_id) if xfer_id else None
        if x is not None and x.state == "alloc":
            x.state = "abandoned"
        elif xfer_id and x is None:
            self._forget(xfer_id)

    def release(self, xid: str) -> None:
        """The consumer is done with a taken transfer: free its slot (takes ``cond``)."""
        with self.cond:
            if self._xfers.get(xid) is not None and self._xfers[xid].state == "taken":
                self._drop(xid)
                self.cond.notify_all()

    def pending(self) -> int:
        """Slots a sender may be writing: reserved transfers and leased slots not yet notified."""
        return sum(1 for x in self._xfers.values() if x.state == "alloc") + self.leases.pending()

    # -- notifications (caller holds ``cond``) ------------------------------------

    def complete(self, meta: dict, agent: str = "") -> None:
        """A sender's notification: the transfer it names has landed."""
        if meta.get("lease"):
            self._complete_lease(meta, agent)
            return
        x = self._xfers.get(meta.get("id", ""))
        if x is None or x.state not in ("alloc", "abandoned", "spare"):
            log.warning("edge receiver %s: notification for unknown transfer %s", self._id, meta.get("id"))
            return
        if x.state == "abandoned":
            self._drop(meta["id"])
            return
        if int(meta.get("n", -1)) > x.n:
            self._fail(
                meta["id"], TransportError(f"transfer {meta['id']}: {meta.get('n')} bytes announced, {x.n} reserved")
            )
            return
        x.state, x.meta = "done", meta
        self._events.append(meta["id"])
        self.cond.notify_all()

    def _complete_lease(self, meta: dict, agent: str) -> None:
        """A sender wrote one of its leased slots: the transfer is there."""
        xid, off, n = str(meta.get("id", "")), int(meta.get("off", -1)), int(meta.get("n", -1))
        lease = self.leases.writable(off, agent)
        if lease is None:
            log.warning("edge receiver %s: notification for slot %d that %s does not hold", self._id, off, agent)
            return
        if not 0 <= n <= lease.n or xid in self._xfers:
            log.warning("edge receiver %s: bad notification %s for slot %d (%d bytes)", self._id, xid, off, n)
            return
        self.leases.written(lease, int(meta.get("seq", 0)))
        self._xfers[xid] = Xfer(
            off=off, n=lease.n, conn=lease.cid, t0=time.monotonic(), state="done", meta=meta, lease=True
        )
        if xid in self._forgotten:  # its receiver gave up waiting: nobody will take it
            self._drop(xid)
            return
        self._events.append(xid)
        self.cond.notify_all()

    # -- a sender's requests (each takes ``cond``) ------------------------------------

    def reserve(self, xid: str, nbytes: int, cid: int, spare: bool = False) -> dict:
        """Reserve a slot for transfer ``xid`` of connection ``cid``: the side channel's reply."""
        if nbytes > self._capacity:
            return {"ok": False, "msg": self._too_big(nbytes)}
        with self.cond:
            self._sweep()
            if xid in self._xfers:
                return {"ok": False, "msg": f"transfer id {xid} already in use"}
            off = self._allocator.alloc(nbytes)
            if off is None:
                free = self._allocator.free_bytes
                return {"ok": False, "busy": True, "msg": f"receiver full ({free} of {self._capacity} bytes free)"}
            state = "spare" if spare else "alloc"
            self._xfers[xid] = Xfer(off=off, n=nbytes, conn=cid, t0=time.monotonic(), state=state)
        return {"ok": True, "off": off, "rx": self._id}

    def activate(self, xid: str | None, cid: int) -> None:
        """A sender starts writing into a slot it reserved ahead: it is now in flight."""
        if xid:
            with self.cond:
                x = self._xfers.get(xid)
                if x is not None and x.conn == cid and x.state == "spare":
                    x.state, x.t0 = "alloc", time.monotonic()

    def free_spare(self, xid: str, cid: int) -> None:
        """A sender gives back a slot it reserved ahead and did not use."""
        with self.cond:
            x = self._xfers.get(xid)
            if x is not None and x.conn == cid and x.state == "spare":
                self._drop(xid)

    def expecting(self, xid: str, cid: int, meta: dict) -> Xfer | str:
        """The transfer ``xid`` that connection ``cid`` reserved, if ``meta`` (its notification)
        fits its slot; else why not."""
        with self.cond:
            x = self._xfers.get(xid)
            if x is None or x.conn != cid or x.state not in ("alloc", "abandoned", "spare"):
                return f"transfer {xid} was not reserved on this connection"
            if int(meta["n"]) > x.n:
                return f"transfer {xid} announces {meta['n']} bytes, {x.n} reserved"
            return x

    def lease(self, cid: int, nbytes: int, count: int, agent: str) -> dict:
        """Lease up to ``count`` slots of ``nbytes`` to a sender: the side channel's reply."""
        if nbytes > self._capacity:
            return {"ok": False, "msg": self._too_big(nbytes)}
        with self.cond:
            self._sweep()
            offsets = self.leases.grant(cid, nbytes, count, agent)
        return {"ok": True, "offs": offsets, "rx": self._id}

    def give_back(self, cid: int, leases: list, *, free_now: bool) -> None:
        """A sender gives leases back (see ``LeaseBook.give_back``)."""
        with self.cond:
            self.leases.give_back(cid, leases, free_now=free_now, now=time.monotonic())

    def _too_big(self, nbytes: int) -> str:
        return f"{nbytes} bytes exceed the receiver's capacity_bytes={self._capacity}; create it larger"

    # -- a sender gone (caller holds ``cond``) ---------------------------------------

    def unfinished(self, cid: int) -> list[str]:
        """Reserved transfers of connection ``cid`` not notified yet."""
        return [
            xid
            for xid, x in self._xfers.items()
            if x.conn == cid and x.state in ("alloc", "abandoned", "spare") and not x.lease
        ]

    def peer_gone(self, cid: int, unfinished: list[str], lost_one: bool, why: str) -> None:
        """Connection ``cid`` is gone: fail its ``unfinished`` transfers, free its slots, and with
        ``lost_one`` report one lost transfer (it hung up while it may have been writing a leased slot)."""
        for xid in unfinished:
            if self._xfers[xid].state in ("abandoned", "spare"):
                self._drop(xid)
            else:
                self._fail(
                    xid,
                    TransportError(
                        f"edge receiver {self._id}: sender disconnected before transfer {xid} completed ({why})"
                    ),
                )
        self.leases.peer_gone(cid)
        if lost_one:
            lost = f"lost-{self._id}-{cid}"
            self._xfers[lost] = Xfer(off=-1, n=0, conn=cid, t0=time.monotonic(), state="failed")
            self._xfers[lost].error = TransportError(
                f"edge receiver {self._id}: a sender disconnected without closing ({why}); "
                "a transfer it was writing is lost"
            )
            self._events.append(lost)
            self.cond.notify_all()

    # -- slots ----------------------------------------------------------------------------

    def _fail(self, xid: str, error: TransportError) -> None:
        x = self._xfers[xid]
        self._free_slot(x)
        x.state, x.error = "failed", error
        self._events.append(xid)
        self.cond.notify_all()

    def _drop(self, xid: str) -> None:
        self._free_slot(self._xfers.pop(xid))

    def _free_slot(self, x: Xfer) -> None:
        """A transfer's slot is free: back to the allocator, or its lease back to the sender."""
        if x.off < 0:
            return
        if not x.lease:
            self._allocator.free(x.off)
            return
        cid = self.leases.release(x.off)
        if cid is not None:
            self._credit(cid, x.off)

    def _forget(self, xid: str) -> None:
        self._forgotten[xid] = None
        while len(self._forgotten) > _FORGET_IDS:
            self._forgotten.popitem(last=False)

    def _sweep(self) -> None:
        now = time.monotonic()
        self.leases.sweep(now, self._ttl_s)
        for xid, x in list(self._xfers.items()):
            if x.state in ("alloc", "abandoned", "done", "spare") and now - x.t0 > self._ttl_s:
                log.warning(
                    "edge receiver %s: reclaiming transfer %s (%s for %.0fs)", self._id, xid, x.state, now - x.t0
                )
                self._drop(xid)
