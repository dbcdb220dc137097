"""The mock's KV cache: a fixed number of blocks, prefix caching by block hash, LRU eviction.

Blocks of a running request are pinned (ref > 0). When a request ends its
hashed blocks stay cached (ref 0) until space is needed; the least recently
released go first, and a request's tail blocks before its head (as vLLM
does), so a cached prefix stays usable as long as possible.

When a block counts as cached follows vLLM 0.32 (docs/engines.md, "vLLM",
prefix caching): a request's full blocks enter the cache when its prefill is
scheduled, not when it ends, so a request arriving while another computes the
same prefix hits those blocks (and reports them as cached tokens) instead of
computing them again; but it reads them only after they are computed, so its
first token waits for the other prefill. Each block therefore carries the
time its KV is ready (:attr:`_Block.ready_at`), and the engine waits out the
latest one among a request's hits (:meth:`Allocation.hits_ready_at`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ..common.kvhash import common_prefix_blocks


@dataclass
class _Block:
    id: int
    hash: int | None
    ref: int = 0
    #: ``time.monotonic()`` at which its KV is computed; later than now while a prefill computes it.
    ready_at: float = 0.0


@dataclass
class Allocation:
    """The blocks one request holds.

    Attributes:
        blocks: physical blocks, prompt blocks first (what ``remote_block_ids`` lists).
        hit_blocks: leading prompt blocks that were already cached (prefix hit).
        fresh: the hashed blocks this request computes (new in the cache).
    """

    blocks: list[_Block] = field(default_factory=list)
    hit_blocks: int = 0
    fresh: list[_Block] = field(default_factory=list)
    released: bool = False

    @property
    def block_ids(self) -> list[int]:
        """Physical block ids, in order."""
        return [b.id for b in self.blocks]

    def hits_ready_at(self, hits: int) -> float:
        """When the first ``hits`` blocks are all computed (0.0 for none): a hit on a prefix that
        another request is still computing is read only after that prefill ends."""
        return max((b.ready_at for b in self.blocks[:hits]), default=0.0)

    def computed_at(self, when: float) -> None:
        """Record when this request's prefill computes its fresh blocks (``time.monotonic()``)."""
        for block in self.fresh:
            block.ready_at = when


class BlockPool:
    """A fixed-capacity pool of KV blocks with a prefix cache.

    Args:
        capacity: number of blocks (``--kv-blocks``).
        block_size: tokens per block (``--block-size``).
    """

    def __init__(self, capacity: int, block_size: int) -> None:
        if capacity < 1 or block_size < 1:
            raise ValueError("capacity and block_size must be >= 1")
        self.capacity = capacity
        self.block_size = block_size
        self._free_ids = list(range(capacity - 1, -1, -1))
        self._cached: dict[int, _Block] = {}
        self._evictable: OrderedDict[int, _Block] = OrderedDict()
        self._pinned = 0

    @property
    def usage(self) -> float:
        """Fraction of blocks pinned by running requests (0..1), as engines report it."""
        return self._pinned / self.capacity

    @property
    def cached_hashes(self) -> list[int]:
        """Hashes of every block the cache holds, pinned or not."""
        return list(self._cached)

    @property
    def cached_count(self) -> int:
        """Number of blocks holding a hashed prefix."""
        return len(self._cached)

    def cached_prefix(self, hashes: list[int]) -> int:
        """Leading blocks of ``hashes`` that are cached now."""
        return common_prefix_blocks(hashes, self._cached.keys())  # type: ignore[arg-type]

    def allocate(self, hashes: list[int], extra: int) -> Allocation | None:
        """Pin cached blocks for ``hashes`` and take new ones for the rest.

        Args:
            hashes: the prompt's full-block hashes, in order.
            extra: further blocks without a hash (partial last block, output).

        Returns:
            The allocation, or None when too few blocks are free or evictable now
            (the caller waits for a release).
        """
        reuse = list(map(self._cached.get, hashes))
        new_needed, idle_reused = extra, 0
        for b in reuse:
            if b is None:
                new_needed += 1
            elif b.ref == 0:
                idle_reused += 1
        if new_needed > len(self._free_ids) + len(self._evictable) - idle_reused:
            return None
        alloc = Allocation()
        for block in reuse:  # pin reused blocks first, so taking new ones cannot evict them
            if block is not None:
                self._pin(block)
        leading = True
        for h, block in zip(hashes, reuse):
            if block is None:
                leading = False
                block = self._take(h)
                alloc.fresh.append(block)
            elif leading:
                alloc.hit_blocks += 1
            alloc.blocks.append(block)
        for _ in range(extra):
            alloc.blocks.append(self._take(None))
        return alloc

    def release(self, alloc: Allocation) -> None:
        """Unpin a request's blocks; hashed ones stay cached, the tail evicted first."""
        if alloc.released:
            return
        alloc.released = True
        for block in reversed(alloc.blocks):
            block.ref -= 1
            if block.ref:
                continue
            self._pinned -= 1
            if block.hash is None:
                self._free_ids.append(block.id)
            else:
                # Appended tail first: eviction pops from the front, so older requests go
                # first, then this one's tail, and its head last.
                self._evictable[block.hash] = block

    def _pin(self, block: _Block) -> None:
        if block.ref == 0:
            self._pinned += 1
            if block.hash is not None:
                self._evictable.pop(block.hash, None)
        block.ref += 1

    def _take(self, h: int | None) -> _Block:
        if not self._free_ids:
            self._evict()
        block = _Block(self._free_ids.pop(), h, 1)
        self._pinned += 1
        if h is not None:
            self._cached[h] = block
        return block

    def _evict(self) -> None:
        _, victim = self._evictable.popitem(last=False)
        del self._cached[victim.hash]  # type: ignore[arg-type]
        self._free_ids.append(victim.id)
