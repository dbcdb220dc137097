"""What a node of your own costs in the request path: the aggregated example on the mock engine, with and
without a pass-through request node (bench/passthrough_agg.py), same load, same run.

Prints p50/p99 at 1 connection (the latency a node adds to one request; goal: at most 1 ms at p50) and
req/s at 32 connections, for both graphs and their difference.

Usage: python bench/user_node_overhead.py [--duration 15]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.frontend_vs_dynamo import chat, wait_ready, wrk  # noqa: E402
from bench.procs import Procs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are printed")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-node-"))
    procs = Procs()
    graphs = {"without": ("pipelines/agg.py", 18700), "with node": ("bench/passthrough_agg.py", 18800)}
    results: dict[str, list] = {name: [] for name in graphs}
    try:
        for name, (pipeline, port) in graphs.items():
            procs.start([sys.executable, "-m", "compiler.cli", "run", pipeline, "--mock", "--port", str(port),
                         "--base-port", str(port + 10), "--workdir", str(work / name.replace(" ", "-")),
                         "--set", "worker.replicas=1", "--set", "worker.mock={speedup: 1000}"], work / f"{name}.log")
        for _, port in graphs.values():
            wait_ready(f"http://127.0.0.1:{port}/v1/chat/completions", chat(2, False))
        for _ in range(args.rounds):
            for name, (_, port) in graphs.items():
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                results[name].append((wrk(url, chat(8, False), 1, args.duration), wrk(url, chat(8, False), 32,
                                                                                       args.duration)))
    finally:
        procs.stop()

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    print(f"\n# a pass-through node of your own, mock worker, non-streaming max_tokens 8, {args.rounds} rounds")
    print(f"{'graph':12} {'p50 ms @1':>10} {'p99 ms @1':>10} {'req/s @32':>10}")
    summary = {}
    for name, runs in results.items():
        p50, p99, rps = (median([r[0].p50_ms for r in runs]), median([r[0].p99_ms for r in runs]),
                         median([r[1].rps for r in runs]))
        summary[name] = (p50, rps)
        print(f"{name:12} {p50:10.3f} {p99:10.3f} {rps:10.0f}")
    added = summary["with node"][0] - summary["without"][0]
    print(f"the node adds {added:.3f} ms at p50 (goal <= 1 ms); req/s with it: "
          f"{summary['with node'][1] / summary['without'][1]:.2f} of without")


if __name__ == "__main__":
    main()
