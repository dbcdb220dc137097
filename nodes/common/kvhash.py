"""KV block hashes: the one scheme the mock engine and the KV-aware router share.

A prompt's token ids are cut into full blocks of ``block_size`` tokens (a
partial last block has no hash: it cannot be shared). Block ``i``'s hash is::

    h[-1] = parent (0 for a prompt's first block)
    h[i]  = blake2b(le_u64(h[i-1]) || le_u32(tok) for tok in block i, digest_size=8)
            as a little-endian integer, top bit cleared (0 <= h < 2**63)

So a hash names the whole prefix up to and including its block: two prompts
share block ``i``'s hash only if their first ``(i+1)*block_size`` tokens are
equal. Media enter the chain through their placeholder token ids, which the
mock derives from the media bytes (see ``nodes.mock.media``), so two prompts
with different images never share a block after the first image.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from hashlib import blake2b
from typing import Sequence

#: Hashes are kept below 2**63 so that JSON readers using signed 64-bit ints keep them exact.
HASH_MASK = (1 << 63) - 1


@lru_cache(maxsize=64)
def _packer(block_size: int) -> struct.Struct:
    return struct.Struct(f"<Q{block_size}I")


def block_hashes(token_ids: Sequence[int], block_size: int, parent: int = 0) -> list[int]:
    """Hash chain over the full blocks of ``token_ids``.

    Args:
        token_ids: the prompt's token ids (each below 2**32).
        block_size: tokens per KV block (the engine's ``--block-size``).
        parent: hash the chain continues from (0 for a prompt's start).

    Returns:
        One hash per full block, in order.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    pack = _packer(block_size).pack
    out: list[int] = []
    h = parent
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        digest = blake2b(pack(h, *token_ids[start:start + block_size]), digest_size=8).digest()
        h = int.from_bytes(digest, "little") & HASH_MASK
        out.append(h)
    return out


def common_prefix_blocks(hashes: Sequence[int], held: set[int] | frozenset[int]) -> int:
    """How many leading blocks of ``hashes`` are in ``held`` (the overlap a router scores)."""
    n = 0
    for h in hashes:
        if h not in held:
            break
        n += 1
    return n
