"""The NIXL side of the edge: one agent per process, writes with a notification.

Follows what vLLM's NixlConnector does with ``nixl._api`` (register once,
exchange ``get_agent_metadata()`` out of band, ``add_remote_agent``, then
``initialize_xfer`` / ``transfer`` / ``check_xfer_state`` and
``get_new_notifs`` on the target), but always WRITEs: the direction that
takes the zero-copy path on GPUs without NVLink. A prepared transfer is
re-posted with ``transfer(handle, notif_msg)`` (nixl 1.5.1 takes a new
notification per post) instead of being created again; on the hot path that
post and the polling after it call the bindings under ``nixl._api`` directly
(see ``nixl_calls``).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from . import cuda_first
from .errors import TransportError, TransportTimeout
from .nixl_calls import TransferCalls

log = logging.getLogger(__name__)

NOTIF_PREFIX = b"sgx1:"

Pairs = list[tuple[int, int, int]] | np.ndarray  # (local address, offset in the slot, bytes)


class NixlUnavailable(RuntimeError):
    """NIXL cannot be imported or its agent cannot start here."""


MAX_CACHED_XFERS = 256  # prepared transfer handles kept per agent (peers x leased slots x registered sources)


class Registration:
    """A registered range ``[lo, hi)``; what ``NixlAgent.register`` returns."""

    __slots__ = ("descs", "lo", "hi")

    def __init__(self, descs: Any, lo: int, hi: int) -> None:
        self.descs, self.lo, self.hi = descs, lo, hi


class PreparedWrite:
    """A prepared NIXL WRITE: the API's handle (to release), what the bindings post, and the
    local range ``[lo, hi)`` it reads (it must go before that memory is deregistered)."""

    __slots__ = ("xfer", "native", "lo", "hi")

    def __init__(self, xfer: Any, native: Any, lo: int = 0, hi: int = 0) -> None:
        self.xfer, self.native, self.lo, self.hi = xfer, native, lo, hi


class Peer(NamedTuple):
    """A receiver as a sender's WRITEs reach it: our agent, its agent's name, its region."""

    agent: NixlAgent
    remote: str  # the receiver's agent name (ours for a receiver in this process)
    base: int  # address of its registered region
    mem: tuple[str, int]  # its region's (memory kind, device)


class NixlAgent:
    """A process-wide NIXL agent; every call into it goes through one lock.

    Transfers whose local side is registered for good are kept as prepared
    handles and re-posted with the next notification, as raw NIXL benchmarks
    do: creating a request (descriptor lists, rkeys, backend state) costs more
    than moving a few MiB on a GPU.

    CUDA comes first: when VRAM may be registered, a CUDA context is made
    before the agent starts, and an agent that started without one refuses
    VRAM (see ``cuda_first``).

    Args:
        name: unique agent name (defaults to host-pid-random).
        cuda_device: a GPU whose VRAM this agent will move (``cuda_first.CURRENT_DEVICE``: the
            current one); None: CUDA first only if torch is imported and sees a GPU.

    Raises:
        NixlUnavailable: nixl is not installed or the UCX backend fails to start.
    """

    def __init__(self, name: str | None = None, cuda_device: int | None = None) -> None:
        try:
            from nixl._api import nixl_agent, nixl_agent_config
        except ImportError as exc:
            raise NixlUnavailable(f"import nixl failed: {exc}") from exc
        self.name = name or f"sg-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.cuda = cuda_first.before_agent(cuda_device)  # whether CUDA was up when the agent started
        try:
            self._agent = quiet_agent(nixl_agent, self.name, nixl_agent_config(backends=["UCX"]))
        except Exception as exc:  # nixl raises RuntimeError or backend-specific errors
            raise NixlUnavailable(f"NIXL agent failed to start: {exc}") from exc
        if "UCX" not in self._agent.backends:
            raise NixlUnavailable("NIXL started without its UCX backend (see UCX_TLS and the log above)")
        self._calls = TransferCalls(self._agent)
        self._lock = threading.Lock()
        self._remotes: dict[str, str] = {}
        # prepared writes kept for re-posting, by what they write (see ``_key``); oldest first
        self._xfers: collections.OrderedDict[tuple, PreparedWrite] = collections.OrderedDict()

    def register(self, addr: int, nbytes: int, mem: str, device: int) -> Registration:
        """Register ``[addr, addr+nbytes)`` once; returns what ``deregister`` takes.

        Raises:
            TransportError: VRAM, and this agent started before CUDA (it would move it in software).
        """
        if mem == "VRAM" and not self.cuda:
            raise TransportError(f"cannot register VRAM of GPU {device}: {cuda_first.VRAM_WITHOUT_CUDA}")
        with self._lock:
            return Registration(self._agent.register_memory([(addr, nbytes, device, "")], mem), addr, addr + nbytes)

    def deregister(self, reg: Registration) -> None:
        """Undo ``register`` (prepared transfers reading from the range are dropped first)."""
        with self._lock:
            for key, write in list(self._xfers.items()):
                if write.lo < reg.hi and reg.lo < write.hi:
                    del self._xfers[key]
                    _release(write)
            self._agent.deregister_memory(reg.descs)

    def metadata(self) -> bytes:
        """This agent's metadata (connection info + registered regions)."""
        with self._lock:
            return self._agent.get_agent_metadata()

    def add_remote(self, metadata: bytes, cuda_device: int | None = None) -> str:
        """Load a peer's metadata once; returns its agent name.

        Args:
            metadata: the peer agent's metadata.
            cuda_device: the peer's region is VRAM: CUDA is made ready first (``cuda_first``)
                on this GPU (``cuda_first.CURRENT_DEVICE``: the current one), if torch can.

        Raises:
            TransportError: the metadata is not a NIXL agent's.
        """
        key = hashlib.sha1(metadata).hexdigest()
        if cuda_device is not None and key not in self._remotes:
            cuda_first.before_agent(cuda_device)  # a peer loaded before CUDA is written in software
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
        pairs: Pairs,
        dst_base: int,
        local_mem: tuple[str, int],
        remote_mem: tuple[str, int],
        notif: bytes,
        deadline: float,
        *,
        reuse: bool = False,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """WRITE each ``(local_addr, dst_offset, n)`` of ``pairs`` to ``dst_base + dst_offset``, notify, wait.

        ``pairs`` is a list of 3-tuples or an Nx3 int64 array. With ``reuse``
        (the local side stays registered) the prepared handle is kept and the
        next write of the same descriptors only re-posts it. ``meanwhile`` runs
        once the write is posted, while the bytes move (it must not raise).

        Raises:
            TransportTimeout: still in flight at ``deadline`` (time.monotonic()).
            TransportError: NIXL reported an error (peer gone, bad descriptor).
        """
        key = _key(remote, pairs, dst_base, local_mem, remote_mem)
        with self._lock:
            write = self._xfers.pop(key, None)  # popped while in flight: no other thread re-posts it
            if write is None:
                write = self._prepare(remote, pairs, dst_base, local_mem, remote_mem)
        try:
            self.post(write, notif, deadline, remote, meanwhile)
        except TransportError:
            self.release(write)
            raise
        with self._lock:
            if reuse:
                self._keep(key, write)
            else:
                _release(write)

    def make_write(
        self, remote: str, pairs: Pairs, dst_base: int, local_mem: tuple[str, int], remote_mem: tuple[str, int]
    ) -> PreparedWrite:
        """A WRITE of ``pairs`` to ``dst_base`` that the caller owns: ``post`` it as often as
        needed, ``release`` it before its local memory is deregistered.

        A sender keeps one per leased slot and source array: a send is then a re-post.

        Raises:
            TransportError: NIXL refused the descriptors.
        """
        with self._lock:
            return self._prepare(remote, pairs, dst_base, local_mem, remote_mem)

    def post(
        self,
        write: PreparedWrite,
        notif: bytes,
        deadline: float,
        remote: str,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """Post a prepared WRITE with this notification and wait until the bytes are there.

        ``meanwhile`` runs while they move (it must not raise). After an error
        the write is of no more use: ``release`` it.

        Raises:
            TransportTimeout: still in flight at ``deadline`` (time.monotonic()).
            TransportError: NIXL reported an error (peer gone, bad descriptor).
        """
        core, native = self._calls, write.native
        with self._lock:
            try:
                status = core.start(native, notif)
            except Exception as exc:
                raise TransportError(f"NIXL could not start the write to {remote}: {exc}") from exc
        if status == core.in_prog:
            if meanwhile is not None:
                meanwhile()
            status = self._wait(native, deadline)
            if status == core.in_prog:
                raise TransportTimeout(f"NIXL write to {remote} still in flight at its deadline")
        elif meanwhile is not None:
            meanwhile()
        if status != core.done:
            raise TransportError(f"NIXL write to {remote} failed (status {status}); is the receiver alive?")

    def _wait(self, native: Any, deadline: float) -> Any:
        """Poll a posted transfer until it is not in progress or ``deadline`` passes; its last status.

        Each poll is a lock and a binding call, nothing more: how soon the end of a GPU write
        of a few MiB is noticed shows in its time. Spins for ``SPIN_S`` (sleep granularity is
        ~60 us, longer than such a write), then naps ``NAP_S`` between polls.
        """
        lock, state, in_prog = self._lock, self._calls.state, self._calls.in_prog
        spin_until = 0.0
        while True:
            with lock:
                status = state(native)
            if status != in_prog:
                return status
            now = time.monotonic()
            if not spin_until:
                spin_until = now + SPIN_S
            elif now > spin_until:
                if now > deadline:
                    return status
                time.sleep(NAP_S)

    def release(self, write: PreparedWrite) -> None:
        """Free a write from ``make_write`` (or one whose post failed)."""
        with self._lock:
            _release(write)

    def _keep(self, key: tuple, write: PreparedWrite) -> None:
        """Cache a prepared transfer, dropping the least recently used beyond the cap (caller holds the lock)."""
        self._xfers[key] = write
        while len(self._xfers) > MAX_CACHED_XFERS:
            _release(self._xfers.popitem(last=False)[1])

    def _prepare(
        self, remote: str, pairs: Pairs, dst_base: int, local_mem: tuple[str, int], remote_mem: tuple[str, int]
    ) -> PreparedWrite:
        """Create the transfer request for ``pairs`` (caller holds the lock)."""
        (lmem, ldev), (rmem, rdev) = local_mem, remote_mem
        if isinstance(pairs, np.ndarray):
            # Nx3 (address, length, device) arrays: no Python tuple per descriptor
            local = np.stack((pairs[:, 0], pairs[:, 2], np.full(len(pairs), ldev)), axis=1)
            far = np.stack((pairs[:, 1] + dst_base, pairs[:, 2], np.full(len(pairs), rdev)), axis=1)
            lo, hi = int(pairs[:, 0].min()), int((pairs[:, 0] + pairs[:, 2]).max())
        else:
            local = [(src, n, ldev) for src, _, n in pairs]
            far = [(dst_base + dst, n, rdev) for _, dst, n in pairs]
            lo, hi = min(p[0] for p in pairs), max(p[0] + p[2] for p in pairs)
        try:
            handle = self._agent.initialize_xfer(
                "WRITE", self._agent.get_xfer_descs(local, lmem), self._agent.get_xfer_descs(far, rmem), remote
            )
        except Exception as exc:  # nixl raises RuntimeError or backend-specific errors
            raise TransportError(f"NIXL could not prepare the write to {remote}: {exc}") from exc
        return PreparedWrite(handle, self._calls.handle(handle), lo, hi)

    def poll_notifs(self) -> list[tuple[str, bytes]]:
        """Return new edge notifications as (sender agent, message), ours only, in arrival order."""
        with self._lock:
            notifs = self._agent.get_new_notifs()
        return [
            (agent, m[len(NOTIF_PREFIX) :])
            for agent, msgs in notifs.items()
            for m in msgs
            if m.startswith(NOTIF_PREFIX)
        ]


# nixl._api makes every agent with pthrDelay = 0: its progress thread then spins, a whole core per
# process even when idle (100% of a core measured here). With a delay the thread sleeps in the UCX
# worker's event wait and wakes on traffic: ~2% idle. Transfers are polled by the caller anyway.
# $SERVEGRAPH_NIXL_PROGRESS_US=0 restores the spinning thread.
PROGRESS_DELAY_US = int(os.environ.get("SERVEGRAPH_NIXL_PROGRESS_US", "100"))
_make_lock = threading.Lock()


def quiet_agent(nixl_agent: Any, name: str, config: Any) -> Any:
    """``nixl_agent(name, config)`` with the progress thread's delay set (the API has no option for it)."""
    from nixl import _api

    bindings = getattr(_api, "nixlBind", None)
    if bindings is None or not hasattr(bindings, "nixlAgent"):
        return nixl_agent(name, config)
    make = bindings.nixlAgent

    def with_delay(agent_name: str, agent_config: Any) -> Any:
        agent_config.pthrDelay = PROGRESS_DELAY_US
        return make(agent_name, agent_config)

    with _make_lock:
        bindings.nixlAgent = with_delay
        try:
            return nixl_agent(name, config)
        finally:
            bindings.nixlAgent = make


def _key(remote: str, pairs: Pairs, dst_base: int, local_mem: tuple[str, int], remote_mem: tuple[str, int]) -> tuple:
    descs = pairs.tobytes() if isinstance(pairs, np.ndarray) else tuple(pairs)
    return (remote, dst_base, local_mem, remote_mem, descs)


def _release(write: PreparedWrite) -> None:
    try:
        write.xfer.release()
    except Exception as exc:  # cannot cancel an active transfer; NIXL frees it later
        log.debug("NIXL transfer handle not released: %s", exc)


SPIN_S = 2e-4  # spin this long before napping: a GPU write of MBs is done in tens of us
NAP_S = 5e-5  # then nap between polls so UCX's progress threads keep a core on small machines


_agent: NixlAgent | None = None
_agent_error: NixlUnavailable | None = None
_agent_lock = threading.Lock()


def process_agent(cuda_device: int | None = None) -> NixlAgent:
    """The process-wide agent, created on first use (CUDA first: see ``NixlAgent``); a failure is remembered.

    Args:
        cuda_device: a GPU whose VRAM the caller will move, if any (matters on first use only).

    Raises:
        NixlUnavailable: NIXL cannot run here.
    """
    global _agent, _agent_error
    with _agent_lock:
        if _agent is None and _agent_error is None:
            try:
                _agent = NixlAgent(cuda_device=cuda_device)
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
