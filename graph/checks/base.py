"""What every graph check shares: the target facts it may use and small helpers for its messages."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

import networkx as nx

from ..errors import GraphError, SourceLocation
from ..spec import EdgeSpec, GraphSpec, Location, NodeSpec


@dataclass(frozen=True)
class ValidateOptions:
    """What validation knows about the target.

    Args:
        gpu_budget: GPUs the target has in all (None: unknown, not checked).
        gpus_per_host: GPUs on one host (None: unknown, not checked).
        quiet_nodes: nodes whose structural problems (dangling, unreachable,
            unconnected ports) are already explained by a recorded edge problem;
            :func:`validate_spec` fills it so one mistake gives one message.
    """

    gpu_budget: int | None = None
    gpus_per_host: int | None = None
    quiet_nodes: frozenset[str] = frozenset()




Check = Callable[[GraphSpec, ValidateOptions], Iterable[GraphError]]

# Longest node name: room for "-<replica>" and target suffixes within DNS-1123's 63.
MAX_NAME_LEN = 40
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def err(code: str, message: str, hint: str, node: NodeSpec | None = None, **kw: object) -> GraphError:
    """A problem located at ``node``'s declaration."""
    return GraphError(code, message, hint, node=node.name if node else None, where=where(node), **kw)  # type: ignore[arg-type]


def where(item: NodeSpec | EdgeSpec | None) -> SourceLocation | None:
    """The declaration's file and line, as errors carry it."""
    loc: Location | None = item.where if item else None
    return SourceLocation(loc.file, loc.line) if loc else None


def label(node: NodeSpec) -> str:
    """``Prefill 'p1'``, ``Guard 'guard'``."""
    return f"{node.kind} '{node.name}'"


_LAST_DIGRAPH: list[tuple[GraphSpec, nx.DiGraph]] = []


def digraph(spec: GraphSpec) -> nx.DiGraph:
    """The graph's structure for networkx (built once per spec; several checks read it, none change it)."""
    if _LAST_DIGRAPH and _LAST_DIGRAPH[0][0] is spec:
        return _LAST_DIGRAPH[0][1]
    g = nx.DiGraph()
    g.add_nodes_from(n.name for n in spec.nodes)
    g.add_edges_from((e.src, e.dst) for e in spec.edges)
    _LAST_DIGRAPH[:] = [(spec, g)]
    return g


def duplicated(spec: GraphSpec) -> set[str]:
    """Names given to several nodes: edges at them are ambiguous, so structure checks skip them."""
    counts = Counter(n.name for n in spec.nodes)
    return {name for name, k in counts.items() if k > 1}


def names(items: list[str], limit: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 7 more`` for messages about many nodes."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
