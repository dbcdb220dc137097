"""Waiting for vLLM's encoder-cache files before the prefill reads them.

vLLM's ECExampleConnector (0.32) writes ``<dir>/<mm_hash>/encoder_cache.safetensors``
with ``safetensors.save_file`` (no temp file + rename), and the consumer only checks
that the path exists; its check also creates the empty ``<mm_hash>/`` folder. So
the frontend waits for a *complete* file: 8-byte little-endian header length N, a
JSON header, and a size of 8 + N + the largest tensor ``data_offsets`` end.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time

FILE_NAME = "encoder_cache.safetensors"
POLL_S = 0.005


class EncoderCacheTimeout(Exception):
    """The encoder answered but its cache file was not complete in time."""


def is_complete(path: str) -> bool:
    """Whether ``path`` is a whole safetensors file (False while absent or half written)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) < 8:
                return False
            (n,) = struct.unpack("<Q", head)
            if 8 + n > size:
                return False
            header = json.loads(fh.read(n))
    except (OSError, ValueError):
        return False
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    return 8 + n + max(ends, default=0) == size


async def wait_for_files(folder: str, mm_hashes: list[str], timeout_s: float) -> None:
    """Return once every ``<folder>/<hash>/encoder_cache.safetensors`` is complete.

    Raises:
        EncoderCacheTimeout: naming the first file still missing after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    for mm_hash in mm_hashes:
        path = os.path.join(folder, mm_hash, FILE_NAME)
        while not is_complete(path):
            if time.monotonic() > deadline:
                raise EncoderCacheTimeout(
                    f"encoder cache file {path} not complete {timeout_s:.0f} s after the encoder answered; "
                    "is the encoder's shared_storage_path this folder?")
            await asyncio.sleep(POLL_S)
