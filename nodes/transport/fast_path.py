"""The fast path of a send over NIXL: registered arrays, written from where they are into a leased slot.

In the steady state a send of a registered array (or of a prepared group of
them, one notification for all) is what raw NIXL does plus a few
microseconds of Python: while the previous send of the same array moved its
bytes, its slot was set aside (no side-channel round trip) and its
notification and ticket were made (the ``Armed`` send); its WRITE into that
slot was prepared once and is re-posted with the notification. What every
send of one array shares is its ``Route``.

A WRITE is prepared per route and leased slot, which costs ~25 us on an H200
(more than the Python of a send). Never on a send's way once the route
repeats: a prepared array's (or group's) writes into every leased slot are
made at its first send and after its leases change (``eager``; not a pool's
runs, which may differ from send to send), and any route sent again makes
the next send's write while the bytes of this one move.
"""

from __future__ import annotations

import threading
from typing import Any

from . import memory
from .errors import TransportError
from .layout import encode_layout, pack
from .nixl_backend import Pairs, Peer, PreparedWrite
from .notice import Ticket, leased_notice, nixl_message, notice
from .slot_client import Reservation, SlotClient
from .sources import Sources

# Source arrays (or runs of a block pool) whose fast-path facts a sender keeps, the oldest dropped
# first; each holds up to one prepared NIXL WRITE per leased slot (at most 16).
MAX_ROUTES = 64

Source = memory.ArrayInfo | tuple[memory.ArrayInfo, ...]  # one array, or a prepared group of them


class Route:
    """What every in-place send of one registered array shares, worked out on its first send.

    It owns a prepared WRITE per leased slot it has written (made on first use,
    dropped when the leases change): a send re-posts one with its notification,
    as raw NIXL re-posts a prepared handle.
    """

    __slots__ = ("nbytes", "count", "pairs", "layout", "local", "generation", "heads", "writes", "sends")

    def __init__(self, nbytes: int, count: int, pairs: Pairs, layout: list, local: tuple[str, int]) -> None:
        self.nbytes, self.count, self.pairs, self.layout, self.local = nbytes, count, pairs, layout, local
        self.generation = -1  # lease generation the writes and heads below are for
        self.heads: dict[int, bytes] = {}  # leased slot offset -> its notifications' fixed start
        self.writes: dict[int, PreparedWrite] = {}  # leased slot offset -> prepared NIXL WRITE into it
        self.sends = 0  # sends so far: a route sent again gets its next write made while the bytes move


class Armed:
    """The next send of the array sent last, ready to post (made while that send's bytes moved).

    A sender keeps one and refills it each time it arms a send: six stores
    cost what building a tuple does, a new record per send ~0.1 us more.
    """

    __slots__ = ("info", "route", "slot", "notif", "ticket", "write")

    info: Source  # the array it sends
    route: Route
    slot: Reservation  # the leased slot set aside for it
    notif: bytes  # its NIXL notification
    ticket: Ticket
    write: PreparedWrite | None  # the route's write into that slot, if made yet (else made at the send)


