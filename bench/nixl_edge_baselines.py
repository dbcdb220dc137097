"""What bench/nixl_edge.py measures our edge against: raw NIXL, and a memory copy without any transport.

Also the memory helpers both sides of the bench share (numpy on cpu, torch on cuda).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from nodes.transport.nixl_backend import NAP_S, SPIN_S, quiet_agent
from nodes.transport.nixl_calls import TransferCalls


def alloc(nbytes: int, device: str) -> Any:
    """A filled buffer (content is irrelevant to bandwidth; a memset is cheap)."""
    if device == "cuda":
        import torch

        return torch.full((nbytes,), 7, dtype=torch.uint8, device="cuda")
    return np.full(nbytes, 7, dtype=np.uint8)


def addr(buf: Any) -> int:
    """Address of a buffer from ``alloc``."""
    return buf.data_ptr() if hasattr(buf, "data_ptr") else buf.ctypes.data


def mem_kind(device: str) -> str:
    """NIXL's memory kind for ``--device``."""
    return "VRAM" if device == "cuda" else "DRAM"


def sync(device: str) -> None:
    """Wait for the GPU's queued work (cuda only)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# -- raw NIXL -------------------------------------------------------------------


def raw_agent(name: str) -> Any:
    """Raw NIXL with our agent's settings (its progress thread's delay: see PROGRESS_DELAY_US)."""
    from nixl._api import nixl_agent, nixl_agent_config

    return quiet_agent(nixl_agent, name, nixl_agent_config(backends=["UCX"]))


def poll_xfer(check: Callable[[], Any], deadline: float, in_prog: Any = "PROC") -> Any:
    """Poll ``check()`` until it is not ``in_prog`` or ``deadline`` passes: the edge's policy
    (spin ``SPIN_S``, then nap ``NAP_S``), as a pure spin starves UCX's progress threads on few cores."""
    start = time.monotonic()
    state = check()
    while state == in_prog:
        now = time.monotonic()
        if now > deadline:
            break
        if now - start > SPIN_S:
            time.sleep(NAP_S)
        state = check()
    return state


class RawWrite:
    """One prepared raw NIXL WRITE of ``pairs``, re-posted on each call: through ``nixl._api``'s
    ``transfer``/``check_xfer_state``, or with ``bindings`` through the calls under them, as our
    edge posts (``--profile``)."""

    def __init__(
        self,
        agent: Any,
        remote: str,
        pairs: list[tuple[int, int, int]],
        mem: str,
        notif: bytes = b"raw",
        bindings: bool = False,
    ) -> None:
        local = agent.get_xfer_descs([(s, n, 0) for s, _, n in pairs], mem)
        far = agent.get_xfer_descs([(d, n, 0) for _, d, n in pairs], mem)
        self.notif = notif
        self.handle = agent.initialize_xfer("WRITE", local, far, remote, b"raw")
        self.calls = TransferCalls(agent, use_bindings=bindings)
        self.native = self.calls.handle(self.handle)

    def __call__(self) -> None:
        calls, native = self.calls, self.native
        status = calls.start(native, self.notif)
        if status == calls.in_prog:
            status = poll_xfer(lambda: calls.state(native), time.monotonic() + 120, calls.in_prog)
        if status != calls.done:
            raise RuntimeError(f"raw NIXL write failed: {status}")

    def close(self) -> None:
        self.handle.release()


ROTATE_SLOTS = 16  # as many as a sender of ours leases


class RawRotation:
    """Raw NIXL writing a different slot each time (``--profile``): what moving between slots costs."""

    def __init__(self, writes: list[RawWrite]) -> None:
        self.writes, self.turn = writes, 0

    def __call__(self) -> None:
        self.turn = (self.turn + 1) % len(self.writes)
        self.writes[self.turn]()

    def close(self) -> None:
        for write in self.writes:
            write.close()


def ceiling(nbytes: int, device: str, reps: int) -> dict[str, list[float]]:
    """Copy bandwidth without any transport: one process, and (cuda) CUDA IPC."""
    src, dst = alloc(nbytes, device), alloc(nbytes, device)
    times = []
    for i in range(reps + 1):
        sync(device)
        t0 = time.perf_counter()
        if device == "cuda":
            dst.copy_(src)
        else:
            np.copyto(dst, src)
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    result = {"ceiling": times}
    if device == "cuda":
        result["ceiling/ipc"] = _cuda_ipc_times(dst, nbytes, reps)
    return result


def _ipc_child(dst: Any, nbytes: int, reps: int, out: Any) -> None:
    import torch

    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device="cuda")
    times = []
    for i in range(reps + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    out.put(times)


def _cuda_ipc_times(dst: Any, nbytes: int, reps: int) -> list[float]:
    import torch.multiprocessing as tmp

    ctx = tmp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_ipc_child, args=(dst, nbytes, reps, out))
    proc.start()
    times = out.get(timeout=300)
    proc.join()
    return times
