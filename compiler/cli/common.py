"""Shared steps of the CLI commands: load a pipeline, apply overrides, validate, report."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

from graph import GraphError, GraphSpec, PipelineLoadError, ValidateOptions, load_graph, resolve, validate_spec
from graph.overrides import apply_overrides

err_console = Console(stderr=True, highlight=False)
console = Console(highlight=False)


@dataclass
class Overrides:
    """What the user asked to change from the command line."""

    mock: bool = False
    model: str | None = None
    sets: list[str] = field(default_factory=list)
    graph: str | None = None


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error for a person and exit."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise SystemExit(code)


def load_spec(path: str, overrides: Overrides) -> tuple[GraphSpec, list[GraphError]]:
    """Load, resolve and override a pipeline; problems recorded while writing it come back too."""
    try:
        graph = load_graph(path, overrides.graph)
        spec = resolve(graph)
        spec = apply_overrides(spec, mock=overrides.mock, model=overrides.model, sets=overrides.sets)
    except PipelineLoadError as exc:
        fail(str(exc), 1)
    except GraphError as exc:
        fail(exc.format(), 1)
    return spec, list(graph.problems)


def checked_spec(path: str, overrides: Overrides, options: ValidateOptions | None = None) -> GraphSpec:
    """A valid spec, or every problem printed and exit 1."""
    spec, recorded = load_spec(path, overrides)
    errors = validate_spec(spec, options, recorded)
    if errors:
        print_errors(path, errors)
        raise SystemExit(1)
    return spec


def print_errors(path: str, errors: list[GraphError]) -> None:
    """All problems, each with where, what and the fix."""
    n = len(errors)
    err_console.print(f"[bold red]{path}: {n} problem{'s' if n != 1 else ''}[/]")
    for e in errors:
        where = f"[cyan]{escape(str(e.where))}[/] " if e.where else ""
        err_console.print(f"{where}[bold]\\[{e.code}][/] {escape(e.message)}", soft_wrap=True)
        if e.hint:
            err_console.print(f"    [green]fix:[/] {escape(e.hint)}", soft_wrap=True)


def print_json(data: Any) -> None:
    """JSON to stdout for machines."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
