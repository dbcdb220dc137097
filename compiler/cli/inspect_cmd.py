"""`graph inspect`: the resolved graph (defaults filled); with --edges the transport of every
edge and why; with --plan the processes the compiler would start."""

from __future__ import annotations

import shlex
from typing import Any

from graph.nodes import ROLES

from graph import GraphSpec

from .common import (
    Overrides, checked_plan, compiled, console, fail, is_wide, load_spec, make_table, print_errors, print_json,
    problems_of,
)
from .target_options import parse_target_options, target_named


def run(path: str, overrides: Overrides, json_out: bool, edges: bool, plan_out: bool, device: str,
        target_name: str | None = None, opts: list[str] | None = None) -> None:
    """Print the resolved graph, or its edges' transport settings, or its Plan.

    The plain view works on an invalid graph too (it is how one looks for the
    mistake): the problems follow the tables and the exit code is 1. ``--edges``
    and ``--plan`` compile, so they need a valid graph; with a target (and its
    ``-O`` options) they show what ``graph compile`` for it would emit, after its checks.
    """
    if device not in ("gpu", "cpu"):
        fail(f"--device must be gpu or cpu, not '{device}'")
    if (target_name or opts) and not (edges or plan_out):
        fail("--target/-O shape what --edges and --plan show; add one of them")
    if opts and target_name is None:
        fail("-O sets a target's option: name the target with --target (e.g. --target slurm -O network=tcp)")
    if edges or plan_out:
        _compiled(path, overrides, json_out, edges, plan_out, device, target_name, opts or [])
        return
    spec, recorded = load_spec(path, overrides)
    errors = problems_of(spec, recorded)
    if json_out:
        print_json(spec.model_dump(mode="json"))
    else:
        _print_spec(spec)
    if errors:
        print_errors(path, errors)
        raise SystemExit(1)


def _compiled(path: str, overrides: Overrides, json_out: bool, edges: bool, plan_out: bool, device: str,
              target_name: str | None, opts: list[str]) -> None:
    from ..plan import PlanOptions  # the compiler only when asked for

    if target_name is None:
        the_plan = checked_plan(path, overrides, PlanOptions(device=device))
    else:
        target = target_named(target_name)
        options = parse_target_options(target, opts)
        the_plan = compiled(path, overrides, target, options,
                            PlanOptions(device=device, single_host=target.single_host)).plan
    if json_out:
        data: dict[str, Any] = {}
        if edges:
            data["edges"] = [e.model_dump(mode="json") for e in the_plan.edges]
        if plan_out:
            data["plan"] = the_plan.model_dump(mode="json")
        print_json(data)
        return
    if edges:
        _print_edges(the_plan)
    if plan_out:
        _print_services(the_plan)


def _print_spec(spec: GraphSpec) -> None:
    desc = f" — {spec.description}" if spec.description else ""
    console.print(f"[bold]{spec.name}[/]{desc}  shape [bold]{spec.shape}[/], {spec.gpus_total} GPUs, source {spec.source}")
    wide = is_wide()  # narrow: the least useful columns go, their facts are printed under the table
    columns = ["name", "role", "engine", "model", "replicas", "tp/pp/dp"]
    columns += ["GPUs/host", "hosts", "GPUs", "port", "settings", "declared at"] if wide else ["GPUs", "declared at"]
    nodes = make_table("nodes (defaults filled)")
    for col in columns:
        right = col in ("replicas", "GPUs/host", "hosts", "GPUs", "port")
        header = col if wide else {"replicas": "×", "declared at": "line"}.get(col, col)
        nodes.add_column(header, justify="right" if right else "left", overflow="fold")
    settings: dict[str, str] = {}
    for n in spec.nodes:
        engine = f"{n.engine} ({n.imitate})" if n.imitate else (n.engine or "")
        cells = {
            "name": n.name, "role": f"{n.role} ({n.kind})" if n.code else n.role, "engine": engine, "model": n.model or "", "replicas": str(n.replicas),
            "tp/pp/dp": f"{n.tp}/{n.pp}/{n.dp}" if n.is_engine else "", "GPUs/host": str(n.gpus) if n.is_engine else "",
            "hosts": str(n.nodes) if n.is_engine else "", "GPUs": str(n.gpus_total), "port": str(n.port or ""),
            "settings": _settings(n.role, n.model_dump(mode="json")), "declared at": _at(n.where, spec, wide),
        }
        nodes.add_row(*(cells[c] for c in columns))
        shown_apart = [f"port={n.port}"] if n.port else []
        shown_apart += cells["settings"].splitlines()
        if not wide and shown_apart:
            settings[n.name] = ", ".join(shown_apart)
    console.print(nodes)
    for name, text in settings.items():
        console.print(f"  {name}: {text}", markup=False)
    table = make_table("edges")
    for col in ("from", "to", "type", "transport", "declared at" if wide else "line"):
        table.add_column(col, overflow="fold")
    for e in spec.edges:
        transport = "[red]nixl[/]" if e.transport == "nixl" else e.transport
        table.add_row(f"{e.src}['{e.src_port}']", f"{e.dst}['{e.dst_port}']", e.type, transport,
                      _at(e.where, spec, wide))
    console.print(table)


