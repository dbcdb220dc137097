"""What servegraph costs on top of real vLLM (CPU build, tiny Llama), measured.

1. Time to ready of pipelines/pd.py: `graph run` (until the frontend answers) vs
   the same two vLLM servers, same argv and env as the Plan, started by hand
   (until both /health answer). Alternated ``--rounds`` times.
2. TTFT and inter-token latency p50 at ``--concurrency`` streamed requests:
   through the frontend of pipelines/agg.py vs directly against its vLLM worker.
3. NIXL transfer figures from the P/D decode's /metrics after a few requests.

Usage: python bench/vllm_overhead.py [--models DIR] [--rounds 1] [--out result.json]
(needs vLLM in this interpreter: bash scripts/setup-vllm.sh .venv). Every process
started here is stopped by its process group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler.cli.common import Overrides  # noqa: E402
from compiler.cli.run_cmd import prepare  # noqa: E402
from tests.e2e import free_port_block, http_json, metric_sum, metrics, start_graph  # noqa: E402
from tests.vllm_fixtures import (  # noqa: E402
    TEXT_MODEL, complete, engine_sets, tiny_models,
)

PD_SETS = engine_sets("prefill", "decode")
AGG_SETS = engine_sets("worker")


def _wait_health(urls: list[str], deadline: float) -> None:
    pending = list(urls)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not healthy: {pending}")
        try:
            if http_json("GET", pending[0], timeout=2)[0] == 200:
                pending.pop(0)
                continue
        except OSError:
            pass
        time.sleep(0.2)


def by_hand_ready_s(model: pathlib.Path, workdir: pathlib.Path) -> float:
    """Start the P/D plan's engines ourselves (same argv/env), seconds until both are healthy."""
    base = free_port_block(10)
    the_plan = prepare(str(ROOT / "pipelines/pd.py"), Overrides(model=str(model), sets=PD_SETS), "cpu", None, base)
    engines = [s for s in the_plan.services if s.engine]
    workdir.mkdir(parents=True, exist_ok=True)
    procs = []
    start = time.monotonic()
    try:
        for s in engines:
            env = {**os.environ, **{k: v.replace("${SG_SELF_HOST}", "127.0.0.1") for k, v in s.env.items()}}
            log = open(workdir / f"{s.name}.log", "wb")
            procs.append(subprocess.Popen(s.argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=workdir, start_new_session=True))
        _wait_health([f"http://127.0.0.1:{s.http_port}/health" for s in engines], start + 900)
        return time.monotonic() - start
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def graph_run_ready_s(pipeline: str, model: pathlib.Path, workdir: pathlib.Path, sets: list[str]):
    """`graph run` until the frontend answers; returns (seconds, RunningGraph) — the caller stops it."""
    args = ["--device", "cpu", "--model", str(model)] + [a for s in sets for a in ("--set", s)]
    start = time.monotonic()
    g = start_graph(pipeline, workdir, *args, ready_timeout=900)
    return time.monotonic() - start, g


