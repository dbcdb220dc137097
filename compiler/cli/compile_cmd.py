"""`graph compile` and `graph targets`."""

from __future__ import annotations

import dataclasses
import typing
from types import ModuleType
from typing import Any

import yaml

from graph import ValidateOptions

from ..plan import PlanOptions, plan
from ..targets import get_target, target_names
from ..targets.output import write_output
from .common import Overrides, checked_spec, console, fail


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


def run(path: str, overrides: Overrides, target: str, out: str, opts: list[str], device: str) -> None:
    if target not in target_names():
        fail(f"unknown target '{target}'; choose one of: {', '.join(target_names())}")
    if device not in ("gpu", "cpu"):
        fail(f"--device must be gpu or cpu, not '{device}'")
    module = get_target(target)
    options = parse_target_options(module, opts)
    budget = ValidateOptions(**getattr(module, "gpu_budget", lambda o: {})(options))
    spec = checked_spec(path, overrides, budget)
    the_plan = plan(spec, PlanOptions(device=device, single_host=(target == "local")))
    try:
        files = module.render(the_plan, options)
    except ValueError as exc:
        fail(f"target {target}: {exc}", 1)
    write_output(files, out)
    console.print(f"[green]wrote[/] {len(files)} files to {out}/ ({target}, graph '{spec.name}', {spec.shape})")
    for name in sorted(files):
        console.print(f"  {name}")


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
