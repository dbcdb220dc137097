"""CUDA before NIXL: a process's NIXL agent must start after CUDA is up in it, or VRAM crawls.

A process whose agent started before it had a CUDA context still registers
and moves VRAM, but through UCX's software path: on one H200 (two processes,
UCX_TLS=cuda_copy,cuda_ipc,tcp,sm,self) 0.6 GB/s READ and WRITE alike against
1.3-1.5 TB/s with CUDA first, and a sender of ours 0.4 GB/s (issue 22).
What decides it is when the peer's metadata is loaded: through an agent that
started without CUDA, 256 MiB VRAM->VRAM went at 0.47 GB/s when the
receiver's metadata was loaded before CUDA and at 1790 GB/s when it was loaded
after (``bench/nixl_edge_cuda_order.py``, one H200).

So the edge makes a CUDA context before it starts the agent whenever VRAM may
be registered, and before it loads a receiver whose region is VRAM; and an
agent that started without CUDA refuses VRAM (``NixlAgent.register``) rather
than risk the software path with a peer it loaded early.

A VRAM array can only reach the edge as a torch tensor, so "VRAM may be
registered" is: torch is imported and sees a GPU, or the caller says so (a
receiver of VRAM, a sender to one).
"""

from __future__ import annotations

import sys
from typing import Any

CURRENT_DEVICE = -1  # ``before_agent``'s device: the one torch makes current


def _torch(load: bool) -> Any:
    torch = sys.modules.get("torch")
    if torch is None and load:
        try:
            import torch
        except ImportError:
            return None
    return torch


def before_agent(device: int | None = None) -> bool:
    """Make a CUDA context before a NIXL agent starts (or loads a VRAM peer), if VRAM may be
    involved; whether CUDA is up.

    Args:
        device: a GPU the agent will move VRAM of (``CURRENT_DEVICE``: the current one),
            torch imported for it if need be; None: only if torch is imported already.
    """
    torch = _torch(load=device is not None)
    if torch is None or not torch.cuda.is_available():
        return False
    index = torch.cuda.current_device() if device in (None, CURRENT_DEVICE) else device
    torch.empty(1, device=f"cuda:{index}")  # the context itself: torch makes it on the first allocation
    return True


VRAM_WITHOUT_CUDA = (
    "this process's NIXL agent started before CUDA was initialised in it, and UCX moves VRAM to a peer "
    "such an agent loaded before CUDA through its software path (~0.5 GB/s instead of ~1.7 TB/s on an "
    "H200); import torch before the process's first TensorReceiver/TensorSender (the edge then "
    "initialises CUDA first), or initialise CUDA (e.g. torch.empty(1, device='cuda')) before it"
)