async def _one_stream(session, url: str, prompt: str, max_tokens: int) -> tuple[float, list[float]]:
    body = {"model": TEXT_MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True}
    start = time.perf_counter()
    stamps = []
    async with session.post(url + "/v1/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if line.startswith(b"data: {") and b'"text":""' not in line:
                stamps.append(time.perf_counter())
    ttft = stamps[0] - start
    return ttft, [b - a for a, b in zip(stamps, stamps[1:])]


async def _load(url: str, concurrency: int, requests: int, max_tokens: int) -> dict[str, float]:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    prompts = [f"request {i}: " + "the quick brown fox jumps over the lazy dog " * (4 + i % 8) for i in range(requests)]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        async def limited(p: str):
            async with sem:
                return await _one_stream(session, url, p, max_tokens)

        results = await asyncio.gather(*(limited(p) for p in prompts))
    ttfts = [r[0] for r in results]
    itls = [gap for r in results for gap in r[1]]
    return {"ttft_p50_ms": statistics.median(ttfts) * 1e3, "itl_p50_ms": statistics.median(itls) * 1e3,
            "requests": requests, "concurrency": concurrency, "max_tokens": max_tokens}


def nixl_figures(decode_url: str, before: dict[str, float]) -> dict[str, float]:
    """Transfers, bytes and time pulled by the decode since ``before``."""
    after = metrics(decode_url)

    def delta(name: str) -> float:
        return metric_sum(after, name) - metric_sum(before, name)

    count = delta("vllm:nixl_xfer_time_seconds_count")
    seconds = delta("vllm:nixl_xfer_time_seconds_sum")
    moved = delta("vllm:nixl_bytes_transferred_sum")
    return {"transfers": count, "bytes": moved, "avg_xfer_ms": seconds / count * 1e3 if count else 0.0,
            "mb_per_s": moved / seconds / 1e6 if seconds else 0.0,
            "failed": metric_sum(after, "vllm:nixl_num_failed_transfers_total")}


def main() -> None:
    """Run the three measurements and print (and optionally save) them as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="tiny models folder (default: SERVEGRAPH_MODELS_DIR or a tmp dir)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.models:
        os.environ["SERVEGRAPH_MODELS_DIR"] = args.models
    llama = tiny_models() / "llama"
    work = pathlib.Path(tempfile.mkdtemp(prefix="vllm-overhead-"))
    result: dict[str, Any] = {"load_average_at_start": os.getloadavg()}

    hand, graph = [], []
    for r in range(args.rounds):
        hand.append(by_hand_ready_s(llama, work / f"hand-{r}"))
        print(f"round {r}: by hand ready in {hand[-1]:.1f} s", flush=True)
        took, g = graph_run_ready_s("pipelines/pd.py", llama, work / f"pd-{r}", PD_SETS)
        graph.append(took)
        print(f"round {r}: graph run ready in {took:.1f} s", flush=True)
        try:
            if r == args.rounds - 1:
                decode = g.service_url("decode-0")
                before = metrics(decode)
                for i, n in enumerate((5, 100, 300, 600)):
                    complete(f"http://127.0.0.1:{g.port}", TEXT_MODEL, "word " * n + str(i), 16)
                result["nixl"] = nixl_figures(decode, before)
                result["pd_frontend_load"] = asyncio.run(
                    _load(f"http://127.0.0.1:{g.port}", args.concurrency, args.requests, args.max_tokens))
        finally:
            g.stop(timeout=60)
    result["ready_s"] = {"by_hand": hand, "graph_run": graph,
                         "ratio_median": statistics.median(graph) / statistics.median(hand)}

    _, g = graph_run_ready_s("pipelines/agg.py", llama, work / "agg", AGG_SETS)
    try:
        direct_url = g.service_url("worker-0")
        frontend_url = f"http://127.0.0.1:{g.port}"
        asyncio.run(_load(direct_url, 4, 4, 8))  # warm-up
        direct = asyncio.run(_load(direct_url, args.concurrency, args.requests, args.max_tokens))
        front = asyncio.run(_load(frontend_url, args.concurrency, args.requests, args.max_tokens))
        direct2 = asyncio.run(_load(direct_url, args.concurrency, args.requests, args.max_tokens))
    finally:
        g.stop(timeout=60)
    result["agg_direct"], result["agg_frontend"], result["agg_direct_again"] = direct, front, direct2
    base_ttft = statistics.mean([direct["ttft_p50_ms"], direct2["ttft_p50_ms"]])
    base_itl = statistics.mean([direct["itl_p50_ms"], direct2["itl_p50_ms"]])
    result["ratios"] = {"ttft_p50": front["ttft_p50_ms"] / base_ttft, "itl_p50": front["itl_p50_ms"] / base_itl}
    result["load_average_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
