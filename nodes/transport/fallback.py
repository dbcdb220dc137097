"""The plain path used when NIXL is absent: shared memory on one host, TCP across hosts."""

from __future__ import annotations

import logging
import os
import socket
from multiprocessing import resource_tracker, shared_memory
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


def attach_segment(name: str, nbytes: int) -> tuple[shared_memory.SharedMemory, np.ndarray]:
    """Attach a receiver's segment without adopting it.

    Python < 3.13 registers attached segments with the resource tracker, which
    would unlink the receiver's segment when this (sending) process exits.
    """
    shm = shared_memory.SharedMemory(name=name, create=False)
    try:
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    except Exception:  # tracker absent or already gone: nothing to undo
        pass
    if shm.size < nbytes:
        shm.close()
        raise OSError(f"segment {name} has {shm.size} bytes, the handle says {nbytes}")
    return shm, np.ndarray((nbytes,), dtype=np.uint8, buffer=shm.buf)


def release_view(shm: Any, view: Any) -> None:
    """Drop our numpy view, then close the mapping (numpy holds an export on it)."""
    del view
    try:
        shm.close()
    except BufferError:  # a caller still holds a view; the mapping dies with the process
        pass


def can_share_memory(node: str) -> bool:
    """Whether a receiver on ``node`` is on this machine."""
    return node == node_id() and os.path.isdir("/dev/shm")
