"""The receiving end: the public API (``TensorReceiver``, ``Received``).

One registered region, reused: each transfer lands in a slot of it, leased
to a NIXL sender or reserved per transfer (``transfers`` keeps that book,
``lease_book`` the leases); senders reach the receiver through its side
channel (``sidechannel_server``). A NIXL sender leases a few slots once; each
notification names the slot it wrote, and releasing that transfer pushes a
credit back to the sender (see ``slot_client``). Reservations per transfer
remain for the fallbacks and for senders whose lease does not fit.
"""

from __future__ import annotations

import base64
import collections
import logging
import time
import uuid

import orjson

from . import memory
from .config import requested_backend
from .errors import TransportError, TransportTimeout
from .fallback import close_mapping, create_segment, log_once, node_id
from .handle import EdgeHandle
from .layout import decode_layout, pack
from .nixl_backend import NixlUnavailable, process_agent
from .sidechannel_server import SideChannelServer
from .transfers import Transfers

log = logging.getLogger(__name__)

# Receivers of this process by id: NIXL notifications reach the process-wide
# agent, so whichever receiver polls hands the others theirs.
_RECEIVERS: dict[str, TensorReceiver] = {}
_POLL_MAX_S = 2.5e-4
_SPIN_S = 2e-4  # poll without sleeping this long first: a timed wait oversleeps by ~60 us, a GPU write takes tens


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

    def release(self) -> None:
        """Give the slot back to the receiver (idempotent)."""
        rx, self._rx = self._rx, None
        if rx is not None:
            self.arrays = []
            rx._transfers.release(self.xfer_id)

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
        self._transfers = Transfers(self.id, self.capacity, slot_ttl_s, credit=self._push_credit)
        self._cond = self._transfers.cond
        self._inbox: collections.deque[tuple[dict, str]] = collections.deque()  # (notification, sender agent)
        self._agent = self._shm = self._reg = None
        self.backend = self._open_region(requested_backend(backend))
        self._closed = False
        self._server = SideChannelServer(self, self._transfers, host, port, name=f"edge-rx-{self.id}")
        self._addr = (advertise_host or host, self._server.port)
        _RECEIVERS[self.id] = self

    # -- setup ---------------------------------------------------------------

    def _open_region(self, choice: str) -> str:
        if choice in ("auto", "nixl"):
            try:
                self._agent = process_agent(self.device if self.mem == "VRAM" else None)  # CUDA first
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
        transfers = self._transfers
        with self._cond:
            while True:
                self._pump()
                xid = transfers.next_event(xfer_id)
                if xid is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    transfers.give_up(xfer_id)
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
            x = transfers.take(xid)
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

    def pending(self) -> int:
        """Slots a sender may be writing: reserved transfers and leased slots not yet notified."""
        with self._cond:
            return self._transfers.pending()

    def _pump(self) -> None:
        """Deliver queued and new NIXL notifications (caller holds ``_cond``)."""
        transfers = self._transfers
        while self._inbox:
            transfers.complete(*self._inbox.popleft())
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
                transfers.complete(meta, agent)
            elif target is not None:
                target._inbox.append((meta, agent))

    # -- what the side channel needs -------------------------------------------------------

    def region_bytes(self, off: int, n: int) -> memoryview:
        """``n`` bytes of the (DRAM) region at ``off``: where a TCP sender's data goes."""
        return memoryview(self._region)[off : off + n]

    def _push_credit(self, cid: int, off: int) -> None:
        self._server.push_credit(cid, off)

    def peer_gone(self, cid: int, reason: str, graceful: bool) -> None:
        """Fail the sender's unfinished transfers once its last notification had time to land.

        A sender that hung up without saying goodbye may have been writing any
        of its idle leased slots: wait ``peer_grace_s`` for their
        notifications, then report one lost transfer to ``recv()``.
        """
        transfers = self._transfers
        deadline = time.monotonic() + (self.peer_grace_s if self._agent else 0.0)
        with self._cond:
            while True:
                self._pump()
                mine = transfers.unfinished(cid)
                idle = transfers.leases.idle_of(cid)
                if (not mine and (graceful or not idle)) or time.monotonic() >= deadline or self._closed:
                    break
                self._cond.wait(0.005)
            transfers.peer_gone(cid, mine, lost_one=bool(idle) and not graceful, why=reason)

    def close(self) -> None:
        """Stop the side channel and free the region (outstanding views become invalid)."""
        if self._closed:
            return
        self._closed = True
        _RECEIVERS.pop(self.id, None)
        self._server.close()
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
