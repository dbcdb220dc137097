"""The receiving end: one registered region, reused; slots leased to senders or handed out per transfer.

A NIXL sender leases a few slots once; each notification names the slot it
wrote, and releasing that transfer pushes a credit back to the sender (see
``slot_client``). Reservations per transfer remain for the fallbacks and for
senders whose lease does not fit.
"""

from __future__ import annotations

import base64
import collections
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import orjson

from . import memory
from .config import requested_backend
from .errors import TransportError, TransportTimeout
from .fallback import close_mapping, create_segment, log_once, node_id
from .handle import EdgeHandle
from .layout import decode_layout, pack
from .nixl_backend import NixlUnavailable, process_agent
from .sidechannel import recv_exact, recv_frame, send_frame
from .slots import SlotAllocator

log = logging.getLogger(__name__)

# Receivers of this process by id: NIXL notifications reach the process-wide
# agent, so whichever receiver polls hands the others theirs.
_RECEIVERS: dict[str, TensorReceiver] = {}
_POLL_MAX_S = 2.5e-4
_SPIN_S = 2e-4  # poll without sleeping this long first: a timed wait oversleeps by ~60 us, a GPU write takes tens
_FORGET_IDS = 4096  # ids of transfers a recv gave up on, remembered to drop their late notifications


@dataclass
class _Xfer:
    off: int
    n: int
    conn: int
    t0: float
    # spare (reserved ahead, unused) -> alloc (in use) -> done -> taken; or failed / abandoned
    state: str = "alloc"
    meta: dict | None = None
    error: TransportError | None = None
    lease: bool = False  # the slot is a sender's lease: releasing it credits the sender


@dataclass
class _Lease:
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


class Received:
    """One finished transfer: typed views into the receiver's region.

    The views stay valid until ``release()`` (or leaving the ``with`` block);
    after that the slot may be overwritten by another transfer.
    """

    def __init__(self, rx: TensorReceiver, xfer_id: str, off: int, meta: dict) -> None:
        self.xfer_id = xfer_id
        self.nbytes = int(meta["n"])
        self.meta = meta
        specs = decode_layout(meta["layout"])
        offsets, _ = pack([nbytes for _, _, nbytes in specs])
        self.arrays = [memory.view(rx._region, off + o, d, shape) for o, (d, shape, _) in zip(offsets, specs)]
        self._rx: TensorReceiver | None = rx
        self._off = off

    def release(self) -> None:
        """Give the slot back to the receiver (idempotent)."""
        rx, self._rx = self._rx, None
        if rx is not None:
            self.arrays = []
            rx._release(self.xfer_id, self._off)

    def __enter__(self) -> Received:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown: the receiver may be half torn down
            pass


