"""The NIXL side of the edge: one agent per process, writes with a notification.

Follows what vLLM's NixlConnector does with ``nixl._api`` (register once,
exchange ``get_agent_metadata()`` out of band, ``add_remote_agent``, then
``initialize_xfer`` / ``transfer`` / ``check_xfer_state`` and
``get_new_notifs`` on the target), but always WRITEs: the direction that
takes the zero-copy path on GPUs without NVLink.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import TransportError, TransportTimeout

log = logging.getLogger(__name__)

NOTIF_PREFIX = b"sgx1:"


class NixlUnavailable(RuntimeError):
    """NIXL cannot be imported or its agent cannot start here."""


class NixlAgent:
    """A process-wide NIXL agent; every call into it goes through one lock.

    Args:
        name: unique agent name (defaults to host-pid-random).

    Raises:
        NixlUnavailable: nixl is not installed or the UCX backend fails to start.
    """

    def __init__(self, name: str | None = None) -> None:
        try:
            from nixl._api import nixl_agent, nixl_agent_config
        except ImportError as exc:
            raise NixlUnavailable(f"import nixl failed: {exc}") from exc
        self.name = name or f"sg-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self._agent = nixl_agent(self.name, nixl_agent_config(backends=["UCX"]))
        except Exception as exc:  # nixl raises RuntimeError or backend-specific errors
            raise NixlUnavailable(f"NIXL agent failed to start: {exc}") from exc
        if "UCX" not in self._agent.backends:
            raise NixlUnavailable("NIXL started without its UCX backend (see UCX_TLS and the log above)")
        self._lock = threading.Lock()
        self._remotes: dict[str, str] = {}

    def register(self, addr: int, nbytes: int, mem: str, device: int) -> Any:
        """Register ``[addr, addr+nbytes)`` once; returns what ``deregister`` takes."""
        with self._lock:
            return self._agent.register_memory([(addr, nbytes, device, "")], mem)

    def deregister(self, reg: Any) -> None:
        """Undo ``register``."""
        with self._lock:
            self._agent.deregister_memory(reg)

    def metadata(self) -> bytes:
        """This agent's metadata (connection info + registered regions)."""
        with self._lock:
            return self._agent.get_agent_metadata()

    def add_remote(self, metadata: bytes) -> str:
        """Load a peer's metadata once; returns its agent name.

        Raises:
            TransportError: the metadata is not a NIXL agent's.
        """
        key = hashlib.sha1(metadata).hexdigest()
        with self._lock:
            if key not in self._remotes:
                try:
                    self._remotes[key] = self._agent.add_remote_agent(metadata)
                except Exception as exc:
                    raise TransportError(f"cannot load the receiver's NIXL metadata: {exc}") from exc
            return self._remotes[key]

    def write(
        self,
        remote: str,
        pairs: np.ndarray,
        local_mem: tuple[str, int],
        remote_mem: tuple[str, int],
        notif: bytes,
        deadline: float,
    ) -> None:
        """WRITE the rows ``(local_addr, remote_addr, n)`` of ``pairs``, then notify; wait for completion.

        Raises:
            TransportTimeout: still in flight at ``deadline`` (time.monotonic()).
            TransportError: NIXL reported an error (peer gone, bad descriptor).
        """
        (lmem, ldev), (rmem, rdev) = local_mem, remote_mem
        with self._lock:
            try:
                # Nx3 (address, length, device) arrays: no Python tuple per descriptor
                local = self._agent.get_xfer_descs(
                    np.stack((pairs[:, 0], pairs[:, 2], np.full(len(pairs), ldev)), axis=1), lmem
                )
                far = self._agent.get_xfer_descs(
                    np.stack((pairs[:, 1], pairs[:, 2], np.full(len(pairs), rdev)), axis=1), rmem
                )
                handle = self._agent.initialize_xfer("WRITE", local, far, remote, notif)
                state = self._agent.transfer(handle)
            except Exception as exc:
                raise TransportError(f"NIXL could not start the write to {remote}: {exc}") from exc
        if state == "PROC":
            state = poll_xfer(lambda: self._checked(handle), deadline)
        if state == "PROC":
            self._release(handle)
            raise TransportTimeout(f"NIXL write to {remote} still in flight at its deadline")
        self._release(handle)
        if state != "DONE":
            raise TransportError(f"NIXL write to {remote} failed (state {state}); is the receiver alive?")

    def _checked(self, handle: Any) -> str:
        with self._lock:
            return self._agent.check_xfer_state(handle)

    def _release(self, handle: Any) -> None:
        try:
            with self._lock:
                handle.release()
        except Exception as exc:  # cannot cancel an active transfer; NIXL frees it later
            log.debug("NIXL transfer handle not released: %s", exc)

    def poll_notifs(self) -> list[bytes]:
        """Return new edge notifications (ours only, in arrival order)."""
        with self._lock:
            notifs = self._agent.get_new_notifs()
        return [m[len(NOTIF_PREFIX) :] for msgs in notifs.values() for m in msgs if m.startswith(NOTIF_PREFIX)]


SPIN_S = 2e-4  # spin this long before napping: a GPU write of MBs is done in tens of us


def poll_xfer(check: Callable[[], str], deadline: float) -> str:
    """Poll ``check()`` until it is not "PROC" or ``deadline`` (monotonic) passes.

    Spins for ``SPIN_S`` (sleep granularity is ~60 us, longer than small GPU
    writes), then naps 50 us between checks so UCX's progress threads keep a
    core on small machines. Returns the last state.
    """
    start = time.monotonic()
    state = check()
    while state == "PROC":
        now = time.monotonic()
        if now > deadline:
            break
        if now - start > SPIN_S:
            time.sleep(5e-5)
        state = check()
    return state


_agent: NixlAgent | None = None
_agent_error: NixlUnavailable | None = None
_agent_lock = threading.Lock()


def process_agent() -> NixlAgent:
    """The process-wide agent, created on first use; a failure is remembered.

    Raises:
        NixlUnavailable: NIXL cannot run here.
    """
    global _agent, _agent_error
    with _agent_lock:
        if _agent is None and _agent_error is None:
            try:
                _agent = NixlAgent()
            except NixlUnavailable as exc:
                _agent_error = exc
        if _agent_error is not None:
            raise _agent_error
        return _agent


def close_process_agent() -> None:
    """Drop the process-wide agent (and its progress thread); the next use makes a new one.

    Only call this once every receiver and sender of the process is closed.
    """
    global _agent, _agent_error
    with _agent_lock:
        _agent, _agent_error = None, None
