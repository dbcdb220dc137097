"""How validation scales: build graphs of 1,000 and 10,000 nodes, time load, resolve, validate.

Two shapes, written through the public API in a generated pipeline file (so
``load`` includes executing user code and creating every node):

* ``pd``: one frontend fanning out to many Prefill >> Decode pairs;
* ``routers``: frontend >> router >> many routers, each fanning out to workers.

Run: ``.venv/bin/python bench/validate_scale.py [--sizes 1000 10000] [--repeat 3]``.
Prints CPU seconds (process time, steady on a busy machine) per phase and microseconds per node; the goal is linear growth
and under one second in all for 1,000 nodes.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from graph import load_graph, resolve, validate_spec  # noqa: E402

_PD = """
from graph import Decode, Frontend, Graph, Prefill
with Graph("scale-pd") as g:
    fe = Frontend()
    for i in range({pairs}):
        fe >> Prefill(model="m", name=f"p{{i}}") >> Decode(model="m", name=f"d{{i}}")
"""

_ROUTERS = """
from graph import Frontend, Graph, Router, Worker
with Graph("scale-routers") as g:
    top = Router()
    Frontend() >> top
    for i in range({routers}):
        top >> Router(name=f"r{{i}}") >> [Worker(model="m") for _ in range(8)]
"""


def _source(shape: str, nodes: int) -> str:
    if shape == "pd":
        return _PD.format(pairs=max((nodes - 1) // 2, 1))
    return _ROUTERS.format(routers=max((nodes - 2) // 9, 1))


def measure(shape: str, nodes: int, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` seconds for each phase on one generated pipeline."""
    best = {"load": float("inf"), "resolve": float("inf"), "validate": float("inf"), "nodes": 0.0, "errors": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / f"{shape}_{nodes}.py"
        path.write_text(_source(shape, nodes))
        for _ in range(repeat):
            t0 = time.process_time()
            graph = load_graph(str(path))
            t1 = time.process_time()
            spec = resolve(graph)
            t2 = time.process_time()
            errors = validate_spec(spec, recorded=graph.problems)
            t3 = time.process_time()
            for key, value in (("load", t1 - t0), ("resolve", t2 - t1), ("validate", t3 - t2)):
                best[key] = min(best[key], value)
            best["nodes"], best["errors"] = len(spec.nodes), len(errors)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'shape':8} {'nodes':>6} {'load s':>8} {'resolve s':>9} {'validate s':>10} {'total s':>8} {'µs/node':>8}")
    for shape in ("pd", "routers"):
        for size in args.sizes:
            r = measure(shape, size, args.repeat)
            total = r["load"] + r["resolve"] + r["validate"]
            per_node = total / r["nodes"] * 1e6
            print(f"{shape:8} {int(r['nodes']):6d} {r['load']:8.3f} {r['resolve']:9.3f} {r['validate']:10.3f} "
                  f"{total:8.3f} {per_node:8.1f}")
            if r["errors"]:
                raise SystemExit(f"the generated {shape} graph has {int(r['errors'])} problems; the bench is broken")


if __name__ == "__main__":
    main()
