"""Pure planning: where each array lands in a slot, and how few descriptors move it.

Arrays are packed back to back in the receiver's slot, each start aligned to
``ALIGN`` bytes. Runs whose source and destination are both contiguous merge
into one descriptor; short runs (below ``stage_below`` bytes) are copied into
a registered staging region that mirrors the destination, so a scatter of
small blocks still goes out as one descriptor. Each descriptor costs ~11-15 us
in NIXL, a copy costs bytes / memcpy bandwidth: staging wins below roughly
``descriptor_cost * copy_bandwidth`` bytes (~75 KB on a CPU, MBs on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

ALIGN = 64

ArraySpec = tuple[str, tuple[int, ...], int]  # (dtype name, shape, nbytes)


def align_up(value: int, align: int = ALIGN) -> int:
    """Round ``value`` up to a multiple of ``align``."""
    return (value + align - 1) // align * align


def pack(sizes: Sequence[int]) -> tuple[list[int], int]:
    """Return each array's offset in the slot and the slot's total size."""
    offsets, end = [], 0
    for size in sizes:
        start = align_up(end)
        offsets.append(start)
        end = start + size
    return offsets, end


def encode_layout(specs: Sequence[ArraySpec]) -> list[list]:
    """Run-length encode (dtype, shape, nbytes) specs: 1024 equal blocks become one entry."""
    out: list[list] = []
    for dtype, shape, nbytes in specs:
        if out and out[-1][:3] == [dtype, list(shape), nbytes]:
            out[-1][3] += 1
        else:
            out.append([dtype, list(shape), nbytes, 1])
    return out


def decode_layout(layout: Sequence[Sequence]) -> list[ArraySpec]:
    """Invert ``encode_layout``."""
    return [
        (str(dtype), tuple(int(s) for s in shape), int(nbytes))
        for dtype, shape, nbytes, count in layout
        for _ in range(int(count))
    ]


@dataclass(frozen=True)
class Run:
    """A contiguous source range that lands on a contiguous destination range.

    ``members`` are the indices of the arrays it covers, in order.
    """

    src: int
    dst: int
    n: int
    members: tuple[int, ...] = ()


@dataclass
class Segment:
    """One descriptor of the transfer.

    ``direct`` segments read the source in place; staged segments first copy
    the arrays listed in ``members`` into staging, each at its slot offset
    minus ``segment.dst``.
    """

    dst: int
    n: int
    direct: bool
    src: int = 0
    members: list[int] = field(default_factory=list)


def coalesce(srcs: Sequence[int], sizes: Sequence[int], dsts: Sequence[int]) -> list[Run]:
    """Merge neighbours that are contiguous on both sides into runs."""
    runs: list[Run] = []
    for index, (src, n, dst) in enumerate(zip(srcs, sizes, dsts)):
        if n == 0:
            continue
        if runs and runs[-1].src + runs[-1].n == src and runs[-1].dst + runs[-1].n == dst:
            last = runs.pop()
            runs.append(Run(last.src, last.dst, last.n + n, last.members + (index,)))
        else:
            runs.append(Run(src, dst, n, (index,)))
    return runs


def plan_segments(runs: Sequence[Run], registered: Callable[[int, int], bool], stage_below: int) -> list[Segment]:
    """Choose, per run, a direct descriptor or the staging copy.

    A run goes direct when its source is registered and it is at least
    ``stage_below`` bytes; everything else is staged, and consecutive staged
    runs share one segment (the padding between them is harmless garbage).
    """
    segments: list[Segment] = []
    for run in runs:
        if run.n >= stage_below and registered(run.src, run.n):
            segments.append(Segment(dst=run.dst, n=run.n, direct=True, src=run.src))
        elif segments and not segments[-1].direct:
            seg = segments[-1]
            seg.members.extend(run.members)
            seg.n = run.dst + run.n - seg.dst
        else:
            segments.append(Segment(dst=run.dst, n=run.n, direct=False, members=list(run.members)))
    return segments


def block_runs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split block ids into runs of consecutive ids: (first id, length) per run, vectorized."""
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(np.concatenate((starts, [ids.size])))
    return ids[starts], lengths


_COUNTING = b""  # int64 0, 1, 2, ... as bytes, grown on demand (see consecutive_start)


def consecutive_start(ids: np.ndarray, stop: int) -> int | None:
    """The first id if ``ids`` (1-D, C-contiguous, native int64) are consecutive (``first,
    first + 1, ...``) and within ``[0, stop)``, else None (a KV request's blocks often are one
    run: its whole prompt).

    Between transfers numpy's calls run cold, at several us each (a diff-based check: 3 us
    hot, 20-26 us in the bench's interleaved runs), so this compares the ids' bytes in place
    with those of a kept ``arange``: one memcmp, no array made.
    """
    global _COUNTING
    n = ids.size
    if n == 0:
        return None
    first = ids.item(0)
    if first < 0 or first + n > stop:
        return None
    if (first + n) * 8 > len(_COUNTING):
        if ids.item(n - 1) != first + n - 1:
            return None
        _COUNTING = np.arange(max(first + n, 2 * len(_COUNTING) // 8), dtype=np.int64).tobytes()
    return first if _COUNTING.startswith(ids, first * 8) else None
