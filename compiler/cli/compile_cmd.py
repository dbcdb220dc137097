"""`graph compile` and `graph targets`."""

from __future__ import annotations

import dataclasses
import typing
from types import ModuleType
from typing import Any

import yaml

from graph import ValidateOptions

from ..plan import PlanOptions
from ..targets import get_target, target_names
from ..targets.output import OutputFolderError, WriteReport, write_output
from .common import Overrides, checked_plan, console, fail



def parse_target_options(module: ModuleType, pairs: list[str]) -> Any:
    """``["namespace=prod", "gpus=8"]`` -> the target's Options dataclass."""
    cls = module.Options
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            fail(f"-O '{pair}' is not KEY=VALUE; e.g. -O namespace=prod")
        if key not in fields:
            fail(f"target option '{key}' is unknown; known: {', '.join(sorted(fields))} (see `graph targets`)")
        hint = hints[key]
        value: Any = raw if hint is str or hint == typing.Optional[str] else yaml.safe_load(raw)
        values[key] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        fail(f"bad target option: {exc}")


def run(path: str, overrides: Overrides, target: str, out: str, opts: list[str], device: str,
        force: bool = False) -> None:
    if target not in target_names():
        fail(f"unknown target '{target}'; choose one of: {', '.join(target_names())}")
    if device not in ("gpu", "cpu"):
        fail(f"--device must be gpu or cpu, not '{device}'")
    module = get_target(target)
    options = parse_target_options(module, opts)
    budget = ValidateOptions(**getattr(module, "gpu_budget", lambda o: {})(options))
    the_plan = checked_plan(path, overrides, PlanOptions(device=device, single_host=(target == "local")), budget)
    try:
        files = module.render(the_plan, options)
    except ValueError as exc:
        fail(f"target {target}: {exc}", 1)
    report = write_files(files, out, force)
    console.print(f"[green]wrote[/] {len(files)} files to {out}/ ({target}, graph '{the_plan.graph}', "
                  f"{the_plan.shape})")
    for name in sorted(files):
        console.print(f"  {name}")
    print_kept(report)


def write_files(files: dict[str, str], out: str, force: bool) -> WriteReport:
    """Write a target's files, or explain why the folder is refused (exit 1)."""
    try:
        return write_output(files, out, force=force)
    except OutputFolderError as exc:
        fail(str(exc), 1)
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror or exc}", 1)


def print_kept(report: WriteReport) -> None:
    """Say what was removed (files of ours no longer produced) and what was left alone."""
    for name in report.removed:
        console.print(f"  removed {name} (written by an earlier compile, no longer produced)")
    if report.kept:
        shown = ", ".join(report.kept[:6]) + (f" and {len(report.kept) - 6} more" if len(report.kept) > 6 else "")
        console.print(f"  left alone (not servegraph's): {shown}")


def list_targets() -> None:
    for name in target_names():
        try:
            module = get_target(name)
        except ImportError as exc:
            console.print(f"[bold]{name}[/]: unavailable ({exc})")
            continue
        console.print(f"[bold]{name}[/]: {(module.__doc__ or '').strip().splitlines()[0]}")
        for f in dataclasses.fields(module.Options):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = "(required)"
            console.print(f"  -O {f.name}=...  default {default!r}")
