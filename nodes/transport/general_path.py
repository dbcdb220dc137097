"""The general path of a send: any arrays, any blocks, any backend.

A slot per send (a leased one over NIXL when one fits, else a reservation);
over NIXL the arrays are written from where they are when registered and big
enough, and the rest is copied (arrays) or gathered with one op (blocks) into
a registered staging region first, so that a scatter of small pieces still
goes out as few descriptors (see ``layout``). Over shared memory the bytes
are copied into the slot, over TCP they follow the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from . import memory
from .errors import TransportError
from .layout import Segment, block_runs, coalesce, encode_layout, pack, plan_segments
from .nixl_backend import Pairs, Peer, Registration
from .notice import Ticket, nixl_message, notice
from .slot_client import SlotClient
from .sources import Sources


class Staging(NamedTuple):
    """The registered region that small pieces are copied into before one WRITE."""

    region: Any
    registration: Registration
    size: int
    mem: str
    device: int


class Arrays(NamedTuple):
    """Arrays sent back to back in one slot, each at its offset in it (one per send: built with
    ``memory.new_tuple``, as ``Blocks``)."""

    arrays: Sequence[Any]
    infos: list[memory.ArrayInfo]
    offsets: list[int]

    def fill(self, region: Any, base: int) -> None:
        """Copy them into ``region`` at ``base`` (shared memory)."""
        for array, off in zip(self.arrays, self.offsets):
            memory.copy_into(region, base + off, array)

    def parts(self) -> list[Any]:
        """The slot's bytes in order, alignment padding included (TCP)."""
        parts, end = [], 0
        for array, info, off in zip(self.arrays, self.infos, self.offsets):
            if off > end:
                parts.append(bytes(off - end))
            parts.append(memory.host_bytes(array))
            end = off + info.nbytes
        return parts


class Blocks(NamedTuple):
    """Blocks ``ids`` (of ``block`` bytes each) of a pool, sent as one array."""

    pool: Any
    info: memory.ArrayInfo
    ids: np.ndarray
    block: int

    def fill(self, region: Any, base: int) -> None:
        """Gather them into ``region`` at ``base`` with one op (shared memory)."""
        memory.take_into(region, base, self.pool, self.ids)

    def parts(self) -> list[Any]:
        """Their bytes, gathered (TCP)."""
        return [memory.host_bytes(memory.take(self.pool, self.ids))]


