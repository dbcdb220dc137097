"""Names: the graph's and its nodes' (they label every Kubernetes object and Slurm job)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterator

from ..errors import GraphError, SourceLocation
from ..spec import GraphSpec
from .base import DNS_LABEL, MAX_NAME_LEN, ValidateOptions, err


def graph_name(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Graph("Llama PD")  -- the name labels every Kubernetes object and Slurm job
    if not DNS_LABEL.match(spec.name) or len(spec.name) > 63:
        fixed = re.sub(r"[^a-z0-9-]+", "-", spec.name.lower()).strip("-")[:63] or "graph"
        at = SourceLocation(spec.where.file, spec.where.line) if spec.where else None
        yield GraphError(
            "bad-graph-name",
            f"graph name '{spec.name}' is not a DNS-1123 label of at most 63 characters",
            f"use lower-case letters, digits and '-', starting with a letter, e.g. Graph('{fixed}')",
            field="name",
            where=at,
        )


def duplicate_names(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Prefill(name="p"); Decode(name="p")
    counts = Counter(n.name for n in spec.nodes)
    seen: set[str] = set()
    for n in spec.nodes:
        if counts[n.name] > 1 and n.name not in seen:
            seen.add(n.name)
            yield err("duplicate-name", f"{counts[n.name]} nodes are named '{n.name}'", "give each node a unique name=", n, field="name")


def dns_names(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Prefill(name="Prefill_A")  -- Kubernetes rejects upper case and '_'
    for n in spec.nodes:
        if not DNS_LABEL.match(n.name) or len(n.name) > MAX_NAME_LEN:
            fixed = re.sub(r"[^a-z0-9-]+", "-", n.name.lower()).strip("-")[:MAX_NAME_LEN] or "node"
            yield err(
                "bad-name",
                f"node name '{n.name}' is not a DNS-1123 label of at most {MAX_NAME_LEN} characters",
                f"use lower-case letters, digits and '-', starting with a letter, e.g. name='{fixed}'",
                n,
                field="name",
            )

