"""`graph viz`: draw a pipeline as Mermaid, DOT, SVG or a self-contained HTML page."""

from __future__ import annotations

import os
import sys
from typing import Optional

from ..transport import tensor_edge_transports
from ..viz import FORMATS, VizError, render
from .common import Overrides, checked_spec, console, fail


def run(path: str, overrides: Overrides, fmt: str, out: Optional[str]) -> None:
    """Validate ``path`` and print (or write to ``out``) its picture in ``fmt``; a tensor edge is drawn as the
    compiler lowers it (NIXL, files, or the engine's own transfer)."""
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    spec = checked_spec(path, overrides)
    try:
        text = render(spec, fmt, tensor_edge_transports(spec))
    except VizError as exc:
        fail(str(exc), 1)
    if out is None:
        sys.stdout.write(text)
        return
    folder = os.path.dirname(out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    console.print(f"[green]wrote[/] {out} ({fmt}, graph '{spec.name}')")
