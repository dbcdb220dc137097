"""Place services onto the nodes of one Slurm allocation (node indices, not names).

Rules, in order:

* a replica spanning H hosts takes H nodes no other multi-host replica uses;
* single-host GPU services are packed first-fit, largest first, into the free
  GPUs of the nodes opened so far, opening a node when none has room;
* services without GPUs (frontend, processor, mock engines) go on node 0, so
  the frontend's URL is the first node of the allocation.

Node names are known only at run time (``SLURM_JOB_NODELIST``); the script maps
index ``i`` to the i-th host name.
"""

from __future__ import annotations

from dataclasses import dataclass

from graph.plan import Plan

from .slurm_settings import StepSettings


@dataclass(frozen=True)
class Placement:
    """Where every service runs.

    Attributes:
        nodes: nodes the allocation asks for.
        hosts: service name -> allocation node indices (several for multi-host replicas).
        gpus_used: GPUs taken on each node, by index.
        cpus_used: cores taken by exclusive (GPU) steps on each node, by index.
    """

    nodes: int
    hosts: dict[str, tuple[int, ...]]
    gpus_used: tuple[int, ...]
    cpus_used: tuple[int, ...]

    def services_on(self, node: int) -> list[str]:
        """Names of the services with a process on ``node``, in Plan order."""
        return [name for name, idx in self.hosts.items() if node in idx]


def place(plan: Plan, steps: dict[str, StepSettings], gpus_per_node: int,
          nodes: int | None = None, max_nodes: int | None = None) -> Placement:
    """Assign every service of ``plan`` to allocation nodes.

    Args:
        plan: the Plan.
        steps: each service's step settings (its GPUs per host and cores).
        gpus_per_node: GPUs on one node.
        nodes: allocation size asked for (None: as many as needed).
        max_nodes: the most nodes the partition gives (None: unknown).

    Raises:
        ValueError: a service needs more GPUs on one host than a node has, or the
            graph needs more nodes than ``nodes``/``max_nodes`` allow (the message
            gives the placement and the fix).
    """
    free: list[int] = []
    cpus: list[int] = []
    hosts: dict[str, tuple[int, ...]] = {}

    def open_node() -> int:
        free.append(gpus_per_node)
        cpus.append(0)
        return len(free) - 1

    for s in plan.services:
        gpus = steps[s.name].gpus
        if gpus > gpus_per_node:
            raise ValueError(
                f"service '{s.name}' needs {gpus} GPUs on each host but nodes have {gpus_per_node} "
                f"(-O gpus_per_node); spread node '{s.node}' over hosts: "
                f"nodes={-(-gpus // gpus_per_node) * s.hosts}, gpus={gpus_per_node}"
            )
    multi = [s for s in plan.services if s.hosts > 1]
    single = sorted((s for s in plan.services if s.hosts == 1 and steps[s.name].gpus > 0),
                    key=lambda s: -steps[s.name].gpus)
    for s in multi:
        idx = tuple(open_node() for _ in range(s.hosts))
        hosts[s.name] = idx
        for i in idx:
            free[i] -= steps[s.name].gpus
            cpus[i] += steps[s.name].cpus
    for s in single:
        gpus = steps[s.name].gpus
        target = next((i for i, f in enumerate(free) if f >= gpus), None)
        if target is None:
            target = open_node()
        hosts[s.name] = (target,)
        free[target] -= gpus
        cpus[target] += steps[s.name].cpus
    if not free:
        open_node()
    for s in plan.services:
        hosts.setdefault(s.name, (0,))
    hosts = {s.name: hosts[s.name] for s in plan.services}
    needed = len(free)
    placement = Placement(
        nodes=max(needed, nodes or 0),
        hosts=hosts,
        gpus_used=tuple(gpus_per_node - f for f in free) + (0,) * max(0, (nodes or 0) - needed),
        cpus_used=tuple(cpus) + (0,) * max(0, (nodes or 0) - needed),
    )
    for limit, flag in ((nodes, "nodes"), (max_nodes, "max_nodes")):
        if limit is not None and needed > limit:
            raise ValueError(
                f"graph '{plan.graph}' needs {needed} nodes of {gpus_per_node} GPUs "
                f"({describe(placement)}) but -O {flag}={limit}; "
                "lower replicas or tp, or allow more nodes"
            )
    return placement


def describe(placement: Placement) -> str:
    """``node 0: prefill-0, decode-0 (3 GPUs); node 1: ...`` for messages."""
    parts = []
    for i in range(placement.nodes):
        names = placement.services_on(i)
        parts.append(f"node {i}: {', '.join(names) or '-'} ({placement.gpus_used[i]} GPUs)")
    return "; ".join(parts)
