"""The plain path used when NIXL is absent: shared memory on one host, TCP across hosts."""

from __future__ import annotations

import logging
import mmap
import os
import socket
from multiprocessing import shared_memory
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
_logged: set[str] = set()


def log_once(reason: str, fallback: str) -> None:
    """Log "NIXL not available (...); using <fallback>" once per process and fallback."""
    if fallback not in _logged:
        _logged.add(fallback)
        log.warning("NIXL not available (%s); using %s", reason, fallback)


def node_id() -> str:
    """Identify this machine (hostname + boot id): equal ids can share memory."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = "?"
    return f"{socket.gethostname()}/{boot}"


def create_segment(nbytes: int) -> tuple[shared_memory.SharedMemory, np.ndarray]:
    """Create a shared-memory segment (unlinked when its creator exits) and a uint8 view."""
    shm = shared_memory.SharedMemory(create=True, size=nbytes)
    return shm, np.ndarray((nbytes,), dtype=np.uint8, buffer=shm.buf)


def attach_segment(name: str, nbytes: int) -> tuple[mmap.mmap, np.ndarray]:
    """Map a receiver's segment without adopting it.

    ``SharedMemory(name=...)`` would register the segment with this process's
    resource tracker (Python < 3.13), which unlinks it when we exit; a plain
    mmap of /dev/shm leaves ownership with the receiver.
    """
    fd = os.open(os.path.join("/dev/shm", name.lstrip("/")), os.O_RDWR)
    try:
        if os.fstat(fd).st_size < nbytes:
            raise OSError(f"segment {name} is smaller than the handle's {nbytes} bytes")
        mapping = mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)
    return mapping, np.frombuffer(mapping, dtype=np.uint8, count=nbytes)


def close_mapping(owner: Any) -> None:
    """Close a segment or mapping once our views are dropped (a caller may still hold one)."""
    try:
        owner.close()
    except BufferError:  # a Received view is still alive; the mapping dies with the process
        pass


def can_share_memory(node: str) -> bool:
    """Whether a receiver on ``node`` is on this machine."""
    return node == node_id() and os.path.isdir("/dev/shm")
