"""`graph validate`: every problem of a pipeline at once — the graph's, the engines', and a target's."""

from __future__ import annotations

from typing import Optional

from graph import GraphError, ValidateOptions

from ..plan import PlanOptions
from .common import Overrides, console, fail, load_spec, print_errors, print_json, problems_for_target, problems_of
from .target_options import parse_target_options, target_named


def run(path: str, overrides: Overrides, json_out: bool, gpus: Optional[int], gpus_per_host: Optional[int],
        target_name: Optional[str] = None, opts: list[str] | None = None, device: str = "gpu") -> None:
    """Print every problem (or ``ok``); exit 1 if there is any."""
    if device not in ("gpu", "cpu"):
        fail(f"--device must be gpu or cpu, not '{device}'")
    if opts and target_name is None:
        fail("-O sets a target's option: name the target with --target (e.g. --target k8s -O namespace=prod)")
    errors: list[GraphError]
    if target_name is not None:
        target = target_named(target_name)
        options = parse_target_options(target, opts or [])
        spec, errors, _ = problems_for_target(path, overrides, target, options,
                                              PlanOptions(device=device, single_host=target.single_host))
        budget = ValidateOptions(gpu_budget=gpus, gpus_per_host=gpus_per_host)
        if not errors and (gpus or gpus_per_host):
            errors = problems_of(spec, [], budget)
    else:
        spec, recorded = load_spec(path, overrides)
        errors = problems_of(spec, recorded, ValidateOptions(gpu_budget=gpus, gpus_per_host=gpus_per_host))
    if json_out:
        print_json({"pipeline": path, "graph": spec.name, "valid": not errors, "errors": [e.to_dict() for e in errors]})
    elif errors:
        print_errors(path, errors)
    else:
        on = f" for target {target_name}" if target_name else ""
        console.print(
            f"[green]ok[/] {path}: graph '{spec.name}' ({spec.shape}), {len(spec.nodes)} nodes, "
            f"{len(spec.edges)} edges, {spec.gpus_total} GPUs{on}"
        )
    if errors:
        raise SystemExit(1)
