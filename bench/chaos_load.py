"""Requests lost while engine replicas are SIGKILLed under a steady load (`graph run`, mock engines).

``--clients`` clients (half of them streaming, every other request with an image when the
graph has an encoder) send requests for ``--duration`` seconds; every ``--kill-every``
seconds a random engine replica is SIGKILLed (the supervisor restarts it). Prints how many
requests were served and how many failed, with what the failed clients saw. The goal is 0
failed: a replica's death is the server's problem, never the client's.

Usage: python bench/chaos_load.py [--pipeline pipelines/e_p_d.py] [--duration 240] [--kill-every 20]
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import random
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e import metric_sum, metrics, start_graph  # noqa: E402
from tests.load import kill_random_engine, run_load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default="pipelines/e_p_d.py")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=240.0, help="seconds of load")
    ap.add_argument("--kill-every", type=float, default=20.0, help="seconds between kills (0: none)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    g = start_graph(args.pipeline, work / "run", "--mock")
    try:
        model = g.plan["services"][-1]["config"]["routes"][0]["model"]
        has_encoder = any(s["role"] == "encoder" for s in g.plan["services"])
        tally = asyncio.run(run_load(g.url + "/chat/completions", model, args.clients, args.duration,
                                     args.kill_every, kill_random_engine(str(g.workdir / "state.json"),
                                                                         random.Random(args.seed)), has_encoder))
        values = metrics(g.url.removesuffix("/v1"))
        retries = metric_sum(values, "servegraph_request_retries_total")
        fallbacks = metric_sum(values, "servegraph_disagg_skipped_total")
        migrations = metric_sum(values, "servegraph_stream_migrations_total")
    finally:
        g.stop()
    print(f"\n# {args.pipeline} --mock, {args.clients} clients (half streamed) for {args.duration:g} s, "
          f"a random engine replica SIGKILLed every {args.kill_every:g} s")
    print(tally.report())
    print(f"frontend: {retries:g} requests run again, {fallbacks:g} served by decode alone, "
          f"{migrations:g} streams migrated")


if __name__ == "__main__":
    main()
