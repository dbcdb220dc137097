"""Targets: Plan -> files, each behind the :class:`Target` interface, found by name.

A target's ``render(plan, options)`` returns relative path -> file content;
:func:`compiler.targets.output.write_output` writes them.
"""

from __future__ import annotations

import importlib

from .base import NETWORKS, GpuBudget, PlanChoices, Target, TargetError, check_files_edges, option_docs

#: name -> "module:Class", imported on first use.
_REGISTRY = {
    "local": "compiler.targets.local:LocalTarget",
    "k8s": "compiler.targets.k8s:K8sTarget",
    "slurm": "compiler.targets.slurm:SlurmTarget",
}


def get_target(name: str) -> Target:
    """The target called ``name`` (imported on first use).

    Raises:
        KeyError: no such target.
    """
    try:
        module, cls = _REGISTRY[name].split(":")
    except KeyError:
        raise KeyError(f"unknown target '{name}' (known: {', '.join(target_names())})") from None
    return getattr(importlib.import_module(module), cls)()


def target_names() -> list[str]:
    """Names of all targets."""
    return sorted(_REGISTRY)


__all__ = ["NETWORKS", "GpuBudget", "PlanChoices", "Target", "TargetError", "check_files_edges", "get_target",
           "option_docs", "target_names"]
