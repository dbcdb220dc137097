"""The embeddings a mock encoder produces for media.

An encoder's "embeddings" are a deterministic function of the media digests
(float16, ``mm_tokens`` rows of ``HIDDEN`` per item), so the prefill can check
that the bytes that arrived are the ones for the media in its own request.
They travel over ``PeerEdge`` (``nodes.mock.edge``).
"""

from __future__ import annotations

import hashlib
from typing import Any

HIDDEN = 64


def embedding_for(digests: list[str], mm_tokens: int) -> Any:
    """The embeddings an encoder produces for these media: float16 [items * mm_tokens, HIDDEN]."""
    import numpy as np

    rows = []
    for digest in digests:
        raw = hashlib.shake_256(bytes.fromhex(digest)).digest(mm_tokens * HIDDEN * 2)
        rows.append(np.frombuffer(raw, dtype=np.float16).reshape(mm_tokens, HIDDEN))
    return np.concatenate(rows) if rows else np.zeros((0, HIDDEN), dtype=np.float16)
