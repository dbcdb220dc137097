"""Targets: Plan -> files. Each is a pure function of (plan, options), looked up by name.

A target module exposes ``render(plan, options) -> dict[str, str]`` (relative
path -> file content) and an ``Options`` dataclass. :func:`write_output` writes
the files atomically.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_REGISTRY = {
    "local": "compiler.targets.local",
    "k8s": "compiler.targets.k8s",
    "slurm": "compiler.targets.slurm",
}


def get_target(name: str) -> ModuleType:
    """The target module called ``name`` (imported on first use)."""
    try:
        return importlib.import_module(_REGISTRY[name])
    except KeyError:
        raise KeyError(f"unknown target '{name}' (known: {', '.join(sorted(_REGISTRY))})") from None


def target_names() -> list[str]:
    """Names of all targets."""
    return sorted(_REGISTRY)
