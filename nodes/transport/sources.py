"""A sender's source memory: what NIXL may read from where it is, and what is staged first."""

from __future__ import annotations

from .memory import ArrayInfo
from .nixl_backend import NixlAgent, Registration

# Below these sizes a run is copied into staging rather than given its own
# descriptor. Measured with bench/nixl_edge.py on an H100 host: a descriptor
# costs ~3.5 us extra DRAM->DRAM (a 64 KiB copy ~8 us: keep them direct) and
# ~12 us VRAM->VRAM (a 4 MiB device copy ~4 us: stage them).
STAGE_BELOW = {"DRAM": 32 << 10, "VRAM": 4 << 20}


class Sources:
    """The source ranges one sender registered with its NIXL agent, and the staging rule.

    Args:
        agent: the process's NIXL agent.
        stage_below: runs shorter than this are staged (None: per memory kind, ``STAGE_BELOW``).
    """

    def __init__(self, agent: NixlAgent, stage_below: int | None) -> None:
        self._agent = agent
        self.stage_below = stage_below
        self._regs: list[Registration] = []

    def threshold(self, mem: str) -> int:
        """Runs shorter than this are copied through staging rather than written from where they are."""
        return self.stage_below if self.stage_below is not None else STAGE_BELOW[mem]

    def covered(self, addr: int, nbytes: int) -> bool:
        """Whether ``[addr, addr+nbytes)`` lies in one registered range."""
        end = addr + nbytes
        for reg in self._regs:
            if reg.lo <= addr and end <= reg.hi:
                return True
        return False

    def in_place(self, info: ArrayInfo) -> bool:
        """One array big enough and registered: WRITTEN from where it is, no staging copy."""
        return info.nbytes >= self.threshold(info.mem) and self.covered(info.addr, info.nbytes)

    def is_registered(self, info: ArrayInfo) -> bool:
        """Whether exactly this array's range was registered with ``register``."""
        return any(r.lo == info.addr and r.hi == info.addr + info.nbytes for r in self._regs)

    def register(self, info: ArrayInfo) -> None:
        """Register the array's range for good (until ``unregister`` or ``close``)."""
        self._regs.append(self._agent.register(info.addr, info.nbytes, info.mem, info.device))

    def unregister(self, addr: int) -> None:
        """Deregister every range registered from ``addr``."""
        for reg in [r for r in self._regs if r.lo == addr]:
            self._regs.remove(reg)
            self._agent.deregister(reg)

    def for_this_send(self, addr: int, nbytes: int, mem: str, device: int, temp: list[Registration]) -> None:
        """Register a big source that is not registered for this send only (into ``temp``, which the
        caller deregisters afterwards): cheaper than copying it through staging."""
        if not self.covered(addr, nbytes):
            temp.append(self._agent.register(addr, nbytes, mem, device))

    def close(self) -> None:
        """Deregister everything."""
        for reg in self._regs:
            self._agent.deregister(reg)
        self._regs = []
