"""The sending end: the public API (``TensorSender``, ``PreparedSend``).

A send takes one of two paths. The fast path (``fast_path``): one registered
array, or one run of consecutive blocks of a registered pool, over NIXL, is
written from where it is into a leased slot; in the steady state that is
what raw NIXL does plus a few microseconds of Python. The general path
(``general_path``): anything else, by any backend, with a slot per send and
small pieces staged or gathered first. Which source memory NIXL reads in
place is ``sources``'s business; the notification and the ticket are
``notice``'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import fast_path, memory
from .config import requested_backend
from .cuda_first import CURRENT_DEVICE
from .errors import TransportError
from .fallback import attach_segment, can_share_memory, close_mapping, log_once
from .fast_path import FastPath
from .general_path import GeneralPath
from .handle import EdgeHandle
from .layout import consecutive_start
from .nixl_backend import NixlUnavailable, Peer, process_agent
from .notice import Ticket
from .slot_client import Reservation, SlotClient
from .sources import STAGE_BELOW, Sources

__all__ = ["STAGE_BELOW", "PreparedSend", "Reservation", "TensorSender", "Ticket"]

log = logging.getLogger(__name__)


class PreparedSend:
    """One array (or a group of arrays) described once, sent again and again: whole, or a run
    of its blocks; what ``TensorSender.prepare`` returns."""

    __slots__ = ("_sender", "_arrays", "_info", "_runs")

    def __init__(self, sender: TensorSender, arrays: list[Any], info: fast_path.Source) -> None:
        self._sender, self._arrays, self._info = sender, arrays, info
        self._runs: dict[range, memory.ArrayInfo] = {}  # runs of blocks sent as a range -> their facts

    def send(self, *, timeout: float = 30.0, xfer_id: str | None = None, checksum: bool = False) -> Ticket:
        """Send the array (the group) as it is now, one transfer (see ``TensorSender.send``)."""
        sender = self._sender
        fast = sender._fast
        if fast is not None:
            deadline = time.monotonic() + timeout
            ticket = fast.send(self._info, deadline, xfer_id, self._arrays if checksum else None, eager=True)
            if ticket is not None:
                return ticket
        return sender.send(self._arrays, timeout=timeout, xfer_id=xfer_id, checksum=checksum)

    def send_blocks(
        self, block_ids: Sequence[int], *, timeout: float = 30.0, xfer_id: str | None = None, checksum: bool = False
    ) -> Ticket:
        """Send blocks of the prepared array, a pool (see ``TensorSender.send_blocks``): what a
        prepared descriptor list is to raw NIXL. A run given as a ``range`` is worked out on its
        first send only.

        Raises:
            TransportError: the prepared send is a group of arrays, or see ``TensorSender.send_blocks``.
        """
        if type(self._info) is not memory.ArrayInfo:
            raise TransportError("send_blocks() needs one prepared pool, not a group of arrays; prepare(pool)")
        run = self._runs.get(block_ids) if type(block_ids) is range and not checksum else None
        if run is not None:
            # not eager: a pool's runs may differ from send to send (a run sent again gets its
            # next write made while its bytes move, as any route does)
            ticket = self._sender._fast.send(run, time.monotonic() + timeout, xfer_id)
            if ticket is not None:
                return ticket
        return self._sender._send_blocks(self._arrays[0], self._info, block_ids, timeout, xfer_id, checksum, self._runs)


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
        self._stage_below = stage_below
        self._slots = SlotClient(handle.host, handle.port, handle.capacity, connect_timeout, mem=handle.mem)
        self._shm = self._shm_view = None
        self._sources: Sources | None = None
        self._fast: FastPath | None = None  # NIXL only
        self._lock = threading.Lock()  # one send at a time: slots, staging and prepared transfers are shared
        self.backend = self._pick(requested_backend(backend))
        if self.backend == "nixl":
            self._slots.agent = self._agent.name
            self._sources = Sources(self._agent, stage_below)
            peer = Peer(self._agent, self._remote, handle.base, (handle.mem, handle.device))
            self._fast = FastPath(self._lock, self._slots, peer, self._sources)
            self._general = GeneralPath("nixl", self._slots, self._sources, peer)
        else:
            self._general = GeneralPath(self.backend, self._slots, shm_view=self._shm_view)

    def _pick(self, choice: str) -> str:
        h = self.handle
        if choice in ("auto", "nixl") and h.backend == "nixl":
            try:
                # CUDA first if the receiver's region is VRAM (UCX maps it in this process)
                gpu = CURRENT_DEVICE if h.mem == "VRAM" else None
                self._agent = process_agent(gpu)
            except NixlUnavailable as exc:
                if choice == "nixl" or h.mem != "DRAM":
                    raise TransportError(f"the receiver speaks NIXL but this process cannot: {exc}") from exc
                log_once(str(exc), "TCP")
                return "tcp"
            # A receiver in this very process is reached by loopback under our own name.
            local = h.agent == self._agent.name
            self._remote = h.agent if local else self._agent.add_remote(h.nixl_metadata(), gpu)
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
            raise TransportError(
                f"backend 'shm' forced, but the receiver ({h.backend}, node {h.node}) is not shareable from here"
            )
        if h.mem != "DRAM":
            raise TransportError("the receiver's region is in VRAM; only NIXL can write it")
        return "tcp"

    @property
    def stage_below(self) -> int | None:
        """Runs shorter than this are staged (None: per memory kind, ``STAGE_BELOW``)."""
        return self._stage_below

    @stage_below.setter
    def stage_below(self, value: int | None) -> None:
        self._stage_below = value
        if self._sources is not None:
            self._sources.stage_below = value

    # -- registration ----------------------------------------------------------

    def register(self, array: Any) -> None:
        """Register a source buffer once so later sends from it are zero-copy (NIXL only).

        Registering the same buffer again is a no-op.
        """
        if self._sources is None:
            return
        info = memory.describe(array, "registered array")
        with self._lock:
            if self._sources.is_registered(info):
                return
            self._fast.forget_routes()
            self._sources.register(info)

    def unregister(self, array: Any) -> None:
        """Undo ``register`` for this array (no-op if it was not registered)."""
        if self._sources is None:
            return
        addr = memory.describe(array, "registered array").addr
        with self._lock:
            self._fast.forget_routes()
            self._sources.unregister(addr)

    # -- sending ---------------------------------------------------------------

    def send(
        self, arrays: Sequence[Any], *, timeout: float = 30.0, xfer_id: str | None = None, checksum: bool = False
    ) -> Ticket:
        """Move ``arrays`` into the receiver; returns once they are there and it was notified.

        A buffer sent again and again goes faster through ``prepare``: looking
        at a GPU tensor's address, shape and dtype costs several us per send.

        Args:
            arrays: numpy arrays, torch tensors or bytes (C-contiguous).
            timeout: seconds for the whole transfer, reservation included.
            xfer_id: transfer id (default: random).
            checksum: add a CRC-32 the receiver verifies. Off by default: zlib's
                CRC runs at ~3.5 GB/s per side in host memory, and GPU arrays are
                first copied to the host, so 1 GiB costs ~0.3-0.5 s each side
                against ~1 ms to move it.

        Returns:
            The ticket the receiver's ``recv`` takes.

        Raises:
            TransportTimeout: the receiver stayed full or silent past the deadline.
            TransportError: the receiver refused or vanished.
        """
        deadline = time.monotonic() + timeout
        fast = self._fast
        if len(arrays) == 1 and fast is not None:
            info = memory.describe(arrays[0], "array 0")
            ticket = fast.send(info, deadline, xfer_id, arrays if checksum else None)
            if ticket is not None:
                return ticket
            infos = [info]
        else:
            infos = [memory.describe(a, f"array {i}") for i, a in enumerate(arrays)]
        crc = memory.crc32(arrays) if checksum else None
        with self._lock:
            return self._general.send_arrays(arrays, infos, crc, deadline, xfer_id)

    def prepare(self, array: Any) -> PreparedSend:
        """Describe ``array`` once for sends of it again and again (a KV pool, an output buffer).

        What a prepared transfer handle is to raw NIXL: each ``send()`` (or
        ``send_blocks(ids)`` of a block pool) of the result skips looking at
        the array. Register the array first for the zero-copy path; it must
        keep its storage, shape and dtype while prepared. Its NIXL WRITEs into
        the receiver's leased slots are made at its first send (and again when
        the leases change), not one on each slot's first use.

        A list or tuple of arrays is a group: each ``send()`` moves all of them
        as one transfer (one post, one notification, one ticket of
        ``count=len(arrays)``), in place when each is registered and as big as
        ``stage_below``.

        Raises:
            TransportError: not a contiguous array (or an empty group).
        """
        if isinstance(array, (list, tuple)):
            if not array:
                raise TransportError("prepare() got an empty group; pass an array or a non-empty list of arrays")
            group = tuple(memory.describe(a, f"prepared array {i}") for i, a in enumerate(array))
            return PreparedSend(self, list(array), group)
        return PreparedSend(self, [array], memory.describe(array, "prepared array"))

    def send_blocks(
        self,
        pool: Any,
        block_ids: Sequence[int],
        *,
        timeout: float = 30.0,
        xfer_id: str | None = None,
        checksum: bool = False,
    ) -> Ticket:
        """Send ``pool[block_ids]``: many equal blocks of one pool, vectorized.

        The receiver gets one array of shape ``(len(block_ids), *pool.shape[1:])``.
        One run of consecutive ids is written from where it is (the fast path
        of a registered array; a ``range`` says it is one without the ids
        being looked at). Otherwise runs of consecutive ids become one
        descriptor each; if any run is shorter than ``stage_below`` bytes, all
        blocks are gathered with one op (``np.take`` / ``index_select``) into
        staging and go as one descriptor. Register ``pool`` once with
        ``register``; ``prepare(pool).send_blocks(ids)`` also skips looking
        at the pool on each send.

        Raises:
            TransportError: an id is out of range, or see ``send``.
        """
        return self._send_blocks(pool, memory.describe(pool, "block pool"), block_ids, timeout, xfer_id, checksum)

    def _send_blocks(
        self,
        pool: Any,
        info: memory.ArrayInfo,
        block_ids: Any,
        timeout: float,
        xfer_id: str | None,
        checksum: bool,
        runs: dict[range, memory.ArrayInfo] | None = None,
    ) -> Ticket:
        """``send_blocks`` of a described pool; ``runs``: a prepared pool's runs sent as ranges."""
        deadline = time.monotonic() + timeout
        nblocks = info.shape[0] if info.shape else 0
        if type(block_ids) is range and block_ids.step == 1 and 0 <= block_ids.start < block_ids.stop <= nblocks:
            first, count, ids = block_ids.start, len(block_ids), None  # consecutive by construction: not looked at
        else:
            ids = block_ids if _is_id_vector(block_ids) else np.ascontiguousarray(block_ids, np.int64).reshape(-1)
            first, count = consecutive_start(ids, nblocks), ids.size
            if first is None and (count == 0 or nblocks == 0 or ids.min() < 0 or ids.max() >= nblocks):
                raise TransportError(
                    f"block ids must be non-empty and within [0, {nblocks}) of the pool's first dimension"
                )
        block = info.nbytes // nblocks
        shape = (count, *info.shape[1:])
        fast = self._fast
        if first is not None and fast is not None:
            # One run of consecutive blocks is one array: the fast path of a registered array.
            run = memory.new_tuple(
                memory.ArrayInfo, (info.addr + first * block, count * block, info.dtype, shape, info.mem, info.device)
            )
            if ids is None and runs is not None:  # a prepared pool's range: kept for its next send
                if len(runs) >= fast_path.MAX_ROUTES:
                    del runs[next(iter(runs))]
                runs[block_ids] = run
            crc_of = [pool[first : first + count]] if checksum else None  # the run itself: no gather
            ticket = fast.send(run, deadline, xfer_id, crc_of)
            if ticket is not None:
                return ticket
        if ids is None:
            ids = np.arange(first, first + count, dtype=np.int64)
        crc = memory.crc32([memory.take(pool, ids)]) if checksum else None
        with self._lock:
            return self._general.send_blocks(pool, info, ids, block, shape, crc, deadline, xfer_id)

    def reserve(self, nbytes: int, *, deadline: float, xfer_id: str | None = None) -> Reservation:
        """Ask the receiver for a slot of ``nbytes`` (see ``SlotClient.reserve``)."""
        with self._lock:
            return self._slots.reserve(nbytes, deadline=deadline, xfer_id=xfer_id)

    # -- connection ------------------------------------------------------------

    def close(self) -> None:
        """Say goodbye, hang up and drop registrations, staging and shared-memory mappings."""
        with self._lock:
            self._slots.close()
            if self._fast is not None:
                self._fast.forget_routes()
                self._sources.close()
            self._general.close()
            if self._shm is not None:
                self._shm_view = None
                close_mapping(self._shm)
                self._shm = None

    def __enter__(self) -> TensorSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_INT64 = np.dtype(np.int64)  # numpy keeps one per builtin type: ``is`` tells it (``==`` costs ~1 us cold)


def _is_id_vector(ids: Any) -> bool:
    """Already what ``send_blocks`` works on: a 1-D C-contiguous native int64 array (no conversion needed)."""
    return type(ids) is np.ndarray and ids.dtype is _INT64 and ids.ndim == 1 and ids.flags.c_contiguous
