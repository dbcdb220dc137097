"""A pipeline file to the resolved graph the compiler works on: load, resolve, overrides, engines.

Every command and test takes this one path, so ``--mock``, ``--model``, ``--set``
and ``--port`` mean the same everywhere.
"""

from __future__ import annotations

from typing import Iterable

from graph import GraphError, GraphSpec, load_graph, resolve
from graph.overrides import apply_overrides

from .resolve import with_engines


def load_spec(path: str, *, graph: str | None = None, mock: bool = False, model: str | None = None,
              sets: Iterable[str] = (), port: int | None = None) -> tuple[GraphSpec, list[GraphError]]:
    """The resolved graph of a pipeline file with the overrides applied, and the problems recorded
    while the file was written.

    Args:
        path: the pipeline file.
        graph: which graph, when the file defines several.
        mock: every engine node on the mock engine (``--mock``).
        model: every engine node loads this model (``--model``).
        sets: ``NODE.FIELD=VALUE`` overrides (``--set``).
        port: the frontend's port (``--port``).

    Raises:
        PipelineLoadError: the file cannot be loaded.
        GraphError: an override names an unknown node or field, or a bad value.
    """
    written = load_graph(path, graph)
    spec = resolve(written)
    sets = list(sets)
    frontends = spec.by_role("frontend")
    if port is not None and frontends:
        sets.append(f"{frontends[0].name}.port={port}")
    spec = apply_overrides(spec, model=model, sets=sets)
    return with_engines(spec, mock=mock), list(written.problems)
