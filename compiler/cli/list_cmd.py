"""`graph list`: one line per pipeline file of a folder (a broken file is a row, not a crash)."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from rich.markup import escape

from graph import GraphError, PipelineLoadError

from ..load import load_spec
from .common import console, fail, make_table, problems_of


@dataclass
class Row:
    """One pipeline file's summary, or why it could not be summarized."""

    file: pathlib.Path
    graph: str = ""
    shape: str = ""
    engines: str = ""
    nodes: int | None = None
    gpus: int | None = None
    status: str = "ok"
    problem: str = ""


def summarize(path: pathlib.Path) -> Row:
    """Load and validate one file; never raises for a broken pipeline."""
    row = Row(file=path)
    try:
        spec, recorded = load_spec(str(path))
        errors = problems_of(spec, recorded)
    except (PipelineLoadError, GraphError) as exc:
        row.status = "does not load"
        row.problem = exc.format() if isinstance(exc, GraphError) else str(exc)
        row.problem = row.problem.splitlines()[0]
        return row
    row.graph, row.shape = spec.name, spec.shape
    row.engines = ", ".join(sorted({n.engine for n in spec.nodes if n.engine}))
    row.nodes, row.gpus = len(spec.nodes), spec.gpus_total
    if errors:
        row.status = f"{len(errors)} problem{'s' if len(errors) > 1 else ''}"
        row.problem = errors[0].format().splitlines()[0] + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")
    return row


def run(folder: str) -> None:
    """Print the table for every ``*.py`` in ``folder`` (not recursive, ``_*.py`` skipped).

    Broken files are rows too, with one line each below the table saying why.
    """
    root = pathlib.Path(folder)
    if not root.is_dir():
        fail(f"'{folder}' is not a folder of pipeline files")
    files = sorted(p for p in root.glob("*.py") if not p.name.startswith("_"))
    if not files:
        fail(f"no pipeline files (*.py) in '{folder}'", 1)
    rows = [summarize(p) for p in files]
    table = make_table(f"pipelines in {folder}/")
    for name in ("file", "graph", "shape", "engines", "nodes", "GPUs", "status"):
        table.add_column(name, justify="right" if name in ("nodes", "GPUs") else "left", no_wrap=name == "file",
                         overflow="fold")
    for r in rows:
        status = "[green]ok[/]" if not r.problem else f"[red]✗ {r.status}[/]"
        table.add_row(r.file.name, r.graph, r.shape, r.engines, _num(r.nodes), _num(r.gpus), status)
    console.print(table)
    bad = [r for r in rows if r.problem]
    for r in bad:
        where = "" if str(r.file) in r.problem else f"{r.file}: "
        console.print(f"[red]✗[/] {escape(where + r.problem)}  → [bold]graph validate {escape(str(r.file))}[/]")
    summary = f"{len(rows)} pipelines, {len(rows) - len(bad)} valid"
    console.print(f"[red]{summary}, {len(bad)} with problems[/]" if bad else f"[green]{summary}[/]")


def _num(value: int | None) -> str:
    return "" if value is None else str(value)
