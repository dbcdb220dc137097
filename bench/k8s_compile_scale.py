"""Compile a generated 1,000-node graph to Kubernetes manifests and time each step (goal: < 1 s).

    .venv/bin/python bench/k8s_compile_scale.py [--nodes 1000] [--runs 5]

The graph is built through the graph API: one frontend feeding N-1 aggregated
vLLM worker nodes (one replica each), so the Plan has N services and the k8s
target writes N workload files. Prints the median of each step over the runs.
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


def one_run(nodes: int, out: str) -> dict[str, float]:
    times: dict[str, float] = {}
    t = time.perf_counter()
    spec = resolve(build(nodes))
    times["build+resolve"] = time.perf_counter() - t
    t = time.perf_counter()
    errors = validate_spec(spec)
    times["validate"] = time.perf_counter() - t
    assert not errors, errors[:3]
    t = time.perf_counter()
    the_plan = plan(spec, PlanOptions())
    times["plan"] = time.perf_counter() - t
    t = time.perf_counter()
    files = k8s.render(the_plan, k8s.Options())
    times["render k8s"] = time.perf_counter() - t
    t = time.perf_counter()
    write_output(files, out)
    times["write"] = time.perf_counter() - t
    times["total"] = sum(times.values())
    times["files"] = len(files)
    times["MB"] = sum(len(v) for v in files.values()) / 1e6
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(args.nodes, f"{tmp}/out") for _ in range(args.runs)]
    print(f"{args.nodes}-node graph -> k8s, median of {args.runs} runs")
    for key in runs[0]:
        med = statistics.median(r[key] for r in runs)
        unit = "" if key in ("files", "MB") else " s"
        print(f"  {key:<14} {med:8.3f}{unit}")


if __name__ == "__main__":
    main()
