"""The one path every command takes: load a pipeline, apply overrides, check it, plan it; and how
problems are shown.

``validate``, ``inspect``, ``viz``, ``compile``, ``run`` and ``submit`` all go
through :func:`load_spec`, :func:`problems_of` and :func:`checked_plan`, so an
override, a check or a message never differs from one command to the next.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from graph import GraphError, GraphSpec, PipelineLoadError, ValidateOptions, load_graph, resolve, validate_spec
from graph.overrides import apply_overrides
from graph.validate import report_order

from ..checks import compile_problems
from ..errors import CompileFailed

if TYPE_CHECKING:
    from ..ir import Plan
    from ..plan import PlanOptions

# soft_wrap: a message is one line however narrow the terminal, and never hard-wrapped when piped (grep).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
console = Console(highlight=False, soft_wrap=True)


@dataclass
class Overrides:
    """What the user asked to change from the command line."""

    mock: bool = False
    model: str | None = None
    sets: list[str] = field(default_factory=list)
    graph: str | None = None
    #: The frontend's port (``--port``), instead of the graph's.
    port: int | None = None


#: Below this many columns tables drop their borders (and inspect its least useful columns): an
#: 80-column terminal or a CI log gets every fact without cells broken into slivers.
WIDE = 140


def is_wide() -> bool:
    """The console has room for the full tables."""
    return console.width >= WIDE


def make_table(title: str) -> Table:
    """A table in the house style: boxed when wide, borderless when narrow."""
    if is_wide():
        return Table(title=title, title_justify="left")
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error for a person and exit."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise SystemExit(code)


def load_spec(path: str, overrides: Overrides) -> tuple[GraphSpec, list[GraphError]]:
    """Load, resolve and override a pipeline; problems recorded while writing it come back too."""
    try:
        graph = load_graph(path, overrides.graph)
        spec = resolve(graph)
        sets = list(overrides.sets)
        frontends = spec.by_role("frontend")
        if overrides.port is not None and frontends:
            sets.append(f"{frontends[0].name}.port={overrides.port}")
        spec = apply_overrides(spec, mock=overrides.mock, model=overrides.model, sets=sets)
    except PipelineLoadError as exc:
        fail(str(exc), 1)
    except GraphError as exc:
        fail(exc.format(), 1)
    return spec, list(graph.problems)


def problems_of(spec: GraphSpec, recorded: list[GraphError], options: ValidateOptions | None = None) -> list[GraphError]:
    """Every problem: the graph's own checks, then what the compiler's engine adapters find."""
    return sorted(validate_spec(spec, options, recorded) + compile_problems(spec), key=report_order)


def checked_spec(path: str, overrides: Overrides, options: ValidateOptions | None = None) -> GraphSpec:
    """A valid spec, or every problem printed and exit 1."""
    spec, recorded = load_spec(path, overrides)
    errors = problems_of(spec, recorded, options)
    if errors:
        print_errors(path, errors)
        raise SystemExit(1)
    return spec


def checked_plan(path: str, overrides: Overrides, plan_options: "PlanOptions",
                 options: ValidateOptions | None = None) -> "Plan":
    """The Plan of a valid pipeline, or every problem printed and exit 1."""
    from ..plan import plan

    spec = checked_spec(path, overrides, options)
    try:
        return plan(spec, plan_options)
    except CompileFailed as exc:
        print_errors(path, list(exc.errors))
        raise SystemExit(1) from None


def print_errors(path: str, errors: list[GraphError]) -> None:
    """All problems, each with where, what and the fix."""
    n = len(errors)
    err_console.print(f"[bold red]{escape(path)}: {n} problem{'s' if n != 1 else ''}[/]")
    for e in errors:
        where = f"[cyan]{escape(str(e.where))}[/] " if e.where else ""
        err_console.print(f"{where}[bold]\\[{e.code}][/] {escape(e.message)}")
        if e.hint:
            err_console.print(f"    [green]fix:[/] {escape(e.hint)}")


def print_json(data: Any) -> None:
    """JSON to stdout for machines."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
