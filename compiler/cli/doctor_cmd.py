"""`graph doctor`: what this machine can run — engines, NIXL and its backends, GPUs, target tools."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass

from rich.markup import escape

from ..engines import get_adapter, known_engines
from .common import console, make_table, print_json


@dataclass
class Finding:
    """One thing checked."""

    area: str
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package(area: str, name: str, dists: tuple[str, ...], module: str, fix: str) -> Finding:
    version = next((v for v in map(_version, dists) if v), None)
    present = version is not None and importlib.util.find_spec(module) is not None
    return Finding(area, name, present, f"{dists[0]} {version}" if present else "not installed", "" if present else fix)


def _nixl() -> list[Finding]:
    found = _package("transport", "NIXL", ("nixl-cu12", "nixl-cu13", "nixl"), "nixl",
                     "pip install --no-deps nixl-cu12==1.5.1 nixl==1.5.1 (or scripts/setup-vllm.sh)")
    out = [found]
    if not found.ok:
        return out
    probe = (
        "from nixl._api import nixl_agent, nixl_agent_config\n"
        "a = nixl_agent('doctor', nixl_agent_config(backends=[]))\n"
        "print(','.join(sorted(a.get_plugin_list())))\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
        plugins = result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout.strip() else ""
    except (OSError, subprocess.TimeoutExpired):
        plugins = ""
    out.append(Finding("transport", "NIXL backends", bool(plugins), plugins or "could not list plugins",
                       "" if plugins else "check that nixl imports: python -c 'import nixl._api'"))
    return out


def _gpus() -> Finding:
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            result = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            names = [n.strip() for n in result.stdout.splitlines() if n.strip()]
        except (OSError, subprocess.TimeoutExpired):
            names = []
        if names:
            return Finding("hardware", "GPUs", True, f"{len(names)} × {names[0]}")
    return Finding("hardware", "GPUs", False, "no NVIDIA GPU found",
                   "engines run with --device cpu (vLLM CPU build) or --mock")


def _tool(area: str, name: str, binary: str, fix: str) -> Finding:
    path = shutil.which(binary)
    return Finding(area, name, path is not None, path or "not on PATH", "" if path else fix)


def _engines() -> list[Finding]:
    """Every registered engine, found as its adapter says."""
    out = []
    for name in known_engines():
        adapter = get_adapter(name)
        present, detail = adapter.installation.found()
        title = adapter.title or name
        if adapter.simulated:
            present, detail = True, "built in (python -m nodes.mock)"
        out.append(Finding("engine", title, present, detail, "" if present else adapter.installation.fix))
    return out


def findings() -> list[Finding]:
    """Everything `graph doctor` checks."""
    return [
        *_engines(),
        _package("engine", "sglang-router", ("sglang-router",), "sglang_router", "pip install sglang-router"),
        *_nixl(),
        _gpus(),
        _tool("target", "kubectl (k8s: kustomize)", "kubectl", "install kubectl to check manifests with `kubectl kustomize`"),
        _tool("target", "sbatch (slurm)", "sbatch", "a Slurm client; locally: scripts/slurm-local.sh (as root)"),
        _tool("viz", "graphviz dot (svg)", "dot", "apt-get install graphviz"),
    ]


def run(json_out: bool) -> None:
    items = findings()
    if json_out:
        print_json([item.__dict__ for item in items])
        return
    table = make_table("graph doctor")
    for column in ("area", "what", "status", "detail", "how to fix"):
        table.add_column(column, overflow="fold")
    for f in items:
        table.add_row(f.area, f.name, "[green]ok[/]" if f.ok else "[yellow]missing[/]", escape(f.detail), escape(f.fix))
    console.print(table)
