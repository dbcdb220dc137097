"""Loaded at startup by a Python process with this folder on PYTHONPATH: the engines of the real-vLLM
tests (their fixtures put it there), or yours on a small box (README, "Real engines on this machine").

nixl._api starts every NIXL agent's progress thread with no delay between polls,
so each agent spins a core (our own agents set a delay: nodes/transport/nixl_backend
``quiet_agent``). vLLM's prefill and decode workers make one each: pipelines/pd.py on
real vLLM, idle, took 1.98 of this 2-core box's cores, 0.06 with this hook; and vLLM's
NIXL handshake, whose 5 s timeout is fixed in its code, once timed out in CI among
them. When nixl._api is imported, this wraps its agent constructor to set the same
delay ($SERVEGRAPH_NIXL_PROGRESS_US, default 100 us; 0 spins).

It also asks Linux for the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM), which a
process must request before it uses AMX: vLLM 0.32's CPU build runs AMX bf16
kernels without asking, so on a CPU with AMX its worker died of SIGILL on the first
request in bf16 (measured here: a tiny Llama, --dtype bfloat16, worker "died
unexpectedly"); with the permission asked for at start-up it answers. Every Python
process runs this file, vLLM's spawned workers too.
"""

import ctypes
import importlib.abc
import importlib.util
import os
import platform
import sys

_DELAY_US = int(os.environ.get("SERVEGRAPH_NIXL_PROGRESS_US", "100"))


def _quiet(api) -> None:
    bindings = getattr(api, "nixlBind", None)
    make = getattr(bindings, "nixlAgent", None)
    if make is None:
        return

    def with_delay(name, config):
        config.pthrDelay = _DELAY_US
        return make(name, config)

    bindings.nixlAgent = with_delay


class _AfterNixlApi(importlib.abc.MetaPathFinder):
    """Finds nothing itself: lets the normal finders load nixl._api, then wraps it once."""

    def find_spec(self, name, path=None, target=None):
        if not (name.startswith("nixl") and name.endswith("._api")):  # nixl._api is nixl_cu12._api or the like
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _quiet(module)

        spec.loader.exec_module = exec_module
        return spec


if _DELAY_US > 0:
    sys.meta_path.insert(0, _AfterNixlApi())


def _allow_amx() -> None:
    """ARCH_REQ_XCOMP_PERM for XTILEDATA (Linux >= 5.16 on x86-64); a no-op elsewhere or without AMX."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(158, 0x1023, 18)  # SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA
    except (OSError, AttributeError):
        pass


_allow_amx()
