"""The compiler's one error type: problems found while lowering a graph.

A :class:`CompileError` carries what a :class:`graph.GraphError` carries (a
stable code, the message naming the node and field, the fix, and the file and
line where the node was declared), so ``graph validate`` reports engine values,
mock knobs and target options in the same list as the graph's own problems.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

from graph import GraphError, SourceLocation


class NodeValues(Protocol):
    """What the compiler's checks read of one engine node (the resolved graph's node has it all)."""

    name: str
    role: str
    engine: str | None
    imitate: str | None
    tp: int
    pp: int
    dp: int
    dtype: str
    kv_cache_dtype: str
    block_size: int | None
    mock: dict[str, Any]
    where: Any  # file and line of the declaration, or None


@dataclass
class CompileError(GraphError):
    """One problem found by the compiler (an engine value, a mock knob, a target option)."""


class CompileFailed(Exception):
    """Several compile-time problems at once."""

    def __init__(self, errors: list[CompileError]) -> None:
        super().__init__("\n".join(e.format() for e in errors))
        self.errors = errors


def label(node: NodeValues) -> str:
    """``Prefill 'p1'``: the node as the pipeline wrote it (its role's class name and its name)."""
    return f"{''.join(part.title() for part in node.role.split('_'))} '{node.name}'"


def node_error(code: str, node: NodeValues, message: str, hint: str, field: str | None = None) -> CompileError:
    """A problem of one node, located where the node was declared."""
    where = SourceLocation(node.where.file, node.where.line) if node.where else None
    return CompileError(code, message, hint, node=node.name, field=field, where=where)


def did_you_mean(value: str, choices: Iterable[str], aliases: dict[str, str] | None = None) -> str:
    """``"did you mean 'bfloat16'? "`` for a near miss (or a known alias), else ``""``."""
    choices = list(choices)
    guess = (aliases or {}).get(value.lower())
    if guess is None:
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
        guess = close[0] if close else None
    return f"did you mean '{guess}'? " if guess else ""