class FastPath:
    """One sender's in-place sends: its routes, and the send armed while the last one's bytes move.

    Args:
        lock: the sender's lock (one send at a time: slots and prepared writes are shared).
        slots: the sender's connection to the receiver (its leases).
        peer: the receiver our WRITEs go to.
        sources: the sender's registered source memory.
    """

    def __init__(self, lock: threading.Lock, slots: SlotClient, peer: Peer, sources: Sources) -> None:
        self._lock, self._slots, self._sources = lock, slots, sources
        self._agent, self._remote, self._base, self._remote_mem = peer
        self.routes: dict[Source, Route] = {}  # per registered source array (or group) sent in place
        self._armed: Armed | None = None  # the send armed, if any: ``_next`` when set
        self._next = Armed()
        # the send whose bytes are moving (what ``_while_in_flight`` arms the next send of)
        self._flying_info: Source | None = None
        self._flying_route: Route | None = None

    def send(
        self, info: Source, deadline: float, xfer_id: str | None, crc_of: Any = None, eager: bool = False
    ) -> Ticket | None:
        """Send ``info``'s array (or a tuple of arrays' infos: one notification for all) in
        place: what raw NIXL does per transfer (re-post a prepared handle) plus the lease and
        the notification.

        Returns None when the array or the receiver needs the general path (not
        registered, small enough to stage, no lease). In a stream of sends of one
        array, the slot, the notification and the ticket were made while the
        previous send's bytes moved (``_while_in_flight``), so only the post is left.
        ``crc_of``: the arrays themselves (a list) when the notification is to carry their CRC.
        ``eager``: the array is prepared (see the module's docstring).

        Raises:
            TransportTimeout: no leased slot came free, or the write did not end, by ``deadline``.
            TransportError: the write failed (the connection is dropped: the receiver frees our leases).
        """
        with self._lock:
            armed, self._armed = self._armed, None
            slots = self._slots
            if (
                armed is not None
                and xfer_id is None
                and crc_of is None
                and (armed.info is info or armed.info == info)
                and slots.take_ready(armed.slot)  # so the leases, and the route's writes, are as when armed
            ):
                route = armed.route
                slot = armed.slot
                notif = armed.notif
                ticket = armed.ticket
                write = armed.write
            else:
                route = self.routes.get(info)
                if route is None:
                    route = self._route(info)
                    if route is None:
                        return None
                    self.routes[info] = route
                slot = slots.lease(route.nbytes, deadline, xfer_id)
                if slot is None:
                    return None
                ticket, notif, write = Ticket(slot.xfer_id, route.nbytes, route.count), None, None
            route.sends += 1
            try:
                if notif is None:
                    self._drop_stale_writes(route)
                    if crc_of is not None:
                        crc = memory.crc32(crc_of)
                        notif = nixl_message(notice(slot, route.nbytes, route.layout, crc, leased=True))
                    else:
                        notif = leased_notice(slot, route)
                if write is None:
                    if eager and len(route.writes) < slots.lease_count:
                        self._make_writes(route)
                    write = self._write_into(route, slot.offset)
                self._flying_info, self._flying_route = info, route
                self._agent.post(write, notif, deadline, self._remote, self._while_in_flight)
            except TransportError:
                self._release_writes(route)
                route.generation = -1
                slots.drop()  # the receiver frees our leases when we hang up
                raise
            return ticket

    def _drop_stale_writes(self, route: Route) -> None:
        """Drop the route's prepared WRITEs if the leases changed since they were made."""
        if route.generation != self._slots.generation:
            self._release_writes(route)
            route.generation = self._slots.generation

    def _make_writes(self, route: Route) -> None:
        """A prepared route's WRITE into every leased slot, made at once (~25 us each on an H200)."""
        for offset in self._slots.leased_offsets():
            self._write_into(route, offset)

    def _write_into(self, route: Route, offset: int) -> PreparedWrite:
        """The route's prepared WRITE into the leased slot at ``offset``, made on the slot's first
        use (a new array costs one NIXL request, not one per lease)."""
        write = route.writes.get(offset)
        if write is None:
            write = route.writes[offset] = self._agent.make_write(
                self._remote, route.pairs, self._base + offset, route.local, self._remote_mem
            )
        return write

    def _while_in_flight(self) -> None:
        """While a send's bytes move: set the next slot aside, then make the same array's next
        send ready (slot, notification, ticket, and for a route sent before, its write) so
        that send only posts."""
        slots = self._slots
        slots.collect_credits()
        ready = slots.ready
        route = self._flying_route
        if ready is not None and route.generation == slots.generation:
            ticket = memory.new_tuple(Ticket, (ready.xfer_id, route.nbytes, route.count))
            armed = self._next
            armed.info = self._flying_info
            armed.route = route
            armed.slot = ready
            armed.notif = leased_notice(ready, route)
            armed.ticket = ticket
            write = route.writes.get(ready.offset)
            if write is None and route.sends > 1:
                # a route that repeats: make it now, while the bytes move, not on the next send's way
                # (a route sent once may never be again: its write waits for that send)
                try:
                    write = self._write_into(route, ready.offset)
                except TransportError:
                    write = None  # the send makes it, and reports what NIXL says then
            armed.write = write
            self._armed = armed

    def _route(self, info: Source) -> Route | None:
        """What every in-place send of this array (or group) shares; None if it goes the general
        way (caller holds the lock)."""
        infos = (info,) if type(info) is memory.ArrayInfo else info
        in_place = self._sources.in_place
        if not all(in_place(i) for i in infos) or len({(i.mem, i.device) for i in infos}) != 1:
            return None
        if len(self.routes) >= MAX_ROUTES:
            self._release_writes(self.routes.pop(next(iter(self.routes))))
        offsets, total = pack([i.nbytes for i in infos])
        pairs = [(i.addr, off, i.nbytes) for i, off in zip(infos, offsets)]
        layout = encode_layout([(i.dtype, i.shape, i.nbytes) for i in infos])
        return Route(total, len(infos), pairs, layout, (infos[0].mem, infos[0].device))

    def _release_writes(self, route: Route) -> None:
        for write in route.writes.values():
            self._agent.release(write)
        route.writes.clear()
        route.heads.clear()
        self._armed = None

    def forget_routes(self) -> None:
        """Drop every route and its prepared writes (before registrations change; caller holds the lock)."""
        for route in self.routes.values():
            self._release_writes(route)
        self.routes.clear()
