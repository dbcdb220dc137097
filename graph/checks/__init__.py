"""The graph's checks: small named functions, each yielding the problems it finds, run in this order.

Next to each check a comment shows a tiny graph that breaks it. What only an
engine knows (its values, which prefill/decode pairs its connector maps) is
checked by the compiler (compiler/checks.py), not here.
"""

from __future__ import annotations

from .base import Check, ValidateOptions
from .edges import tensor_edges_compatible
from .names import dns_names, duplicate_names, graph_name
from .nodes import env_names, has_model, known_platforms, memory_quantity, parallelism_fits_gpus
from .resources import gpu_budget, ports_unique
from .structure import acyclic, connected, duplicate_edges, one_frontend, required_ports, serves_something

CHECKS: tuple[Check, ...] = (
    graph_name, duplicate_names, dns_names,
    one_frontend, acyclic, duplicate_edges, connected, required_ports, serves_something,
    has_model, parallelism_fits_gpus, known_platforms, env_names, memory_quantity,
    tensor_edges_compatible,
    ports_unique, gpu_budget,
)

__all__ = ["CHECKS", "Check", "ValidateOptions"]
