"""The ``graph`` command. Each command's work lives in its own module, imported lazily
so that ``graph --help`` starts fast."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

app = typer.Typer(
    name="graph",
    help=(
        "servegraph: declare an LLM serving graph once in pipelines/*.py, then validate, "
        "picture, compile (local, k8s, slurm) or run it.\n\n"
        "Start here:  graph run pipelines/pd.py --mock   (serves an OpenAI API on localhost, no GPU needed)"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

PIPELINE = typer.Argument(..., help="a pipeline file, e.g. pipelines/pd.py", show_default=False)
MOCK = typer.Option(False, "--mock", help="run every engine node on the built-in mock engine (no GPU, no model)")
MODEL = typer.Option(None, "--model", help="load this model (e.g. a local path) in every engine node")
SET = typer.Option(None, "--set", help="override a node field: NODE.FIELD=VALUE (repeatable), e.g. decode.replicas=2")
GRAPH = typer.Option(None, "--graph", help="which graph, when the file defines several")
PORT = typer.Option(None, "--port", min=1, max=65535, help="frontend port (default: the graph's)")
BASE_PORT = typer.Option(8100, "--base-port", min=1024, max=65000, help="first port for the other services")
FORCE = typer.Option(False, "--force", help=(
    "write into a folder servegraph did not write (its files are kept), and replace servegraph's own files "
    "even if they were changed since"))


def _overrides(mock: bool, model: Optional[str], sets: Optional[List[str]], graph: Optional[str]):
    from .common import Overrides

    return Overrides(mock=mock, model=model, sets=list(sets or []), graph=graph)


@app.command()
def validate(
    pipeline: str = PIPELINE,
    json_out: bool = typer.Option(False, "--json", help="print problems as JSON"),
    target: Optional[str] = typer.Option(
        None, "--target", "-t", help="also check what this target needs (local | k8s | slurm): its options, "
        "GPU budget, names and settings, by compiling in memory"),
    opt: Optional[List[str]] = typer.Option(None, "--opt", "-O", help="target option KEY=VALUE (with --target)"),
    gpus: Optional[int] = typer.Option(None, "--gpus", min=1, help="GPU budget of the target, checked too"),
    gpus_per_host: Optional[int] = typer.Option(None, "--gpus-per-host", min=1, help="GPUs on one host, checked too"),
    device: str = typer.Option("gpu", "--device", help="gpu or cpu (with --target)"),
    mock: bool = MOCK,
    model: Optional[str] = MODEL,
    set_: Optional[List[str]] = SET,
    graph: Optional[str] = GRAPH,
) -> None:
    """Check a pipeline and report every problem at once (exit 1 if any).

    The graph's own checks, then each engine's (values it accepts, prefill/decode pairs it can map);
    with --target, the target's too.
    """
    from .validate_cmd import run

    run(pipeline, _overrides(mock, model, set_, graph), json_out, gpus, gpus_per_host, target, list(opt or []),
        device)


@app.command()
def inspect(
    pipeline: str = PIPELINE,
    json_out: bool = typer.Option(False, "--json", help="print the resolved graph as JSON"),
    edges: bool = typer.Option(False, "--edges", help="show each edge's transport and the settings chosen, with why"),
    plan_out: bool = typer.Option(False, "--plan", help="show the compiled Plan (processes, ports, argv)"),
    device: str = typer.Option("gpu", "--device", help="gpu or cpu (for --edges/--plan)"),
    target: Optional[str] = typer.Option(
        None, "--target", "-t", help="with --edges/--plan: as compiled for this target (local | k8s | slurm), "
        "its checks and -O options applied (e.g. -t slurm -O network=tcp)"),
    opt: Optional[List[str]] = typer.Option(None, "--opt", "-O", help="target option KEY=VALUE (with --target)"),
    mock: bool = MOCK,
    model: Optional[str] = MODEL,
    set_: Optional[List[str]] = SET,
    graph: Optional[str] = GRAPH,
) -> None:
    """Print the resolved graph (defaults filled) as a table or JSON."""
    from .inspect_cmd import run

    run(pipeline, _overrides(mock, model, set_, graph), json_out, edges, plan_out, device, target, list(opt or []))


@app.command("list")
def list_(folder: str = typer.Argument("pipelines", help="folder of pipeline files")) -> None:
    """List the pipelines in a folder with their shape, engines and GPU totals."""
    from .list_cmd import run

    run(folder)


@app.command()
def viz(
    pipeline: str = PIPELINE,
    fmt: str = typer.Option("mermaid", "--format", "-f", help="mermaid | dot | svg | html"),
    out: Optional[str] = typer.Option(None, "--output", "-o", help="write to FILE instead of stdout"),
    mock: bool = MOCK,
    model: Optional[str] = MODEL,
    set_: Optional[List[str]] = SET,
    graph: Optional[str] = GRAPH,
) -> None:
    """Draw the graph: role, engine, model, replicas and GPUs per node; NIXL edges stand out."""
    from .viz_cmd import run

    run(pipeline, _overrides(mock, model, set_, graph), fmt, out)


@app.command("compile")
def compile_(
    pipeline: str = PIPELINE,
    target: str = typer.Option(..., "--target", "-t", help="local | k8s | slurm"),
    out: str = typer.Option(..., "--output", "-o", help=(
        "output folder: new, empty, or one servegraph wrote (only its own files are replaced)")),
    opt: Optional[List[str]] = typer.Option(
        None, "--opt", "-O", help="target option KEY=VALUE (repeatable); `graph targets` lists them"
    ),
    device: str = typer.Option("gpu", "--device", help="gpu, or cpu to run engines on CPU"),
    force: bool = FORCE,
    mock: bool = MOCK,
    model: Optional[str] = MODEL,
    set_: Optional[List[str]] = SET,
    graph: Optional[str] = GRAPH,
) -> None:
    """Lower a pipeline to files for a target: a Plan + launch script, manifests, or an sbatch script."""
    from .compile_cmd import run

    run(pipeline, _overrides(mock, model, set_, graph), target, out, list(opt or []), device, force)


@app.command()
def targets() -> None:
    """List the targets and the options each takes (for `graph compile -O KEY=VALUE`)."""
    from .target_options import list_targets

    list_targets()


@app.command(epilog=(
    "Examples:  graph run pipelines/pd.py --mock  |  "
    "graph run pipelines/pd.py --model models/llama --device cpu  |  "
    "graph run pipelines/kv_routed.py --mock --set worker.replicas=8 --set router.policy=least_loaded  |  "
    "--set frontend.stage_timeout_s=30 --set frontend.migration_limit=0"
))
def run(
    pipeline: str = PIPELINE,
    mock: bool = MOCK,
    model: Optional[str] = MODEL,
    device: str = typer.Option("gpu", "--device", help="gpu, or cpu to run engines on this CPU"),
    port: Optional[int] = PORT,
    base_port: int = BASE_PORT,
    host: Optional[str] = typer.Option(None, "--host", help=(
        "address the frontend listens on (default: the graph's, else 127.0.0.1; --host 0.0.0.0 exposes it "
        "on every interface, with no authentication). Other services always listen on 127.0.0.1")),
    workdir: Optional[str] = typer.Option(None, "--workdir", help="folder for configs and logs (default: a temp dir)"),
    set_: Optional[List[str]] = SET,
    graph: Optional[str] = GRAPH,
) -> None:
    """Serve the graph on this machine: start every process, wait for health, print the URL.

    Ctrl-C drains and stops everything. With --mock it needs no GPU and no model download.
    Everything listens on 127.0.0.1 unless --host says otherwise.
    """
    from .run_cmd import run as run_graph

    run_graph(pipeline, _overrides(mock, model, set_, graph), device, port, base_port, workdir, host)


@app.command()
def submit(
    pipeline: str = PIPELINE,
    out: str = typer.Option("slurm-out", "--output", "-o", help=(
        "folder for the sbatch script: new, empty, or one servegraph wrote")),
    opt: Optional[List[str]] = typer.Option(None, "--opt", "-O", help="slurm option KEY=VALUE (see `graph targets`)"),
    device: str = typer.Option("gpu", "--device", help="gpu, or cpu to run engines on CPU"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="keep following after the URL; Ctrl-C cancels the job"),
    port: Optional[int] = PORT,
    base_port: int = BASE_PORT,
    force: bool = FORCE,
    mock: bool = MOCK,
    model: Optional[str] = MODEL,
    set_: Optional[List[str]] = SET,
    graph: Optional[str] = GRAPH,
) -> None:
    """Run the graph on Slurm: compile, sbatch, follow the job, print the frontend URL when it answers."""
    from .slurm_cmd import submit as run_submit

    run_submit(pipeline, _overrides(mock, model, set_, graph), out, list(opt or []), device, wait,
               port=port, base_port=base_port, force=force)


@app.command()
def cancel(
    job: Optional[str] = typer.Argument(None, help="Slurm job id (default: the last `graph submit`)"),
    last: bool = typer.Option(False, "--last", help="cancel the last job `graph submit` started"),
) -> None:
    """Cancel a graph's Slurm job and wait until it has left the queue."""
    from .slurm_cmd import cancel as run_cancel

    run_cancel(None if last else job)


@app.command()
def status(
    job: Optional[str] = typer.Argument(None, help="Slurm job id (default: the last `graph submit`)"),
    json_out: bool = typer.Option(False, "--json", help="print the status as JSON"),
    from_job: bool = typer.Option(False, "--from-job", help=(
        "probe health from inside the job (srun on its first node) instead of from here")),
) -> None:
    """A graph's Slurm job: its state, each service's host, step, pid, restarts, last exit and health."""
    from .slurm_status import status as run_status

    run_status(job, json_out, from_job)


@app.command()
def doctor(json_out: bool = typer.Option(False, "--json", help="print findings as JSON")) -> None:
    """Which engines, NIXL backends, GPUs and target tools this machine has, and how to get the rest."""
    from .doctor_cmd import run as run_doctor

    run_doctor(json_out)


def main() -> None:
    """Console-script entry point.

    When stderr is not a terminal (CI logs, pipes), usage errors and help are printed by click
    plainly: rich would draw them in boxes hard-wrapped at 80 columns, which breaks grep.
    """
    if not sys.stderr.isatty():
        app.rich_markup_mode = None
    app()
