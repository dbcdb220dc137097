"""The sending end: reserve a slot, write the arrays into it, notify."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from . import memory
from .config import requested_backend
from .errors import TransportError, TransportTimeout
from .fallback import attach_segment, can_share_memory, log_once, release_view
from .handle import EdgeHandle
from .layout import Segment, coalesce, encode_layout, pack, plan_segments
from .nixl_backend import NOTIF_PREFIX, NixlUnavailable, process_agent
from .sidechannel import Connection

log = logging.getLogger(__name__)

# Below these sizes a run is copied into staging rather than given its own
# descriptor: ~15 us per descriptor vs the copy at memory bandwidth (measured:
# ENGINES.md "NIXL"; bench/nixl_edge.py).
STAGE_BELOW = {"DRAM": 256 << 10, "VRAM": 4 << 20}


@dataclass(frozen=True)
class Ticket:
    """What the receiving side needs to pick a transfer up: put ``to_dict()`` in JSON."""

    xfer_id: str
    nbytes: int
    count: int

    def to_dict(self) -> dict:
        """JSON-safe form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Ticket":
        """Parse ``to_dict()`` output.

        Raises:
            TransportError: fields missing.
        """
        try:
            return cls(str(data["xfer_id"]), int(data["nbytes"]), int(data["count"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TransportError(f"malformed edge ticket {data!r}: needs xfer_id, nbytes, count") from exc


@dataclass(frozen=True)
class Reservation:
    """A slot the receiver set aside for one transfer."""

    xfer_id: str
    offset: int
    nbytes: int
    receiver_id: str


class TensorSender:
    """Writes lists of arrays into one receiver.

    Args:
        handle: the receiver's ``EdgeHandle`` (or its dict / base64 form).
        backend: "auto" follows the handle (NIXL, shared memory, else TCP);
            "nixl", "shm" or "tcp" force one; "auto" defers to $SERVEGRAPH_TRANSPORT.
        connect_timeout: seconds to reach the receiver's side channel.
        stage_below: runs shorter than this are copied into a registered
            staging region instead of getting their own descriptor
            (default per memory kind, ``STAGE_BELOW``).

    Raises:
        TransportError: the receiver is unreachable or the backend cannot run.
    """

    def __init__(
        self,
        handle: EdgeHandle | dict | str,
        *,
        backend: str = "auto",
        connect_timeout: float = 5.0,
        stage_below: int | None = None,
    ) -> None:
        if isinstance(handle, str):
            handle = EdgeHandle.from_b64(handle)
        elif isinstance(handle, dict):
            handle = EdgeHandle.from_dict(handle)
        self.handle = handle
        self.connect_timeout = connect_timeout
        self.stage_below = stage_below
        self._conn: Connection | None = Connection(handle.host, handle.port, connect_timeout)
        self._regs: list[tuple[int, int, Any]] = []
        self._staging: tuple[Any, Any, int] | None = None  # (region, registration, size)
        self._shm = self._shm_view = None
        self.backend = self._pick(requested_backend(backend))

    def _pick(self, choice: str) -> str:
        h = self.handle
        if choice in ("auto", "nixl") and h.backend == "nixl":
            try:
                self._agent = process_agent()
            except NixlUnavailable as exc:
                if choice == "nixl" or h.mem != "DRAM":
                    raise TransportError(f"the receiver speaks NIXL but this process cannot: {exc}") from exc
                log_once(str(exc), "TCP")
                return "tcp"
            self._remote = self._agent.add_remote(h.nixl_metadata())
            return "nixl"
        if choice == "nixl":
            raise TransportError(f"backend 'nixl' forced, but the receiver offers {h.backend!r}; start it with NIXL")
        if choice in ("auto", "shm") and h.backend == "shm" and can_share_memory(h.node):
            try:
                self._shm, self._shm_view = attach_segment(h.shm_name, h.capacity)
                return "shm"
            except OSError as exc:
                if choice == "shm":
                    raise TransportError(f"cannot attach the receiver's shared memory {h.shm_name}: {exc}") from exc
                log.warning("shared memory %s not attachable (%s); using TCP", h.shm_name, exc)
        if choice == "shm":
            raise TransportError(f"backend 'shm' forced, but the receiver ({h.backend}, node {h.node}) is not shareable from here")
        if h.mem != "DRAM":
            raise TransportError("the receiver's region is in VRAM; only NIXL can write it")
        return "tcp"

    # -- registration ----------------------------------------------------------

    def register(self, array: Any) -> None:
        """Register a source buffer once so later sends from it are zero-copy (NIXL only)."""
        if self.backend != "nixl":
            return
        info = memory.describe(array, "registered array")
        reg = self._agent.register(info.addr, info.nbytes, info.mem, info.device)
        self._regs.append((info.addr, info.addr + info.nbytes, reg))

    def _covered(self, addr: int, nbytes: int) -> bool:
        return any(lo <= addr and addr + nbytes <= hi for lo, hi, _ in self._regs)

    def _staging_region(self, nbytes: int, mem: str, device: int) -> Any:
        if self._staging is None or self._staging[2] < nbytes:
            if self._staging is not None:
                self._agent.deregister(self._staging[1])
            size = 1 << max(20, (nbytes - 1).bit_length())
            region = memory.alloc(size, mem, device)
            self._staging = (region, self._agent.register(memory.region_addr(region), size, mem, device), size)
        return self._staging[0]

    # -- sending ---------------------------------------------------------------

    def send(self, arrays: Sequence[Any], *, timeout: float = 30.0, xfer_id: str | None = None, checksum: bool = False) -> Ticket:
        """Move ``arrays`` into the receiver; returns once they are there and it was notified.

        Args:
            arrays: numpy arrays, torch tensors or bytes (C-contiguous).
            timeout: seconds for the whole transfer, reservation included.
            xfer_id: transfer id (default: random).
            checksum: add a CRC-32 the receiver verifies (costs ~0.5 s/GB each side).

        Returns:
            The ticket the receiver's ``recv`` takes.

        Raises:
            TransportTimeout: the receiver stayed full or silent past the deadline.
            TransportError: the receiver refused or vanished.
        """
        deadline = time.monotonic() + timeout
        infos = [memory.describe(a, f"array {i}") for i, a in enumerate(arrays)]
        offsets, total = pack([i.nbytes for i in infos])
        reservation = self.reserve(total, deadline=deadline, xfer_id=xfer_id)
        meta = {
            "rx": reservation.receiver_id,
            "id": reservation.xfer_id,
            "off": reservation.offset,
            "n": total,
            "layout": encode_layout([(i.dtype, i.shape, i.nbytes) for i in infos]),
            "crc": memory.crc32(arrays) if checksum else None,
        }
        try:
            if self.backend == "nixl":
                self._write_nixl(arrays, infos, offsets, reservation, meta, deadline)
            elif self.backend == "shm":
                for array, off in zip(arrays, offsets):
                    memory.copy_into(self._shm_view, reservation.offset + off, array)
                self._connection().request({"op": "notify", "id": reservation.xfer_id, "meta": meta}, deadline - time.monotonic())
            else:
                self._connection().request(
                    {"op": "data", "id": reservation.xfer_id, "meta": meta},
                    deadline - time.monotonic(),
                    payload=_tcp_payload(arrays, infos, offsets),
                )
        except TransportError:
            self._drop_connection()  # the receiver fails this transfer when we hang up
            raise
        return Ticket(reservation.xfer_id, total, len(infos))

    def reserve(self, nbytes: int, *, deadline: float, xfer_id: str | None = None) -> Reservation:
        """Ask the receiver for a slot, retrying while it is full until ``deadline`` (monotonic).

        Raises:
            TransportTimeout: still full at the deadline.
            TransportError: the transfer can never fit, or the receiver is gone.
        """
        xid = xfer_id or uuid.uuid4().hex
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportTimeout(f"edge receiver at {self.handle.host}:{self.handle.port} stayed full until the deadline")
            try:
                reply = self._connection().request({"op": "alloc", "id": xid, "n": nbytes}, remaining)
            except TransportError:
                self._drop_connection()
                raise
            if not reply.get("busy"):
                return Reservation(xid, int(reply["off"]), nbytes, str(reply["rx"]))
            time.sleep(min(0.005, max(remaining, 0)))

    def _write_nixl(self, arrays: Sequence[Any], infos: list, offsets: list[int], res: Reservation, meta: dict, deadline: float) -> None:
        mems = {(i.mem, i.device) for i in infos}
        if len(mems) != 1:
            raise TransportError(f"one send must come from one memory kind, got {sorted(mems)}; send DRAM and VRAM arrays separately")
        mem, device = mems.pop()
        stage_below = self.stage_below if self.stage_below is not None else STAGE_BELOW[mem]
        runs = coalesce([i.addr for i in infos], [i.nbytes for i in infos], offsets)
        temp: list[Any] = []

        def registered(addr: int, nbytes: int) -> bool:
            # Big unregistered runs are registered for this send only: cheaper
            # than copying them through staging.
            if not self._covered(addr, nbytes):
                temp.append(self._agent.register(addr, nbytes, mem, device))
            return True

        segments = plan_segments(runs, registered, stage_below)
        try:
            pairs = self._stage(arrays, offsets, segments, mem, device)
            base = self.handle.base + res.offset
            pairs = [(src, base + dst, n) for src, dst, n in pairs]
            notif = NOTIF_PREFIX + json.dumps(meta, separators=(",", ":")).encode()
            self._agent.write(self._remote, pairs, (mem, device), (self.handle.mem, self.handle.device), notif, deadline)
        finally:
            for reg in temp:
                self._agent.deregister(reg)

    def _stage(self, arrays: Sequence[Any], offsets: list[int], segments: list[Segment], mem: str, device: int) -> list[tuple[int, int, int]]:
        """Copy staged segments into staging; return (src address, slot offset, n) per descriptor."""
        staged = sum(s.n for s in segments if not s.direct)
        region = self._staging_region(staged, mem, device) if staged else None
        pairs, cursor = [], 0
        for seg in segments:
            if seg.direct:
                pairs.append((seg.src, seg.dst, seg.n))
                continue
            for index in seg.members:
                memory.copy_into(region, cursor + offsets[index] - seg.dst, arrays[index])
            pairs.append((memory.region_addr(region) + cursor, seg.dst, seg.n))
            cursor += seg.n
        if region is not None and mem == "VRAM":
            memory.synchronize(device)
        return pairs

    # -- connection ------------------------------------------------------------

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = Connection(self.handle.host, self.handle.port, self.connect_timeout)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Hang up and drop registrations, staging and shared-memory mappings."""
        self._drop_connection()
        if self.backend == "nixl":
            for _, _, reg in self._regs:
                self._agent.deregister(reg)
            if self._staging is not None:
                self._agent.deregister(self._staging[1])
        self._regs, self._staging = [], None
        if self._shm is not None:
            view, self._shm_view = self._shm_view, None
            release_view(self._shm, view)
            self._shm = None

    def __enter__(self) -> "TensorSender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tcp_payload(arrays: Sequence[Any], infos: list, offsets: list[int]) -> list[Any]:
    """The slot's bytes in order, alignment padding included."""
    parts, end = [], 0
    for array, info, off in zip(arrays, infos, offsets):
        if off > end:
            parts.append(bytes(off - end))
        parts.append(memory.host_bytes(array))
        end = off + info.nbytes
    return parts
