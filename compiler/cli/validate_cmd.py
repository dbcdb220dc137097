"""`graph validate`."""

from __future__ import annotations

from typing import Optional

from graph import ValidateOptions

from .common import Overrides, console, load_spec, print_errors, print_json, problems_of


def run(path: str, overrides: Overrides, json_out: bool, gpus: Optional[int], gpus_per_host: Optional[int]) -> None:
    spec, recorded = load_spec(path, overrides)
    errors = problems_of(spec, recorded, ValidateOptions(gpu_budget=gpus, gpus_per_host=gpus_per_host))
    if json_out:
        print_json({"pipeline": path, "graph": spec.name, "valid": not errors, "errors": [e.to_dict() for e in errors]})
    elif errors:
        print_errors(path, errors)
    else:
        console.print(
            f"[green]ok[/] {path}: graph '{spec.name}' ({spec.shape}), {len(spec.nodes)} nodes, "
            f"{len(spec.edges)} edges, {spec.gpus_total} GPUs"
        )
    if errors:
        raise SystemExit(1)