class TensorReceiver:
    """Owns a registered receive region and a small TCP side channel.

    Args:
        capacity_bytes: region size; the largest single transfer it accepts.
        backend: "auto" (NIXL, else shared memory + TCP), "nixl", "shm" or "tcp";
            "auto" defers to $SERVEGRAPH_TRANSPORT.
        host: interface the side channel binds.
        port: side-channel port (0 picks a free one).
        advertise_host: host senders should dial (defaults to ``host``).
        device: "cpu" or "cuda[:N]" (VRAM needs NIXL and torch).
        slot_ttl_s: a slot not released this long after its reservation is reclaimed.
        peer_grace_s: after a sender's connection drops, how long its in-flight
            notification may still arrive before its transfer is failed.

    Raises:
        TransportError: the requested backend cannot run here.
    """

    def __init__(
        self,
        capacity_bytes: int,
        *,
        backend: str = "auto",
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
        device: str = "cpu",
        slot_ttl_s: float = 300.0,
        peer_grace_s: float = 1.0,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.capacity = int(capacity_bytes)
        self.mem, self.device = (
            ("VRAM", int(device.partition(":")[2] or 0)) if device.startswith("cuda") else ("DRAM", 0)
        )
        self.slot_ttl_s, self.peer_grace_s = slot_ttl_s, peer_grace_s
        self._cond = threading.Condition()
        self._xfers: dict[str, _Xfer] = {}
        self._events: collections.deque[str] = collections.deque()
        self._inbox: collections.deque[tuple[dict, str]] = collections.deque()
        self._slots = SlotAllocator(self.capacity)
        self._leases: dict[int, _Lease] = {}  # by offset
        self._leased_bytes = 0
        self._forgotten: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._conn_locks: dict[int, threading.Lock] = {}
        self._graceful: set[int] = set()
        self._agent = self._shm = self._reg = None
        self.backend = self._open_region(requested_backend(backend))
        self._srv = socket.create_server((host, port))
        self._addr = (advertise_host or host, self._srv.getsockname()[1])
        self._conns: dict[int, socket.socket] = {}
        self._closed = False
        _RECEIVERS[self.id] = self
        threading.Thread(target=self._accept_loop, name=f"edge-rx-{self.id}", daemon=True).start()

    # -- setup ---------------------------------------------------------------

    def _open_region(self, choice: str) -> str:
        if choice in ("auto", "nixl"):
            try:
                self._agent = process_agent()
            except NixlUnavailable as exc:
                if choice == "nixl" or self.mem == "VRAM":
                    raise TransportError(f"NIXL backend requested but unavailable: {exc}") from exc
                log_once(str(exc), "shared memory + TCP")
                choice = "shm"
            else:
                self._region = memory.alloc(self.capacity, self.mem, self.device)
                self._region[:] = 0  # fault the pages in now, not during the first transfer
                self._reg = self._agent.register(memory.region_addr(self._region), self.capacity, self.mem, self.device)
                self._metadata = base64.b64encode(self._agent.metadata()).decode()
                return "nixl"
        if self.mem == "VRAM":
            raise TransportError(f"backend {choice!r} cannot receive into VRAM; use backend='nixl' or device='cpu'")
        if choice == "shm":
            self._shm, self._region = create_segment(self.capacity)
        else:
            self._region = memory.alloc(self.capacity, "DRAM", 0)
        self._region[:] = 0
        return choice

    def handle(self) -> EdgeHandle:
        """The address senders need (put ``.to_dict()`` in JSON or ``.to_b64()`` in a header)."""
        common = dict(
            host=self._addr[0],
            port=self._addr[1],
            node=node_id(),
            capacity=self.capacity,
            mem=self.mem,
            device=self.device,
        )
        if self.backend == "nixl":
            return EdgeHandle(
                backend="nixl",
                agent=self._agent.name,
                metadata=self._metadata,
                base=memory.region_addr(self._region),
                **common,
            )
        if self.backend == "shm":
            return EdgeHandle(backend="shm", shm_name=self._shm.name, **common)
        return EdgeHandle(backend="tcp", **common)

    # -- receiving -----------------------------------------------------------

    def recv(self, xfer_id: str | None = None, *, timeout: float = 30.0, copy: bool = False) -> Received:
        """Wait for a transfer to land.

        Args:
            xfer_id: the id from the sender's ``Ticket``; None takes the next
                finished (or failed) transfer.
            timeout: seconds before giving up.
            copy: return owned copies and release the slot at once.

        Returns:
            The transfer's arrays (views into the region unless ``copy``).

        Raises:
            TransportTimeout: nothing arrived in time (the slot is reclaimed
                once the sender disconnects or its TTL passes).
            TransportError: the sender died mid-transfer or the data is corrupt.
        """
        deadline = time.monotonic() + timeout
        spin_until = time.monotonic() + _SPIN_S if self._agent else 0.0
        poll = 2e-5
        with self._cond:
            while True:
                self._pump()
                xid = self._next_event(xfer_id)
                if xid is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    x = self._xfers.get(xfer_id) if xfer_id else None
                    if x is not None and x.state == "alloc":
                        x.state = "abandoned"
                    elif xfer_id and x is None:
                        self._forget(xfer_id)
                    what = f"transfer {xfer_id}" if xfer_id else "any transfer"
                    raise TransportTimeout(
                        f"edge receiver {self.id}: no {what} within {timeout:.1f}s; is the sender alive?"
                    )
                if time.monotonic() < spin_until:
                    self._cond.release()  # let other threads (the side channel) in
                    time.sleep(0)
                    self._cond.acquire()
                    continue
                self._cond.wait(min(poll, remaining) if self._agent else remaining)
                poll = min(poll * 2, _POLL_MAX_S)
            x = self._xfers[xid]
            if x.state == "failed":
                del self._xfers[xid]
                raise x.error or TransportError(f"transfer {xid} failed")
            x.state = "taken"
        received = Received(self, xid, x.off, x.meta or {})
        self._verify(received)
        if copy:
            owned = [a.clone() if hasattr(a, "clone") else a.copy() for a in received.arrays]
            received.release()
            received.arrays = owned
        return received

    def _verify(self, received: Received) -> None:
        meta = received.meta
        crc = meta.get("crc")
        if crc is not None and memory.crc32(received.arrays) != crc:
            received.release()
            raise TransportError(
                f"transfer {received.xfer_id}: checksum mismatch ({received.nbytes} bytes); data corrupted in flight"
            )

    def _next_event(self, xfer_id: str | None) -> str | None:
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

    def pending(self) -> int:
        """Slots a sender may be writing: reserved transfers and leased slots not yet notified."""
        with self._cond:
            reserved = sum(1 for x in self._xfers.values() if x.state == "alloc")
            return reserved + sum(1 for lease in self._leases.values() if lease.state in ("idle", "closing"))

    def _forget(self, xid: str) -> None:
        self._forgotten[xid] = None
        while len(self._forgotten) > _FORGET_IDS:
            self._forgotten.popitem(last=False)

    def _pump(self) -> None:
        """Deliver queued and new NIXL notifications (caller holds ``_cond``)."""
        while self._inbox:
            self._complete(*self._inbox.popleft())
        if self._agent is None:
            return
        for agent, raw in self._agent.poll_notifs():
            try:
                meta = orjson.loads(raw)
                target = _RECEIVERS.get(meta["rx"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("ignoring malformed edge notification %r", raw[:80])
                continue
            if target is self:
                self._complete(meta, agent)
            elif target is not None:
                target._inbox.append((meta, agent))

    def _complete(self, meta: dict, agent: str = "") -> None:
        if meta.get("lease"):
            self._complete_lease(meta, agent)
            return
        x = self._xfers.get(meta.get("id", ""))
        if x is None or x.state not in ("alloc", "abandoned", "spare"):
            log.warning("edge receiver %s: notification for unknown transfer %s", self.id, meta.get("id"))
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
        self._cond.notify_all()

    def _complete_lease(self, meta: dict, agent: str) -> None:
        """A sender wrote one of its leased slots: the transfer is there (caller holds ``_cond``)."""
        xid, off, n = str(meta.get("id", "")), int(meta.get("off", -1)), int(meta.get("n", -1))
        lease = self._leases.get(off)
        if lease is None or lease.state not in ("idle", "closing") or (agent and lease.agent and agent != lease.agent):
            log.warning("edge receiver %s: notification for slot %d that %s does not hold", self.id, off, agent)
            return
        if not 0 <= n <= lease.n or xid in self._xfers:
            log.warning("edge receiver %s: bad notification %s for slot %d (%d bytes)", self.id, xid, off, n)
            return
        lease.seq = max(lease.seq, int(meta.get("seq", 0)))
        lease.state = "busy" if lease.state == "idle" or lease.seq < lease.expect else "orphan"
        self._xfers[xid] = _Xfer(off=off, n=lease.n, conn=lease.cid, t0=time.monotonic(), state="done", meta=meta,
                                 lease=True)
        if xid in self._forgotten:  # its receiver gave up waiting: nobody will take it
            self._drop(xid)
            return
        self._events.append(xid)
        self._cond.notify_all()

    def _fail(self, xid: str, error: TransportError) -> None:
        x = self._xfers[xid]
        self._free_slot(x)
        x.state, x.error = "failed", error
        self._events.append(xid)
        self._cond.notify_all()

    def _drop(self, xid: str) -> None:
        self._free_slot(self._xfers.pop(xid))

    def _free_slot(self, x: _Xfer) -> None:
        """A transfer's slot is free: back to the allocator, or its lease back to the sender."""
        if x.off < 0:
            return
        if not x.lease:
            self._slots.free(x.off)
            return
        lease = self._leases[x.off]
        if lease.state == "busy":
            lease.state = "idle"
            self._send_credit(lease.cid, x.off)
        else:
            self._unlease(x.off)

    def _unlease(self, off: int) -> None:
        lease = self._leases.pop(off)
        self._leased_bytes -= lease.n
        self._slots.free(off)

    def _send_credit(self, cid: int, off: int) -> None:
        """Tell the sender its leased slot is free again (it reads credits when it runs out)."""
        conn, lock = self._conns.get(cid), self._conn_locks.get(cid)
        if conn is None or lock is None:
            return  # the sender is gone: _peer_gone frees its idle leases
        try:
            with lock:
                send_frame(conn, {"credit": off})
        except OSError:
            pass  # the connection is dying; _peer_gone cleans up

    def _release(self, xid: str, off: int) -> None:
        with self._cond:
            if self._xfers.get(xid) is not None and self._xfers[xid].state == "taken":
                self._drop(xid)
                self._cond.notify_all()

    # -- side channel --------------------------------------------------------

    def _accept_loop(self) -> None:
        cid = 0
        while not self._closed:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            cid += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn_locks[cid] = threading.Lock()
            self._conns[cid] = conn
            threading.Thread(target=self._serve, args=(conn, cid), name=f"edge-rx-{self.id}-{cid}", daemon=True).start()

    def _serve(self, conn: socket.socket, cid: int) -> None:
        reason = "connection closed"
        try:
            lock = self._conn_locks[cid]
            while True:
                header = recv_frame(conn)
                reply = self._handle_op(conn, cid, header)
                with lock:
                    send_frame(conn, reply)
        except (OSError, ValueError, TransportError) as exc:
            reason = str(exc) or type(exc).__name__
        finally:
            with self._cond:
                self._conns.pop(cid, None)
                self._conn_locks.pop(cid, None)
            conn.close()
            self._peer_gone(cid, reason)

    def _handle_op(self, conn: socket.socket, cid: int, header: dict) -> dict:
        op, xid = header.get("op"), str(header.get("id", ""))
        if op == "alloc":
            self._activate(header.get("activate"), cid)
            if not xid:  # activation only
                return {"ok": True}
            return self._alloc(xid, int(header["n"]), cid, spare=bool(header.get("spare")))
        if op == "lease":
            return self._lease(cid, int(header["n"]), int(header.get("count", 1)), str(header.get("agent", "")))
        if op in ("unlease", "bye"):
            with self._cond:
                if op == "bye":
                    self._graceful.add(cid)
                self._give_back(cid, header.get("leases") or (), free_now=op == "unlease")
            return {"ok": True}
        if op == "free":
            with self._cond:
                x = self._xfers.get(xid)
                if x is not None and x.conn == cid and x.state == "spare":
                    self._drop(xid)
            return {"ok": True}
        if op in ("data", "notify"):
            meta = header["meta"]
            with self._cond:
                x = self._xfers.get(xid)
                if x is None or x.conn != cid or x.state not in ("alloc", "abandoned", "spare"):
                    return {"ok": False, "msg": f"transfer {xid} was not reserved on this connection"}
                if int(meta["n"]) > x.n:
                    return {"ok": False, "msg": f"transfer {xid} announces {meta['n']} bytes, {x.n} reserved"}
            if op == "data":
                if self.mem != "DRAM":
                    return {"ok": False, "msg": "this receiver's region is in VRAM; send over NIXL"}
                recv_exact(conn, memoryview(self._region)[x.off : x.off + int(meta["n"])])
            with self._cond:
                self._complete(meta)
            return {"ok": True}
        return {"ok": False, "msg": f"unknown side-channel op {op!r}"}

    def _activate(self, xid: str | None, cid: int) -> None:
        """A sender starts writing into a slot it reserved ahead: it is now in flight."""
        if xid:
            with self._cond:
                x = self._xfers.get(xid)
                if x is not None and x.conn == cid and x.state == "spare":
                    x.state, x.t0 = "alloc", time.monotonic()

    def _alloc(self, xid: str, nbytes: int, cid: int, spare: bool = False) -> dict:
        if nbytes > self.capacity:
            return {
                "ok": False,
                "msg": f"{nbytes} bytes exceed the receiver's capacity_bytes={self.capacity}; create it larger",
            }
        with self._cond:
            self._sweep()
            if xid in self._xfers:
                return {"ok": False, "msg": f"transfer id {xid} already in use"}
            off = self._slots.alloc(nbytes)
            if off is None:
                return {
                    "ok": False,
                    "busy": True,
                    "msg": f"receiver full ({self._slots.free_bytes} of {self.capacity} bytes free)",
                }
            self._xfers[xid] = _Xfer(
                off=off, n=nbytes, conn=cid, t0=time.monotonic(), state="spare" if spare else "alloc"
            )
        return {"ok": True, "off": off, "rx": self.id}

    def _give_back(self, cid: int, leases: list, *, free_now: bool) -> None:
        """A sender gives leases back, each with the writes it made: wait for notifications not yet seen."""
        now = time.monotonic()
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

    def _lease(self, cid: int, nbytes: int, count: int, agent: str) -> dict:
        """Lease up to ``count`` slots of ``nbytes`` to a sender; all leases share half the region."""
        if nbytes > self.capacity:
            return {
                "ok": False,
                "msg": f"{nbytes} bytes exceed the receiver's capacity_bytes={self.capacity}; create it larger",
            }
        offsets: list[int] = []
        with self._cond:
            self._sweep()
            while len(offsets) < count and self._leased_bytes + nbytes <= self.capacity // 2:
                off = self._slots.alloc(nbytes)
                if off is None:
                    break
                self._leases[off] = _Lease(cid=cid, n=nbytes, agent=agent)
                self._leased_bytes += nbytes
                offsets.append(off)
        return {"ok": True, "offs": offsets, "rx": self.id}

    def _sweep(self) -> None:
        now = time.monotonic()
        for off, lease in list(self._leases.items()):
            if lease.state == "closing" and now - lease.t0 > self.slot_ttl_s:
                self._unlease(off)
        for xid, x in list(self._xfers.items()):
            if x.state in ("alloc", "abandoned", "done", "spare") and now - x.t0 > self.slot_ttl_s:
                log.warning(
                    "edge receiver %s: reclaiming transfer %s (%s for %.0fs)", self.id, xid, x.state, now - x.t0
                )
                self._drop(xid)

    def _peer_gone(self, cid: int, reason: str) -> None:
        """Fail the sender's unfinished transfers once its last notification had time to land.

        A sender that hung up without saying goodbye may have been writing any
        of its idle leased slots: wait ``peer_grace_s`` for their
        notifications, then report one lost transfer to ``recv()``.
        """
        graceful = cid in self._graceful
        deadline = time.monotonic() + (self.peer_grace_s if self._agent else 0.0)
        with self._cond:
            while True:
                self._pump()
                mine = [
                    xid
                    for xid, x in self._xfers.items()
                    if x.conn == cid and x.state in ("alloc", "abandoned", "spare") and not x.lease
                ]
                idle = [off for off, lease in self._leases.items() if lease.cid == cid and lease.state == "idle"]
                if (not mine and (graceful or not idle)) or time.monotonic() >= deadline or self._closed:
                    break
                self._cond.wait(0.005)
            for xid in mine:
                if self._xfers[xid].state in ("abandoned", "spare"):
                    self._drop(xid)
                else:
                    self._fail(
                        xid,
                        TransportError(
                            f"edge receiver {self.id}: sender disconnected before transfer {xid} completed ({reason})"
                        ),
                    )
            for off, lease in list(self._leases.items()):
                if lease.cid != cid:
                    continue
                if lease.state == "idle":
                    self._unlease(off)
                elif lease.state == "busy":
                    lease.state = "orphan"
            if idle and not graceful:
                lost = f"lost-{self.id}-{cid}"
                self._xfers[lost] = _Xfer(off=-1, n=0, conn=cid, t0=time.monotonic(), state="failed")
                self._xfers[lost].error = TransportError(
                    f"edge receiver {self.id}: a sender disconnected without closing ({reason}); "
                    "a transfer it was writing is lost"
                )
                self._events.append(lost)
                self._cond.notify_all()
            self._graceful.discard(cid)

    def close(self) -> None:
        """Stop the side channel and free the region (outstanding views become invalid)."""
        if self._closed:
            return
        self._closed = True
        _RECEIVERS.pop(self.id, None)
        self._srv.close()
        for conn in list(self._conns.values()):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._reg is not None:
            self._agent.deregister(self._reg)
            self._reg = None
        if self._shm is not None:
            self._region = None
            close_mapping(self._shm)
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> TensorReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
