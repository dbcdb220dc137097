"""First-fit allocation of byte ranges inside the receiver's region."""

from __future__ import annotations

SLOT_ALIGN = 4096


class SlotAllocator:
    """Hands out page-aligned ``[offset, offset+n)`` ranges of a fixed region.

    Args:
        capacity: region size in bytes.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free: list[tuple[int, int]] = [(0, capacity)]  # sorted (start, size)
        self._used: dict[int, int] = {}

    def alloc(self, nbytes: int) -> int | None:
        """Reserve ``nbytes``; returns the offset, or None when no hole is big enough."""
        need = max(SLOT_ALIGN, (nbytes + SLOT_ALIGN - 1) // SLOT_ALIGN * SLOT_ALIGN)
        for i, (start, size) in enumerate(self._free):
            if size >= need:
                if size == need:
                    del self._free[i]
                else:
                    self._free[i] = (start + need, size - need)
                self._used[start] = need
                return start
        return None

    def free(self, offset: int) -> None:
        """Give a range back and merge it with its free neighbours."""
        size = self._used.pop(offset)
        free = sorted(self._free + [(offset, size)])
        merged: list[tuple[int, int]] = []
        for start, n in free:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((start, n))
        self._free = merged

    @property
    def free_bytes(self) -> int:
        """Total free bytes (possibly fragmented)."""
        return sum(n for _, n in self._free)
