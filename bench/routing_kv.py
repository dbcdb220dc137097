"""KV/prefix-aware routing against round-robin on a shared-prefix workload (mock engines).

Runs pipelines/kv_routed.py (Frontend >> Router >> 4 Workers) twice on the mock engine:
once with the graph's `Router(policy="kv")`, once with `--set router.policy=round_robin`.
Each mock worker has a KV cache that holds only a few long prefixes, so where a prefix
is sent decides whether its blocks are still cached. The workload: G groups (think: G
system prompts / documents of ~P words), each asked Q different short questions, sent
by C concurrent clients in random order. Prints the workers' prefix-cache hit rate
(vllm:prefix_cache_hits / queries from their /metrics) and TTFT p50/p90 (streamed),
and the ratios kv/round_robin.

Usage: python bench/routing_kv.py [--groups 8 --prefix-words 1500 --questions 12 --concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def workload(groups: int, prefix_words: int, questions: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    prefixes = [" ".join(rng.choice(WORDS) + str(g) for _ in range(prefix_words)) for g in range(groups)]
    items = [(prefixes[g], f"question {q} about document {g}: {rng.random():.6f}?") for g in range(groups) for q in range(questions)]
    rng.shuffle(items)
    return items


async def ttft(session: aiohttp.ClientSession, url: str, system: str, question: str) -> float:
    body = {"model": MODEL, "stream": True, "max_tokens": 4,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}
    start = time.perf_counter()
    async with session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        first = None
        async for line in resp.content:
            if first is None and line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
                first = time.perf_counter() - start
        return first if first is not None else time.perf_counter() - start


async def drive(url: str, items: list[tuple[str, str]], concurrency: int) -> list[float]:
    queue: asyncio.Queue = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    out: list[float] = []
    async with aiohttp.ClientSession() as session:
        async def worker() -> None:
            while not queue.empty():
                system, question = queue.get_nowait()
                out.append(await ttft(session, url, system, question))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def scrape(port: int) -> tuple[float, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    def total(name: str) -> float:
        return sum(float(m) for m in re.findall(rf"^{name}_total(?:{{[^}}]*}})? ([\d.e+]+)$", text, re.M))
    return total("vllm:prefix_cache_hits"), total("vllm:prefix_cache_queries")


def run(policy: str, args: argparse.Namespace, items: list[tuple[str, str]]) -> dict:
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"bench-kv-{policy}-"))
    port, base = 18700, 18710
    mock = f"{{kv_blocks: {args.kv_blocks}, prefill_tps: {args.prefill_tps}, itl_ms: 2}}"
    cmd = [sys.executable, "-m", "compiler.cli", "run", "pipelines/kv_routed.py", "--mock", "--port", str(port),
           "--base-port", str(base), "--workdir", str(work / "run"), "--set", f"router.policy={policy}",
           "--set", f"worker.mock={mock}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(work / "log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                asyncio.run(drive(url, [("warm", "up")], 1))
                break
            except (aiohttp.ClientError, AssertionError, OSError):
                time.sleep(0.5)
        plan = json.loads((work / "run" / "plan.json").read_text())
        workers = [s["ports"]["http"] for s in plan["services"] if s["role"] == "worker"]
        before = [scrape(p) for p in workers]
        times = asyncio.run(drive(url, items, args.concurrency))
        after = [scrape(p) for p in workers]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    hits = sum(a[0] - b[0] for a, b in zip(after, before))
    queries = sum(a[1] - b[1] for a, b in zip(after, before))
    times.sort()
    return {"policy": policy, "hit_rate": hits / queries if queries else 0.0, "ttft_p50": statistics.median(times),
            "ttft_p90": times[int(len(times) * 0.9)], "requests": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--prefix-words", type=int, default=1500)
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kv-blocks", type=int, default=260, help="KV capacity per worker (blocks of 16 tokens)")
    parser.add_argument("--prefill-tps", type=float, default=20000.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    items = workload(args.groups, args.prefix_words, args.questions, args.seed)
    results = [run(policy, args, items) for policy in ("kv", "round_robin")]
    print(f"\n# shared-prefix workload: {args.groups} prefixes x {args.questions} questions, "
          f"~{args.prefix_words} words each, {args.concurrency} concurrent, 4 mock workers of {args.kv_blocks} KV blocks")
    print(f"{'policy':12} {'prefix hit rate':>16} {'TTFT p50 ms':>12} {'TTFT p90 ms':>12}")
    for r in results:
        print(f"{r['policy']:12} {r['hit_rate']:16.1%} {r['ttft_p50'] * 1000:12.1f} {r['ttft_p90'] * 1000:12.1f}")
    kv, rr = results
    print(f"ratio kv/round_robin: hit rate {kv['hit_rate'] / max(rr['hit_rate'], 1e-9):.2f}x, "
          f"TTFT p50 {kv['ttft_p50'] / rr['ttft_p50']:.2f}x")


if __name__ == "__main__":
    main()
