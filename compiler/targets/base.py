"""The one interface every target implements, and the error a target raises.

A target turns a Plan into files: a pure, deterministic function of (Plan,
options). It reads the Plan only (never graph/ or an engine adapter), declares
its options as a frozen dataclass whose docstring documents each field under
``Args:`` (``graph targets`` prints them), says whether every service runs on
one host, and may name the GPU budget its options imply so that the graph is
checked against it before compiling. See docs/adding-a-target.md.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from graph.plan import NETWORKS, Plan

SettingsT = TypeVar("SettingsT", bound=BaseModel)


class TargetError(ValueError):
    """A Plan (or a node's platform settings) a target cannot lower; names the node where there is one."""

    def __init__(self, message: str, node: str | None = None, hint: str = "") -> None:
        super().__init__(message)
        self.node = node
        self.hint = hint


@dataclass(frozen=True)
class GpuBudget:
    """What a target's options say about the GPUs it can give (None: unknown, not checked)."""

    total: int | None = None
    per_host: int | None = None


@dataclass(frozen=True)
class PlanChoices:
    """What a target's options decide about the Plan itself (the CLI hands them to the planner).

    Args:
        network: how tensor edges cross hosts: ``auto`` (UCX picks: RDMA first, shared memory
            on one host) or ``tcp`` (TCP only; see compiler/transport.py).
        shared_dir: a folder every host of the target sees, for what engines hand each other
            as files (vLLM's encoder cache); None: none, so such ends must share a host.

    Raises:
        ValueError: an unknown ``network``.
    """

    network: str = "auto"
    shared_dir: str | None = None

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise ValueError(f"network '{self.network}' is unknown; use -O network=auto or -O network=tcp")


class Target(Protocol):
    """A place a graph can run."""

    #: The name ``--target`` takes.
    name: ClassVar[str]
    #: One line for ``graph targets``.
    summary: ClassVar[str]
    #: Every service runs on this one host (loopback addresses, `graph run`).
    single_host: ClassVar[bool]
    #: Its options: a frozen dataclass, documented under ``Args:``, validated in ``__post_init__``.
    Options: ClassVar[type]

    def render(self, plan: Plan, options: Any) -> dict[str, str]:
        """Relative path -> file content.

        Raises:
            TargetError: what of the Plan this target cannot lower, naming the node.
        """
        ...

    def gpu_budget(self, options: Any) -> GpuBudget:
        """The GPUs ``options`` say the target has, to check the graph against before compiling."""
        ...

    def plan_choices(self, options: Any) -> PlanChoices:
        """What ``options`` decide about the Plan: the network between hosts, a folder all hosts share."""
        ...


def check_files_edges(plan: Plan, hosts: dict[str, tuple[str, ...]], fix: str) -> None:
    """Refuse a Plan whose files edge (engines handing tensors over as files in a folder) has ends on
    different hosts; a target calls it when it has no folder every host sees.

    Args:
        plan: the Plan.
        hosts: service name -> the hosts it runs on, as the target places it (equal names: one host).
        fix: how this target is given a shared folder (or made to put the ends on one host).

    Raises:
        TargetError: naming the consuming node, both services, their hosts and the folder.
    """
    for edge in plan.edges:
        if edge.transport != "files" or edge.settings is None:
            continue
        for src in plan.of_node(edge.src):
            for dst in plan.of_node(edge.dst):
                if set(hosts[src.name]) != set(hosts[dst.name]):
                    raise TargetError(
                        f"node '{edge.dst}': its {edge.type} edge from '{edge.src}' moves files through "
                        f"{edge.settings.folder} (not NIXL: `graph inspect --edges` says why), but {src.name} runs "
                        f"on {', '.join(hosts[src.name])} and {dst.name} on {', '.join(hosts[dst.name])}, and that "
                        "folder is not shared between hosts",
                        node=edge.dst, hint=fix)


def option_docs(options_class: type) -> dict[str, str]:
    """Each option's description, from the ``Args:`` section of the Options docstring."""
    doc = options_class.__doc__ or ""
    found: dict[str, str] = {}
    current: list[str] = []
    in_args = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        match = re.match(r"^([a-z_][a-z0-9_, ]*):\s*(.*)$", stripped)
        if match and line.startswith(" " * 8) and not line.startswith(" " * 12):
            current = [n.strip() for n in match.group(1).split(",")]
            for name in current:
                found[name] = match.group(2)
        elif stripped and current:
            for name in current:
                found[name] += " " + stripped
    fields = {f.name for f in dataclasses.fields(options_class)}
    return {k: v for k, v in found.items() if k in fields}


def platform_settings(target: str, node: str, raw: dict[str, Any], model: type[SettingsT]) -> SettingsT:
    """A node's ``platform[target]`` read into the target's settings model.

    Raises:
        TargetError: an unknown key or a badly typed value, naming the node, the key and the known keys.
    """
    try:
        return model(**raw)
    except ValidationError as exc:
        known = ", ".join(sorted(model.model_fields))
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"platform['{target}'] key '{key}' is unknown (known: {known})")
            else:
                problems.append(f"platform['{target}']['{key}']: {err['msg']}")
        raise TargetError(f"node '{node}': " + "; ".join(problems), node=node) from None
