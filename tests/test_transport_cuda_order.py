"""CUDA before NIXL (issue 22): the edge makes a CUDA context before its NIXL agent whenever VRAM may
be registered, and an agent that started without one refuses VRAM instead of moving it through
UCX's software path (~2,000x slower on an H200).

This box has no GPU: torch is a stand-in that records when CUDA is initialised, the NIXL agent is
real and records when it starts. ``bench/nixl_edge_cuda_order.py`` proves the speed on a GPU.
"""

from __future__ import annotations

import base64
import dataclasses
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from nodes.transport import TensorReceiver, TensorSender, TransportError, nixl_backend
from nodes.transport.nixl_backend import NixlUnavailable, Registration, close_process_agent, process_agent


class FakeTensor:
    """A contiguous CUDA tensor as ``memory.describe`` sees one."""

    def __init__(self, nbytes: int, device: int = 0) -> None:
        self._host = np.zeros(nbytes, np.uint8)  # an address NIXL would accept, were it DRAM
        self.nbytes, self.shape, self.dtype, self.is_cuda, self._device = nbytes, (nbytes,), "torch.uint8", True, device

    def is_contiguous(self) -> bool:
        return True

    def data_ptr(self) -> int:
        return self._host.ctypes.data

    def get_device(self) -> int:
        return self._device


def fake_torch(calls: list[str], gpus: bool = True) -> types.ModuleType:
    """torch as far as the edge uses it: a GPU's first allocation makes its CUDA context, recorded as ``cuda:N``."""
    torch = types.ModuleType("torch")
    torch.Tensor = FakeTensor
    torch.uint8 = "torch.uint8"

    def empty(n: int, dtype: Any = None, device: str = "cpu") -> np.ndarray:
        if device.startswith("cuda") and device not in calls:
            calls.append(device)
        return np.zeros(n, np.uint8)

    torch.empty = empty
    torch.cuda = types.SimpleNamespace(is_available=lambda: gpus, current_device=lambda: 0)
    return torch


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A fresh process agent per test, whose start is recorded (as ``agent``) in the list yielded."""
    try:
        process_agent()
    except NixlUnavailable as exc:
        pytest.skip(f"NIXL not usable here ({exc}); install nixl-cu12==1.5.1 and nixl==1.5.1")
    close_process_agent()
    seen: list[str] = []
    start = nixl_backend.quiet_agent

    def recorded(*a: Any, **k: Any) -> Any:
        seen.append("agent")
        return start(*a, **k)

    monkeypatch.setattr(nixl_backend, "quiet_agent", recorded)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    yield seen
    close_process_agent()


def test_with_torch_imported_cuda_comes_before_the_agent(calls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """torch imported and a GPU seen: a VRAM tensor may come, so the context is made first."""
    monkeypatch.setitem(sys.modules, "torch", fake_torch(calls))
    agent = process_agent()
    assert calls == ["cuda:0", "agent"]
    assert agent.cuda


def test_a_vram_receiver_makes_its_gpus_context_before_the_agent_and_registers_after(
    calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver on cuda:1: that GPU's context, the agent, then the region's registration."""
    monkeypatch.setitem(sys.modules, "torch", fake_torch(calls))

    def register(self: Any, addr: int, nbytes: int, mem: str, device: int) -> Registration:
        calls.append(f"register {mem} {device}")
        return Registration(None, addr, addr + nbytes)

    monkeypatch.setattr(nixl_backend.NixlAgent, "register", register)
    monkeypatch.setattr(nixl_backend.NixlAgent, "deregister", lambda self, reg: None)
    rx = TensorReceiver(1 << 20, backend="nixl", device="cuda:1")
    try:
        assert calls == ["cuda:1", "agent", "register VRAM 1"]
    finally:
        rx.close()


def test_a_sender_to_a_vram_receiver_makes_cuda_ready_before_it_loads_the_receiver(
    calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What decides the software path is when the receiver's metadata is loaded (on an H200 0.47 GB/s
    loaded before CUDA, 1790 GB/s after, through the same agent): a sender to a VRAM receiver makes
    CUDA ready first, even where the process's agent started without it; to a DRAM one it does not."""
    from nixl._api import nixl_agent, nixl_agent_config

    peer = nixl_agent("cuda-order-peer", nixl_agent_config(backends=["UCX"]))  # the receiver's agent, elsewhere
    with TensorReceiver(1 << 20, backend="nixl") as rx:  # no torch yet: the agent starts without CUDA
        monkeypatch.setitem(sys.modules, "torch", fake_torch(calls))
        agent = process_agent()
        load = agent._agent.add_remote_agent
        monkeypatch.setattr(agent._agent, "add_remote_agent", lambda md: calls.append("load receiver") or load(md))
        metadata = base64.b64encode(peer.get_agent_metadata()).decode()
        for mem in ("DRAM", "VRAM"):
            handle = dataclasses.replace(rx.handle(), agent="cuda-order-peer", metadata=metadata, mem=mem)
            TensorSender(handle, backend="nixl").close()
            agent._remotes.clear()  # loaded afresh for the next one
        assert calls == ["agent", "load receiver", "cuda:0", "load receiver"]
        assert not agent.cuda  # still refuses VRAM of its own (see below)


def test_without_torch_no_cuda_and_vram_is_refused_with_the_fix(
    calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's trap: the process's agent started before torch (so before CUDA), then a VRAM
    tensor comes. Registering it is refused, saying why and what to do; DRAM still registers."""
    with TensorReceiver(16 << 20, backend="nixl") as rx:  # DRAM, no torch: the agent starts without CUDA
        assert calls == ["agent"] and not process_agent().cuda
        monkeypatch.setitem(sys.modules, "torch", fake_torch(calls))
        tx = TensorSender(rx.handle(), backend="nixl")
        try:
            with pytest.raises(TransportError, match=r"started before CUDA .* software path .* import torch before"):
                tx.register(FakeTensor(1 << 20))
            with pytest.raises(TransportError, match=r"started before CUDA"):
                tx.send([FakeTensor(4 << 20)], timeout=5)  # the general path registers it for the send
            tx.register(np.zeros(1 << 20, np.uint8))
        finally:
            tx.close()
    assert calls == ["agent"]  # nothing made a CUDA context after the agent


def test_torch_without_a_gpu_starts_the_agent_without_cuda(calls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(calls, gpus=False))
    assert not process_agent().cuda
    assert calls == ["agent"]
