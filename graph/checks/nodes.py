"""Each node's own settings: a model, GPUs that fit its parallelism, platform keys, env names, memory."""

from __future__ import annotations

import re
from typing import Iterator

from ..errors import GraphError
from ..spec import GraphSpec, NodeSpec
from .base import ValidateOptions, err, label

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Kubernetes resource.Quantity, e.g. 64Gi, 512M, 1.5G, 1e9.
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_PLATFORMS = frozenset({"local", "k8s", "slurm"})


def has_model(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Worker()   -- which model?
    for n in spec.nodes:
        if n.is_engine and not n.model:
            yield err("no-model", f"{label(n)} has no model", "set model='org/name' or a local path", n, field="model")


def parallelism_fits_gpus(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Prefill(model="m", tp=4, gpus=2)  -- tp*pp*dp = 4 GPUs but only 2 given
    for n in spec.nodes:
        if not n.is_engine:
            continue
        ranks = n.tp * n.pp * n.dp
        if n.gpus * n.nodes != ranks:
            yield err(
                "gpus-mismatch",
                f"{label(n)}: tp*pp*dp = {n.tp}*{n.pp}*{n.dp} = {ranks} ranks but gpus*nodes = {n.gpus}*{n.nodes} = {n.gpus * n.nodes}",
                _fit_hint(n, ranks),
                n,
                field="gpus",
            )


def _fit_hint(n: NodeSpec, ranks: int) -> str:
    if ranks % n.nodes == 0:
        return f"set gpus={ranks // n.nodes} (GPUs per host of one replica) or change tp/pp/dp"
    return (f"{ranks} ranks do not split evenly over nodes={n.nodes} hosts: make tp*pp*dp equal gpus*nodes "
            f"({n.gpus}*{n.nodes} = {n.gpus * n.nodes}), or set nodes to a divisor of {ranks}")


def known_platforms(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Worker(model="m", platform={"k8": {...}})
    for n in spec.nodes:
        for key in sorted(set(n.platform) - _PLATFORMS):
            yield err(
                "unknown-platform",
                f"{label(n)}: platform['{key}'] is not a target",
                f"use one of {sorted(_PLATFORMS)}",
                n,
                field="platform",
            )


def env_names(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Worker(model="m", env={"HF-TOKEN": "x"})  -- shells, Kubernetes and srun reject it
    for n in spec.nodes:
        for key in sorted(k for k in n.env if not _ENV_NAME.match(k)):
            fixed = re.sub(r"[^A-Za-z0-9_]", "_", key)
            yield err(
                "bad-env",
                f"{label(n)}: env name '{key}' is not a valid environment variable name",
                f"use letters, digits and '_', not starting with a digit, e.g. '{fixed}'",
                n,
                field="env",
            )


def memory_quantity(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Worker(model="m", resources=Resources(memory="64GB"))  -- Kubernetes wants 64Gi or 64G
    for n in spec.nodes:
        if n.memory is not None and not _QUANTITY.match(n.memory):
            yield err(
                "bad-memory",
                f"{label(n)}: resources.memory = '{n.memory}' is not a quantity",
                "write it as Kubernetes does: a number with Ki/Mi/Gi/Ti (or k/M/G/T), e.g. '64Gi'",
                n,
                field="resources",
            )

