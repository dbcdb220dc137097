"""Resources: ports that do not collide, and GPUs within the target's budget."""

from __future__ import annotations

from typing import Iterator

from ..errors import GraphError
from ..spec import GraphSpec, NodeSpec
from .base import ValidateOptions, err, label, names


def ports_unique(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Frontend(port=8000) >> Worker(model="m", port=8000)
    owner: dict[int, NodeSpec] = {}
    for n in spec.nodes:
        if n.port is None:
            continue
        if n.port in owner:
            first = owner[n.port]
            yield err(
                "port-collision",
                f"{label(n)} and '{first.name}' both use port {n.port}",
                "give each node its own port=, or leave port unset to have one assigned",
                n,
                field="port",
            )
        else:
            owner[n.port] = n
        if n.is_engine and n.replicas > 1:
            yield err(
                "port-collision",
                f"{label(n)} has replicas={n.replicas} but one fixed port {n.port}",
                "leave port unset so each replica gets its own",
                n,
                field="port",
            )


def gpu_budget(spec: GraphSpec, options: ValidateOptions) -> Iterator[GraphError]:
    # Worker(model="m", tp=8, replicas=2) on a target with 8 GPUs
    if options.gpu_budget is not None and spec.gpus_total > options.gpu_budget:
        parts = names([f"{n.name} {n.gpus_total}" for n in spec.nodes if n.gpus_total], limit=8)
        yield GraphError(
            "gpu-budget",
            f"graph '{spec.name}' needs {spec.gpus_total} GPUs ({parts}); the target has {options.gpu_budget}",
            "lower replicas or tp, or give the target more GPUs",
        )
    if options.gpus_per_host is not None:
        for n in spec.nodes:
            if n.gpus > options.gpus_per_host:
                yield err(
                    "gpu-budget",
                    f"{label(n)} needs {n.gpus} GPUs on one host; hosts have {options.gpus_per_host}",
                    f"spread it over hosts: nodes={-(-n.gpus // options.gpus_per_host)}, gpus={options.gpus_per_host}",
                    n,
                    field="gpus",
                )

