"""`graph inspect`: the resolved graph (defaults filled); with --edges the transport of every
edge and why; with --plan the processes the compiler would start."""

from __future__ import annotations

import shlex
from typing import Any

from rich.table import Table

from graph import GraphSpec, validate_spec

from .common import Overrides, checked_spec, console, fail, load_spec, print_errors, print_json


def run(path: str, overrides: Overrides, json_out: bool, edges: bool, plan_out: bool, device: str) -> None:
    """Print the resolved graph, or its edges' transport settings, or its Plan.

    The plain view works on an invalid graph too (it is how one looks for the
    mistake): the problems follow the tables and the exit code is 1. ``--edges``
    and ``--plan`` compile, so they need a valid graph.
    """
    if device not in ("gpu", "cpu"):
        fail(f"--device must be gpu or cpu, not '{device}'")
    if edges or plan_out:
        _compiled(path, overrides, json_out, edges, plan_out, device)
        return
    spec, recorded = load_spec(path, overrides)
    errors = validate_spec(spec, None, recorded)
    if json_out:
        print_json(spec.model_dump(mode="json"))
    else:
        _print_spec(spec)
    if errors:
        print_errors(path, errors)
        raise SystemExit(1)


def _compiled(path: str, overrides: Overrides, json_out: bool, edges: bool, plan_out: bool, device: str) -> None:
    from ..plan import PlanOptions, plan  # the compiler only when asked for

    spec = checked_spec(path, overrides)
    the_plan = plan(spec, PlanOptions(device=device))
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
    nodes = Table(title="nodes (defaults filled)", title_justify="left")
    for col in ("name", "role", "engine", "model", "replicas", "tp/pp/dp", "GPUs/host", "hosts", "GPUs", "port",
                "settings", "declared at"):
        nodes.add_column(col, justify="right" if col in ("replicas", "GPUs/host", "hosts", "GPUs", "port") else "left")
    for n in spec.nodes:
        engine = f"mock ({n.imitate})" if n.engine == "mock" else (n.engine or "")
        nodes.add_row(
            n.name, n.role, engine, n.model or "", str(n.replicas),
            f"{n.tp}/{n.pp}/{n.dp}" if n.is_engine else "", str(n.gpus) if n.is_engine else "",
            str(n.nodes) if n.is_engine else "", str(n.gpus_total), str(n.port or ""),
            _settings(n.model_dump(mode="json")), str(n.where or ""),
        )
    console.print(nodes)
    table = Table(title="edges", title_justify="left")
    for col in ("from", "to", "type", "transport", "declared at"):
        table.add_column(col)
    for e in spec.edges:
        transport = "[red]nixl[/]" if e.transport == "nixl" else e.transport
        table.add_row(f"{e.src}['{e.src_port}']", f"{e.dst}['{e.dst_port}']", e.type, transport, str(e.where or ""))
    console.print(table)


# Fields shown in their own columns; the rest appear under "settings" when not default.
_SHOWN = {"name", "role", "engine", "imitate", "model", "replicas", "tp", "pp", "dp", "gpus", "nodes", "port", "where"}
_DEFAULTS: dict[str, Any] = {"env": {}, "cpu": None, "memory": None, "platform": {}, "served_model_name": None,
                             "dtype": "auto", "kv_cache_dtype": "auto", "block_size": None, "max_model_len": None,
                             "engine_args": {}, "mock": {}, "options": {}}


def _settings(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        if key in _SHOWN or _DEFAULTS.get(key, object()) == value:
            continue
        if isinstance(value, dict):
            parts += [f"{key}.{k}={v}" for k, v in value.items()]
        else:
            parts.append(f"{key}={value}")
    return "\n".join(parts)


def _print_edges(the_plan: Any) -> None:
    table = Table(title=f"edges of '{the_plan.graph}' on {the_plan.device}", title_justify="left", show_lines=True)
    for col in ("edge", "type", "transport", "direction", "buffer", "placement", "env", "why"):
        table.add_column(col)
    for e in the_plan.edges:
        s = e.settings
        if s is None:
            table.add_row(f"{e.src} → {e.dst}", e.type, e.transport, "", "", "", "", "HTTP between services")
            continue
        table.add_row(
            f"{e.src} → {e.dst}", e.type, f"[red]{e.transport}[/] ({s.backend})", s.direction, s.buffer_device,
            s.placement, "\n".join(f"{k}={v}" for k, v in sorted(s.env.items())), "\n".join(f"• {r}" for r in s.reasons),
        )
    console.print(table)


def _print_services(the_plan: Any) -> None:
    table = Table(title=f"plan of '{the_plan.graph}' ({the_plan.shape}) on {the_plan.device}", title_justify="left",
                  show_lines=True)
    for col in ("service", "role", "engine", "ports", "GPUs", "depends on", "argv"):
        table.add_column(col, overflow="fold")
    for s in the_plan.services:
        gpus = f"{s.gpus}×{s.hosts} hosts" if s.hosts > 1 else str(s.gpus)
        engine = f"{s.engine} ({s.protocol})" if s.engine == "mock" else (s.engine or "ours")
        table.add_row(
            s.name, s.role, engine, "\n".join(f"{k}={v}" for k, v in s.ports.items()), gpus,
            ", ".join(s.depends_on), shlex.join(s.argv),
        )
    console.print(table)
    console.print(f"clients connect to {the_plan.url}")
