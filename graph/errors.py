"""Typed errors of the graph model.

Every problem found in a graph is a :class:`GraphError` that names the node, the
port or field, where the node was declared, and what to do. Checks collect
them; :class:`GraphInvalid` carries them all at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SourceLocation:
    """Where something was declared in a pipeline file."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class GraphError(Exception):
    """One problem in a graph.

    Args:
        code: a short stable rule name, e.g. ``port-type-mismatch``.
        message: what is wrong, naming the node and port or field.
        hint: what to do about it.
        node: the node's name, when the problem belongs to one.
        port: the port's name, when it is about a port.
        field: the node field, when it is about a field.
        where: file and line where the node (or edge) was declared.
    """

    code: str
    message: str
    hint: str = ""
    node: str | None = None
    port: str | None = None
    field: str | None = None
    where: SourceLocation | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        """One human-readable block: ``file:line: [code] message`` plus the hint."""
        prefix = f"{self.where}: " if self.where else ""
        text = f"{prefix}[{self.code}] {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for ``--json`` output."""
        data = asdict(self)
        data["where"] = asdict(self.where) if self.where else None
        return data


@dataclass
class GraphInvalid(Exception):
    """A graph with one or more problems; carries all of them."""

    errors: list[GraphError] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.__str__())

    def __str__(self) -> str:
        n = len(self.errors)
        head = f"{n} problem{'s' if n != 1 else ''} in the graph"
        return head + ":\n" + "\n".join(e.format() for e in self.errors)


class PipelineLoadError(Exception):
    """The pipeline file could not be loaded (missing, Python error, no graph)."""

    def __init__(self, message: str, where: SourceLocation | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.detail = detail

    def __str__(self) -> str:
        prefix = f"{self.where}: " if self.where else ""
        return prefix + self.message + (f"\n{self.detail}" if self.detail else "")
