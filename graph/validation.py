"""Validation: every check over the resolved graph, every problem at once, in the order of the file.

Every check is linear in the size of the graph (dict lookups, one pass of
networkx's strongly connected components), so 10,000-node graphs validate in
about a second; ``bench/validate_scale.py`` measures it.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from .checks import CHECKS, ValidateOptions
from .errors import GraphError
from .graph import Graph
from .spec import GraphSpec, resolve

#: Problems recorded while the graph was written that concern an edge: both of its
#: nodes then get no dangling/unreachable/unconnected-port message of their own.
_EDGE_CODES = frozenset({"unknown-port", "ambiguous-port", "port-type-mismatch", "combined-role-split",
                         "cross-graph-edge"})

__all__ = ["ValidateOptions", "report_order", "validate", "validate_spec"]


def validate(graph: Graph, options: ValidateOptions | None = None) -> tuple[GraphSpec, list[GraphError]]:
    """Resolve ``graph`` and run every check.

    Args:
        graph: the graph as written.
        options: what is known of the target.

    Returns:
        The resolved spec and the list of all problems (empty when valid).
    """
    spec = resolve(graph)
    return spec, validate_spec(spec, options, recorded=graph.problems)


def validate_spec(
    spec: GraphSpec, options: ValidateOptions | None = None, recorded: Iterable[GraphError] = ()
) -> list[GraphError]:
    """Run every check on an already resolved spec.

    Args:
        spec: the resolved graph.
        options: what is known of the target.
        recorded: problems found while the graph was written (``graph.problems``),
            reported first.

    Returns:
        Every problem: graph-wide ones first, then in file and line order (ties keep
        the order of the checks), so the report reads top to bottom like the file.
    """
    options = options or ValidateOptions()
    errors = list(recorded)
    quiet = {n for e in errors if e.code in _EDGE_CODES for n in _edge_ends(e) if n}
    if quiet:
        options = dataclasses.replace(options, quiet_nodes=options.quiet_nodes | quiet)
    for fn in CHECKS:
        errors.extend(fn(spec, options))
    return sorted(errors, key=report_order)


def _edge_ends(error: GraphError) -> tuple[str | None, ...]:
    return error.node, getattr(error, "src", None), getattr(error, "dst", None)


def report_order(error: GraphError) -> tuple[bool, str, int]:
    """Sort key: graph-wide problems first, then by file and line (a stable sort keeps check order)."""
    where = error.where
    return (where is not None, where.file if where else "", where.line if where else 0)