class GeneralPath:
    """Sends that are not in place, by one sender's backend (caller holds the sender's lock).

    Args:
        backend: "nixl", "shm" or "tcp".
        slots: the sender's connection to the receiver.
        sources: the sender's registered source memory (NIXL only).
        peer: the receiver our WRITEs go to (NIXL only).
        shm_view: the receiver's shared-memory segment, mapped (shm only).
    """

    def __init__(
        self,
        backend: str,
        slots: SlotClient,
        sources: Sources | None = None,
        peer: Peer | None = None,
        shm_view: Any = None,
    ) -> None:
        self._backend, self._slots, self._sources, self._peer, self._shm_view = backend, slots, sources, peer, shm_view
        self._staging: Staging | None = None

    def send_arrays(
        self,
        arrays: Sequence[Any],
        infos: list[memory.ArrayInfo],
        crc: int | None,
        deadline: float,
        xfer_id: str | None,
    ) -> Ticket:
        """Move ``arrays`` (described by ``infos``) back to back into one slot."""
        offsets, total = pack([i.nbytes for i in infos])
        layout = encode_layout([(i.dtype, i.shape, i.nbytes) for i in infos])
        source = memory.new_tuple(Arrays, (arrays, infos, offsets))
        return self._deliver(source, total, layout, len(infos), crc, deadline, xfer_id)

    def send_blocks(
        self,
        pool: Any,
        info: memory.ArrayInfo,
        ids: np.ndarray,
        block: int,
        shape: tuple[int, ...],
        crc: int | None,
        deadline: float,
        xfer_id: str | None,
    ) -> Ticket:
        """Move ``pool[ids]`` (blocks of ``block`` bytes) into one slot as one array of ``shape``."""
        total = ids.size * block
        layout = encode_layout([(info.dtype, shape, total)])
        source = memory.new_tuple(Blocks, (pool, info, ids, block))
        return self._deliver(source, total, layout, 1, crc, deadline, xfer_id)

    def _deliver(
        self,
        source: Arrays | Blocks,
        total: int,
        layout: list,
        count: int,
        crc: int | None,
        deadline: float,
        xfer_id: str | None,
    ) -> Ticket:
        """Take a slot (over NIXL a leased one if one fits), move the bytes by this sender's backend, notify."""
        slots = self._slots
        reservation = slots.lease(total, deadline, xfer_id) if self._backend == "nixl" else None
        leased = reservation is not None
        if reservation is None:
            reservation = slots.slot(total, deadline, xfer_id)
        meta = notice(reservation, total, layout, crc, leased)
        try:
            if self._backend == "nixl":
                self._write(source, reservation.offset, meta, leased, deadline)
            elif self._backend == "shm":
                source.fill(self._shm_view, reservation.offset)
                slots.request({"op": "notify", "id": reservation.xfer_id, "meta": meta}, deadline)
            else:
                slots.request({"op": "data", "id": reservation.xfer_id, "meta": meta}, deadline, payload=source.parts())
        except TransportError:
            slots.drop()  # the receiver fails this transfer (and frees our leases) when we hang up
            raise
        return Ticket(reservation.xfer_id, total, count)

    def _write(self, source: Arrays | Blocks, offset: int, meta: dict, leased: bool, deadline: float) -> None:
        """WRITE ``source`` into the slot at ``offset`` with its notification, staging what must be."""
        peer = self._peer
        temp: list[Registration] = []  # registrations for this send only
        try:
            if type(source) is Blocks:
                pairs, mem, device = self._block_pairs(source, temp)
            else:
                pairs, mem, device = self._array_pairs(source, temp)
            peer.agent.write(
                peer.remote,
                pairs,
                peer.base + offset,
                (mem, device),
                peer.mem,
                nixl_message(meta),
                deadline,
                reuse=not temp,
                meanwhile=self._slots.collect_credits if leased else None,
            )
        finally:
            for reg in temp:
                peer.agent.deregister(reg)

    def _array_pairs(self, source: Arrays, temp: list[Registration]) -> tuple[Pairs, str, int]:
        """Descriptors for arrays: one array in place as it is, else direct runs and staged copies."""
        arrays, infos, offsets = source
        sources = self._sources
        if len(infos) == 1:
            info = infos[0]
            if sources.in_place(info):
                return [(info.addr, 0, info.nbytes)], info.mem, info.device
        mems = {(i.mem, i.device) for i in infos}
        if len(mems) != 1:
            raise TransportError(
                f"one send must come from one memory kind, got {sorted(mems)}; send DRAM and VRAM arrays separately"
            )
        mem, device = mems.pop()
        runs = coalesce([i.addr for i in infos], [i.nbytes for i in infos], offsets)

        def registered(addr: int, nbytes: int) -> bool:
            sources.for_this_send(addr, nbytes, mem, device, temp)
            return True

        segments = plan_segments(runs, registered, sources.threshold(mem))
        return self._stage(arrays, [i.nbytes for i in infos], offsets, segments, mem, device), mem, device

    def _block_pairs(self, source: Blocks, temp: list[Registration]) -> tuple[Pairs, str, int]:
        """Descriptors for blocks: a descriptor per run of consecutive ids if every run is long
        enough, else all of them gathered into staging with one op."""
        pool, info, ids, block = source
        starts, lengths = block_runs(ids)
        total = ids.size * block
        if int(lengths.min()) * block >= self._sources.threshold(info.mem):
            self._sources.for_this_send(info.addr, info.nbytes, info.mem, info.device, temp)
            if len(starts) == 1:
                return [(info.addr + int(starts[0]) * block, 0, total)], info.mem, info.device
            dsts = np.concatenate(([0], np.cumsum(lengths)[:-1])) * block
            return np.stack((info.addr + starts * block, dsts, lengths * block), axis=1), info.mem, info.device
        region = self._staging_region(total, info.mem, info.device)
        memory.take_into(region, 0, pool, ids)
        if info.mem == "VRAM":
            memory.synchronize(info.device)
        return [(memory.region_addr(region), 0, total)], info.mem, info.device

    def _stage(
        self,
        arrays: Sequence[Any],
        sizes: list[int],
        offsets: list[int],
        segments: list[Segment],
        mem: str,
        device: int,
    ) -> list[tuple[int, int, int]]:
        """Copy staged segments into staging; return (src address, slot offset, n) per descriptor."""
        staged = sum(s.n for s in segments if not s.direct)
        region = self._staging_region(staged, mem, device) if staged else None
        pairs, cursor = [], 0
        for seg in segments:
            if seg.direct:
                pairs.append((seg.src, seg.dst, seg.n))
                continue
            for group in _contiguous_groups(seg.members, offsets, sizes):
                memory.gather_into(region, cursor + offsets[group[0]] - seg.dst, [arrays[i] for i in group])
            pairs.append((memory.region_addr(region) + cursor, seg.dst, seg.n))
            cursor += seg.n
        if region is not None and mem == "VRAM":
            memory.synchronize(device)
        return pairs

    def _staging_region(self, nbytes: int, mem: str, device: int) -> Any:
        """A registered staging region of at least ``nbytes`` in ``mem``: the one kept, or a bigger one."""
        staging = self._staging
        if staging is None or staging.size < nbytes or (staging.mem, staging.device) != (mem, device):
            self._drop_staging()
            size = 1 << max(20, (nbytes - 1).bit_length())
            region = memory.alloc(size, mem, device)
            reg = self._peer.agent.register(memory.region_addr(region), size, mem, device)
            staging = self._staging = Staging(region, reg, size, mem, device)
        return staging.region

    def close(self) -> None:
        """Drop the staging region and the view of the receiver's shared memory."""
        self._shm_view = None
        self._drop_staging()

    def _drop_staging(self) -> None:
        if self._staging is not None:
            self._peer.agent.deregister(self._staging.registration)
            self._staging = None


def _contiguous_groups(members: list[int], offsets: list[int], sizes: list[int]) -> list[list[int]]:
    """Split staged arrays into groups that sit back to back in the slot (no padding)."""
    groups: list[list[int]] = []
    end = -1
    for index in members:
        if groups and offsets[index] == end:
            groups[-1].append(index)
        else:
            groups.append([index])
        end = offsets[index] + sizes[index]
    return groups
