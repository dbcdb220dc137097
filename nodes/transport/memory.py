"""Arrays as raw memory: numpy arrays in DRAM, torch tensors in DRAM or VRAM.

torch is never imported here; a tensor can only reach us if the caller already
imported it, so ``sys.modules`` tells us whether to look for one.
"""

from __future__ import annotations

import math
import sys
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .errors import TransportError


# tuple.__new__(Cls, values) builds a NamedTuple without its own __new__, which parses keywords and is
# ~3x slower: the per-send tuples of the fast path (ArrayInfo, Reservation, Ticket) are built with it.
new_tuple = tuple.__new__


class ArrayInfo(NamedTuple):
    """Raw facts about one source array (a tuple: built on every send, so cheap)."""

    addr: int
    nbytes: int
    dtype: str
    shape: tuple[int, ...]
    mem: str
    device: int


def _torch() -> Any:
    return sys.modules.get("torch")


def _is_tensor(obj: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(obj, torch.Tensor)


_DTYPE_NAMES: dict[Any, str] = {}


def _dtype_name(dtype: Any) -> str:
    """``float16`` for numpy and torch dtypes alike, cached (numpy's ``dtype.name`` costs ~3 us)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = dtype.name if isinstance(dtype, np.dtype) else str(dtype).removeprefix("torch.")
        _DTYPE_NAMES[dtype] = name
    return name


def describe(array: Any, what: str = "array") -> ArrayInfo:
    """Return address, size, dtype, shape and memory kind of a contiguous array.

    Runs on every send: attribute lookups only (~1 us for a tensor).

    Raises:
        TransportError: the array is not C-contiguous or not an array at all.
    """
    if _is_tensor(array):
        if not array.is_contiguous():
            raise TransportError(f"{what} is a non-contiguous tensor; call .contiguous() before sending")
        cuda = array.is_cuda
        return new_tuple(
            ArrayInfo,
            (
                array.data_ptr(),
                array.nbytes,
                _dtype_name(array.dtype),
                tuple(array.shape),
                "VRAM" if cuda else "DRAM",
                array.get_device() if cuda else 0,
            ),
        )
    if isinstance(array, (bytes, bytearray, memoryview)):
        array = np.frombuffer(array, dtype=np.uint8)
    if not isinstance(array, np.ndarray):
        raise TransportError(f"{what} is a {type(array).__name__}; send numpy arrays, torch tensors or bytes")
    if not array.flags.c_contiguous:
        raise TransportError(f"{what} is not C-contiguous; use np.ascontiguousarray() before sending")
    return ArrayInfo(
        array.__array_interface__["data"][0], array.nbytes, _dtype_name(array.dtype), array.shape, "DRAM", 0
    )


def byte_view(array: Any) -> Any:
    """Flat uint8 view of a contiguous array (no copy)."""
    if _is_tensor(array):
        return array.reshape(-1).view(_torch().uint8)
    if isinstance(array, (bytes, bytearray, memoryview)):
        return np.frombuffer(array, dtype=np.uint8)
    return array.reshape(-1).view(np.uint8)


def host_bytes(array: Any) -> memoryview:
    """The bytes of a host array as a memoryview (for sockets)."""
    data = byte_view(array)
    return memoryview(data.numpy() if _is_tensor(data) else data)


def synchronize(device: int) -> None:
    """Wait for queued copies on a GPU (staging copies must land before NIXL reads)."""
    _torch().cuda.synchronize(device)


def alloc(nbytes: int, mem: str, device: int) -> Any:
    """Allocate an uninitialized uint8 region in DRAM (numpy) or VRAM (torch)."""
    if mem == "VRAM":
        torch = _torch()
        if torch is None:
            raise TransportError("a VRAM region needs torch; import torch before creating the edge")
        return torch.empty(nbytes, dtype=torch.uint8, device=f"cuda:{device}")
    return np.empty(nbytes, dtype=np.uint8)


def region_addr(region: Any) -> int:
    """Address of a region from ``alloc`` (or any contiguous uint8 array)."""
    return region.data_ptr() if _is_tensor(region) else region.__array_interface__["data"][0]


def copy_into(region: Any, offset: int, array: Any) -> None:
    """Copy ``array``'s bytes into ``region[offset:]``."""
    src = byte_view(array)
    n = src.numel() if _is_tensor(src) else src.nbytes
    if _is_tensor(region):
        region[offset : offset + n].copy_(src, non_blocking=False)
    else:
        region[offset : offset + n] = src


def gather_into(region: Any, offset: int, arrays: Sequence[Any]) -> None:
    """Copy ``arrays`` back to back into ``region[offset:]``.

    On a GPU this is one ``torch.cat`` kernel rather than a launch per array
    (1024 launches of ~5 us would cost more than the transfer).
    """
    if _is_tensor(region):
        parts = [byte_view(a) for a in arrays]
        n = sum(p.numel() for p in parts)
        _torch().cat(parts, out=region[offset : offset + n])
        return
    for array in arrays:
        copy_into(region, offset, array)
        offset += byte_view(array).nbytes


def _block_rows(pool: Any) -> Any:
    """``pool`` as a (blocks, words per block) matrix of the widest word that divides a block.

    A GPU gather moves one element per thread: 8-byte words are 8x fewer than bytes.
    """
    if _is_tensor(pool):
        torch = _torch()
        rows = pool.reshape(pool.shape[0], -1).view(torch.uint8)
        for dtype, size in ((torch.int64, 8), (torch.int32, 4), (torch.int16, 2)):
            if rows.shape[1] % size == 0:
                return rows.view(dtype)
        return rows
    return pool.reshape(pool.shape[0], -1).view(np.uint8)


def _row_bytes(rows: Any) -> int:
    return rows.shape[1] * (rows.element_size() if _is_tensor(rows) else rows.itemsize)


def take(pool: Any, ids: np.ndarray) -> Any:
    """``pool[ids]`` as a new contiguous array of len(ids) rows: one gather op."""
    rows = _block_rows(pool)
    if _is_tensor(rows):
        return rows.index_select(0, _torch().as_tensor(ids, device=rows.device))
    return np.take(rows, ids, axis=0)


def take_into(region: Any, offset: int, pool: Any, ids: np.ndarray) -> None:
    """Gather ``pool[ids]`` into ``region[offset:]`` back to back: one op, any block count."""
    rows = _block_rows(pool)
    n = len(ids) * _row_bytes(rows)
    if _is_tensor(rows):
        out = region[offset : offset + n].view(rows.dtype).view(len(ids), rows.shape[1])
        _torch().index_select(rows, 0, _torch().as_tensor(ids, device=rows.device), out=out)
    else:
        np.take(rows, ids, axis=0, out=region[offset : offset + n].reshape(len(ids), rows.shape[1]))


def view(region: Any, offset: int, dtype: str, shape: Sequence[int]) -> Any:
    """Typed view of ``region[offset:]`` with ``shape`` (no copy).

    Raises:
        TransportError: the dtype is unknown to numpy (e.g. bfloat16 in DRAM).
    """
    count = math.prod(shape)
    if _is_tensor(region):
        tdtype = getattr(_torch(), dtype, None)
        if not isinstance(tdtype, _torch().dtype):
            raise TransportError(f"dtype {dtype!r} is not a torch dtype")
        return region[offset : offset + count * tdtype.itemsize].view(tdtype).reshape(tuple(shape))
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TransportError(
            f"dtype {dtype!r} has no numpy equivalent; send it as a torch tensor or view it as uint16"
        ) from exc
    return region[offset : offset + count * np_dtype.itemsize].view(np_dtype).reshape(tuple(shape))


def crc32(arrays: Sequence[Any]) -> int:
    """CRC-32 over the arrays' bytes in order (host memory only)."""
    crc = 0
    for array in arrays:
        data = byte_view(array)
        if _is_tensor(data):
            data = data.cpu().numpy()
        crc = zlib.crc32(data, crc)
    return crc
