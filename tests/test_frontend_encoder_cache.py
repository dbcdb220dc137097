"""The frontend's wait for vLLM encoder-cache files (nodes/frontend/encoder_cache.py)."""

from __future__ import annotations

import asyncio
import json
import pathlib
import struct

import pytest

from nodes.frontend.encoder_cache import FILE_NAME, EncoderCacheTimeout, is_complete, wait_for_files


def _safetensors(data_len: int = 32) -> bytes:
    """A file laid out like safetensors.save_file's: header length, JSON header, data."""
    header = json.dumps({"ec_cache": {"dtype": "BF16", "shape": [data_len // 2], "data_offsets": [0, data_len]}})
    raw = header.encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(range(data_len))


def test_only_a_whole_file_is_complete(tmp_path: pathlib.Path) -> None:
    path = tmp_path / FILE_NAME
    whole = _safetensors()
    assert not is_complete(str(path))
    for cut in (0, 4, 8, 20, len(whole) - 1):
        path.write_bytes(whole[:cut])
        assert not is_complete(str(path)), cut
    path.write_bytes(whole)
    assert is_complete(str(path))


def test_wait_returns_when_the_file_is_written_and_names_a_missing_one(tmp_path: pathlib.Path) -> None:
    (tmp_path / "h1").mkdir()  # vLLM's consumer creates the folder before any file exists

    async def write_later() -> None:
        await asyncio.sleep(0.05)
        (tmp_path / "h1" / FILE_NAME).write_bytes(_safetensors())

    async def both() -> None:
        await asyncio.gather(wait_for_files(str(tmp_path), ["h1"], 5.0), write_later())

    asyncio.run(both())
    with pytest.raises(EncoderCacheTimeout, match="h2"):
        asyncio.run(wait_for_files(str(tmp_path), ["h2"], 0.05))
