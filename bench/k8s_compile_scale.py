"""Compile a generated 1,000-node graph to Kubernetes manifests and time each step (goal: < 1 s).

    .venv/bin/python bench/k8s_compile_scale.py [--nodes 1000] [--runs 5]

The graph is built through the graph API: one frontend feeding N-1 aggregated
vLLM worker nodes (one replica each), so the Plan has N services and the k8s
target writes N workload files. Prints the median of each step over the runs,
wall-clock and CPU time of this process (the CPU column is what to compare on a
shared, loaded machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler.plan import PlanOptions, plan  # noqa: E402
from compiler.targets import k8s  # noqa: E402
from compiler.targets.output import write_output  # noqa: E402
from graph import Frontend, Graph, Worker, resolve, validate_spec  # noqa: E402


def build(nodes: int) -> Graph:
    """One frontend and ``nodes - 1`` worker nodes."""
    with Graph("scale") as g:
        fe = Frontend(port=8000)
        for i in range(nodes - 1):
            fe >> Worker(name=f"w{i}", engine="vllm", model="meta-llama/Llama-3.1-8B-Instruct")
    return g


def one_run(nodes: int, out: str) -> dict[str, tuple[float, float]]:
    """(wall s, CPU s) of each step of one compile."""
    times: dict[str, tuple[float, float]] = {}
    state: dict[str, object] = {}

    def step(name: str, fn) -> None:
        w, c = time.perf_counter(), time.process_time()
        fn()
        times[name] = (time.perf_counter() - w, time.process_time() - c)

    step("build+resolve", lambda: state.update(spec=resolve(build(nodes))))
    step("validate", lambda: state.update(errors=validate_spec(state["spec"])))
    assert not state["errors"], state["errors"]
    step("plan", lambda: state.update(plan=plan(state["spec"], PlanOptions())))
    step("render k8s", lambda: state.update(files=k8s.render(state["plan"], k8s.Options())))
    step("write", lambda: write_output(state["files"], out))
    times["total"] = (sum(w for w, _ in times.values()), sum(c for _, c in times.values()))
    files = state["files"]
    assert isinstance(files, dict) and len(files) == 2 + (nodes - 1) + 1  # config, kustomization, nodes/*
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(args.nodes, f"{tmp}/out") for _ in range(args.runs)]
    print(f"{args.nodes}-node graph -> k8s ({args.nodes} Deployments + Services), median of {args.runs} runs")
    print(f"  {'step':<14} {'wall s':>8} {'CPU s':>8}")
    for key in runs[0]:
        wall = statistics.median(r[key][0] for r in runs)
        cpu = statistics.median(r[key][1] for r in runs)
        print(f"  {key:<14} {wall:8.3f} {cpu:8.3f}")


if __name__ == "__main__":
    main()
