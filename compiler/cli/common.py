"""The one path every command takes: load a pipeline, apply overrides, check it, plan it; and how
problems are shown.

``validate``, ``inspect``, ``viz``, ``compile``, ``run`` and ``submit`` all go
through :func:`load_spec`, :func:`problems_of`, :func:`checked_plan` and (with a
target) :func:`compiled`, so an override, a check or a message never differs
from one command to the next.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from graph import GraphError, GraphSpec, PipelineLoadError, ValidateOptions, validate_spec
from graph.plan import Plan
from graph.validation import report_order

from .. import load
from ..checks import compile_problems
from ..errors import CompileError, CompileFailed, node_error
from ..targets import Target

if TYPE_CHECKING:
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
        return load.load_spec(path, graph=overrides.graph, mock=overrides.mock, model=overrides.model,
                              sets=overrides.sets, port=overrides.port)
    except PipelineLoadError as exc:
        fail(str(exc), 1)
    except GraphError as exc:
        fail(exc.format(), 1)


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
                 options: ValidateOptions | None = None) -> Plan:
    """The Plan of a valid pipeline, or every problem printed and exit 1."""
    return _planned(path, checked_spec(path, overrides, options), plan_options)


@dataclass
class Compiled:
    """A pipeline lowered for a target."""

    spec: GraphSpec
    plan: Plan
    files: dict[str, str]


def budget_of(target: Target, target_options: Any) -> ValidateOptions:
    """What validation checks of the GPUs the target's options give."""
    budget = target.gpu_budget(target_options)
    return ValidateOptions(gpu_budget=budget.total, gpus_per_host=budget.per_host)


def problems_for_target(path: str, overrides: Overrides, target: Target, target_options: Any,
                        plan_options: "PlanOptions") -> tuple[GraphSpec, list[GraphError], "Compiled | None"]:
    """Every problem of a pipeline for one target: the graph's, the engines', and the target's own
    (its budget, the names and settings it must lower); the compiled form when there are none."""
    spec, recorded = load_spec(path, overrides)
    errors = problems_of(spec, recorded, budget_of(target, target_options))
    if errors:
        return spec, errors, None
    the_plan = _planned(path, spec, with_target_choices(plan_options, target, target_options))
    try:
        files = target.render(the_plan, target_options)
    except ValueError as exc:  # TargetError, or a target's own check of its settings
        return spec, [_target_problem(spec, target, exc)], None
    return spec, [], Compiled(spec, the_plan, files)


def with_target_choices(plan_options: "PlanOptions", target: Target, target_options: Any) -> "PlanOptions":
    """``plan_options`` with what the target's options decide about the Plan (network, a shared folder)."""
    try:
        choices = target.plan_choices(target_options)
    except ValueError as exc:
        fail(f"bad {target.name} target option: {exc}")
    update: dict[str, Any] = {"network": choices.network}
    if choices.shared_dir:
        update.update(encoder_cache_dir=choices.shared_dir, encoder_cache_shared=True)
    return dataclasses.replace(plan_options, **update)


def compiled(path: str, overrides: Overrides, target: Target, target_options: Any,
             plan_options: "PlanOptions") -> Compiled:
    """The pipeline lowered for ``target``, or every problem printed and exit 1."""
    _, errors, result = problems_for_target(path, overrides, target, target_options, plan_options)
    if errors or result is None:
        print_errors(path, errors)
        raise SystemExit(1)
    return result


def _planned(path: str, spec: GraphSpec, plan_options: "PlanOptions") -> Plan:
    from ..plan import plan

    try:
        return plan(spec, plan_options)
    except CompileFailed as exc:
        print_errors(path, list(exc.errors))
        raise SystemExit(1) from None


def _target_problem(spec: GraphSpec, target: Target, exc: ValueError) -> CompileError:
    node = getattr(exc, "node", None)
    if node is None:  # the targets' messages start "node 'NAME': ..." where they are about one
        named = re.match(r"node '([^']+)'", str(exc))
        node = named.group(1) if named else None
    hint = getattr(exc, "hint", "") or f"see `graph targets` for the {target.name} target's options"
    if node is not None and node in {n.name for n in spec.nodes}:
        return node_error(f"target-{target.name}", spec.node(node), str(exc), hint)
    return CompileError(f"target-{target.name}", str(exc), hint, node=node)


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