def _at(where: Any, spec: GraphSpec, wide: bool) -> str:
    """``file:line``; in the narrow layout only the line when it is in the pipeline's own file."""
    if where is None:
        return ""
    return str(where.line) if not wide and where.file == spec.source else str(where)


# Fields shown in their own columns; the rest appear under "settings" when not default.
_SHOWN = {"name", "role", "engine", "imitate", "model", "replicas", "tp", "pp", "dp", "gpus", "nodes", "port", "where",
          "code"}
_DEFAULTS: dict[str, Any] = {"env": {}, "cpu": None, "memory": None, "platform": {}, "served_model_name": None,
                             "dtype": "auto", "kv_cache_dtype": "auto", "block_size": None, "max_model_len": None,
                             "engine_args": {}, "mock": {}, "options": {}}


def _settings(role: str, data: dict[str, Any]) -> str:
    """The node's settings that differ from their defaults, one a line."""
    fields = ROLES[role].model_fields if role in ROLES else {}
    parts = []
    for key, value in data.items():
        if key in _SHOWN or _DEFAULTS.get(key, object()) == value:
            continue
        if key == "options":  # a frontend's, router's or processor's own fields: only those not at their default
            parts += [f"{k}={v}" for k, v in value.items() if k not in fields or fields[k].default != v]
        elif isinstance(value, dict):
            parts += [f"{key}.{k}={v}" for k, v in value.items()]
        else:
            parts.append(f"{key}={value}")
    return "\n".join(parts)


def _print_edges(the_plan: Any) -> None:
    """One block per edge (readable at any width, one fact a line for grep)."""
    console.print(f"[bold]edges of '{the_plan.graph}' on {the_plan.device}[/]")
    for e in the_plan.edges:
        s = e.settings
        head = f"{e.src} → {e.dst}  {e.type}  "
        if s is None:
            console.print(f"{head}{e.transport}: HTTP between services", markup=False)
            continue
        if e.transport == "files":
            shared = "shared by the target" if s.folder_shared else "not shared between hosts"
            console.print(f"{head}files in a folder, not NIXL: {s.folder} ({shared}), placement {s.placement}",
                          markup=False)
        elif e.transport == "engine":
            console.print(f"{head}the engine's own transfer, not set up by servegraph", markup=False)
        else:
            console.print(f"{head}[red]{e.transport}[/] ({s.backend}) {s.direction}, {s.buffer_device} buffers, "
                          f"placement {s.placement}, network {s.network}")
        for key, value in sorted(s.env.items()):
            console.print(f"    env {key}={value}", markup=False)
        for reason in s.reasons:
            console.print(f"    • {reason}", markup=False)


def _print_services(the_plan: Any) -> None:
    """One block per service: role, engine, ports, GPUs, dependencies, then its argv."""
    console.print(f"[bold]plan of '{the_plan.graph}' ({the_plan.shape}) on {the_plan.device}[/]")
    for s in the_plan.services:
        gpus = f"{s.gpus}×{s.hosts} hosts" if s.hosts > 1 else str(s.gpus)
        engine = f"{s.engine} ({s.protocol})" if s.simulated else (s.engine or "ours")
        ports = " ".join(f"{k}={v}" for k, v in s.ports.items())
        depends = f"; after {', '.join(s.depends_on)}" if s.depends_on else ""
        console.print(f"[bold]{s.name}[/]  {s.role}, {engine}, ports {ports}, GPUs {gpus}{depends}")
        console.print(f"    {shlex.join(s.argv)}", markup=False)
    console.print(f"clients connect to {the_plan.url}")
