"""Pictures of a resolved graph: Mermaid, Graphviz DOT, SVG and a self-contained HTML page.

Visualization is one more target of the same model: :func:`build_view` reduces
a :class:`graph.spec.GraphSpec` to a tiny node/edge view, and one small module
per format renders that view. Output is a pure function of the graph.
"""

from __future__ import annotations

import importlib
from typing import Callable

from graph.spec import GraphSpec

from .view import View, VizError, build_view

#: format name -> module with ``render(view: View) -> str`` (imported on first use).
FORMATS: dict[str, str] = {"mermaid": "mermaid", "dot": "dot", "svg": "svg", "html": "html"}


def renderer(fmt: str) -> Callable[[View], str]:
    """The ``render`` function of one format.

    Raises:
        VizError: the format is unknown.
    """
    if fmt not in FORMATS:
        raise VizError(f"unknown format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    return importlib.import_module(f"{__name__}.{FORMATS[fmt]}").render


def render(spec: GraphSpec, fmt: str, transports: dict[tuple[str, str], str] | None = None) -> str:
    """Draw ``spec`` in ``fmt`` (mermaid | dot | svg | html); ``transports`` as in :func:`build_view`.

    Raises:
        VizError: unknown format, or a tool the format needs is missing.
    """
    return renderer(fmt)(build_view(spec, transports))


__all__ = ["FORMATS", "View", "VizError", "build_view", "render", "renderer"]
