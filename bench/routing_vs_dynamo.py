"""Our kv routing policy against NVIDIA Dynamo's KV router: the same prompts, in the same order, in one run.

The load is a shared-prefix workload: G documents of ~P tokens (the tiny Llama's tokenizer), each asked Q
short questions, shuffled, sent by C concurrent clients as streamed chat requests (document as the system
message, question as the user message). Each side serves it with 4 mock workers of N KV blocks of 16
tokens, fresh for each policy:

* ours: ``graph run pipelines/kv_routed.py --mock`` (Frontend >> Router(policy) >> 4 Workers), the workers
  with the real tokenizer (``--set worker.mock={tokenizer: ..., kv_blocks: N, block_size: 16}``);
* Dynamo 1.6.1: ``dynamo.frontend --router-mode kv`` (KV events from the workers: it knows what each
  caches) and ``dynamo.mocker --num-workers 4 --num-gpu-blocks-override N --block-size 16``, same tokenizer.

Both mocks follow vLLM's prefix-cache rule (a block is a hit once scheduled, read once computed; see
docs/engines.md, "vLLM"). The hit rate is measured from outside, from the responses: sum of
usage.prompt_tokens_details.cached_tokens / sum of usage.prompt_tokens. TTFT is printed within each side
only: the two mocks' timing models differ, so TTFT across sides says nothing. Round-robin on both sides is
the baseline. For ours it also prints how many documents each worker got (from the workers' request logs).

Usage:
    scripts/setup-dynamo.sh .venv-dynamo
    .venv/bin/python scripts/build_tiny_models.py models/
    .venv/bin/python bench/routing_vs_dynamo.py --model-dir models/llama --dynamo-venv .venv-dynamo
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import random
import re
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

import aiohttp

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.frontend_vs_dynamo import wait_ready  # noqa: E402
from bench.procs import Procs  # noqa: E402

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
WORDS = ("the model serves a request with a prompt and a cache of key value blocks on each worker while the "
         "router sends every question about a document to the engine that holds it").split()
#: Dynamo's runtime advertises this machine's first address unless told otherwise: keep it on loopback.
DYNAMO_LOOPBACK = {name: "127.0.0.1" for name in (
    "DYN_TCP_RPC_HOST", "DYN_TCP_RESPONSE_STREAM_HOST", "DYN_EVENT_PLANE_HOST", "DYN_SYSTEM_HOST")}
READY = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}  # what wait_ready posts


@dataclass
class Result:
    """One side's run of the workload."""

    side: str
    policy: str
    prompt_tokens: int = 0
    cached_tokens: int = 0
    ttfts: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    notes: str = ""
    cached_by_group: dict[int, list[int]] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def ttft_ms(self, q: float) -> float:
        ordered = sorted(self.ttfts)
        return 1000 * ordered[min(int(len(ordered) * q), len(ordered) - 1)] if ordered else float("nan")


def workload(model_dir: str, groups: int, prefix_tokens: int, questions: int, seed: int) -> list[tuple[int, str, str]]:
    """(group, document, question) items, shuffled; each document ~``prefix_tokens`` tokens of the model."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(pathlib.Path(model_dir) / "tokenizer.json"))
    rng = random.Random(seed)
    docs = []
    for g in range(groups):
        words = [f"Document {g}."]
        while len(tok.encode(" ".join(words)).ids) < prefix_tokens:
            words += [rng.choice(WORDS) for _ in range(20)]
        docs.append(" ".join(words))
    items = [(g, docs[g], f"Question {q} about document {g}: what does part {rng.randrange(1000)} say?")
             for g in range(groups) for q in range(questions)]
    rng.shuffle(items)
    return items


def chat(system: str, question: str, max_tokens: int) -> dict:
    return {"model": MODEL, "stream": True, "max_tokens": max_tokens, "ignore_eos": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}


async def one(session: aiohttp.ClientSession, url: str, group: int, body: dict, result: Result) -> None:
    start = time.perf_counter()
    first, usage = None, None
    async with session.post(url, json=body) as resp:
        if resp.status != 200:
            result.errors += 1
            await resp.read()
            return
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            if first is None and b'"content":"' in line and b'"content":""' not in line:
                first = time.perf_counter() - start
            if b'"usage":{' in line:
                usage = json.loads(line[6:]).get("usage")
    if not usage:
        result.errors += 1
        return
    result.prompt_tokens += usage["prompt_tokens"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    result.cached_tokens += cached
    result.cached_by_group.setdefault(group, []).append(cached)
    result.ttfts.append(first if first is not None else time.perf_counter() - start)


async def drive(url: str, items: list[tuple[int, str, str]], concurrency: int, max_tokens: int, result: Result) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def client() -> None:
            while not queue.empty():
                group, system, question = queue.get_nowait()
                await one(session, url, group, chat(system, question, max_tokens), result)
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start


def documents_per_worker(workdir: pathlib.Path, groups: dict[str, int]) -> tuple[list[int], int]:
    """For each of our workers, how many distinct documents it was sent; and their prefix-cache waits."""
    plan = json.loads((workdir / "plan.json").read_text())
    counts, waits = [], 0
    for service in plan["services"]:
        if service["role"] != "worker":
            continue
        base = f"http://127.0.0.1:{service['ports']['http']}"
        with urllib.request.urlopen(base + "/mock/requests", timeout=5) as resp:
            records = json.loads(resp.read())
        records = records.get("requests", records) if isinstance(records, dict) else records
        seen = {groups[r["body"]["messages"][0]["content"]] for r in records
                if isinstance(r.get("body"), dict) and r["body"].get("messages")
                and r["body"]["messages"][0]["content"] in groups}
        counts.append(len(seen))
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            found = re.search(r"^mock_prefix_waits_total ([\d.e+]+)$", resp.read().decode(), re.M)
        waits += int(float(found.group(1))) if found else 0
    return counts, waits


def run_ours(policy: str, args: argparse.Namespace, items: list, work: pathlib.Path) -> Result:
    workdir = work / f"ours-{policy}"
    knobs = (f"{{tokenizer: {args.model_dir}, kv_blocks: {args.kv_blocks}, prefill_tps: {args.prefill_tps}, "
             f"itl_ms: {args.itl_ms}}}")
    procs = Procs()
    procs.start([sys.executable, "-m", "compiler.cli", "run", "pipelines/kv_routed.py", "--mock",
                 "--port", str(args.port), "--base-port", str(args.port + 10), "--workdir", str(workdir),
                 "--set", f"router.policy={policy}", "--set", "worker.replicas=4", "--set", "worker.block_size=16",
                 "--set", f"worker.mock={knobs}"],
                work / f"ours-{policy}.log")
    url = f"http://127.0.0.1:{args.port}/v1/chat/completions"
    result = Result("ours", policy)
    try:
        wait_ready(url, READY, 180.0, procs)
        asyncio.run(drive(url, items, args.concurrency, args.max_tokens, result))
        groups = {doc: g for g, doc, _ in items}
        counts, waits = documents_per_worker(workdir, groups)
        result.notes = f"documents per worker {counts}; requests that waited for a prefix being computed: {waits}"
    finally:
        procs.stop()
    return result


def run_dynamo(policy: str, args: argparse.Namespace, items: list, work: pathlib.Path) -> Result:
    env = {"DYN_FILE_KV": str(work / f"dynamo-{policy}-discovery"), **DYNAMO_LOOPBACK}
    py = str(pathlib.Path(args.dynamo_venv) / "bin" / "python")
    common = ["--discovery-backend", "file", "--request-plane", "tcp", "--event-plane", "zmq"]
    procs = Procs()
    procs.start([py, "-m", "dynamo.mocker", "--model-path", args.model_dir, "--model-name", MODEL,
                 "--num-workers", "4", "--num-gpu-blocks-override", str(args.kv_blocks), "--block-size", "16",
                 *common], work / f"dynamo-{policy}-mocker.log", env)
    procs.start([py, "-m", "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(args.dynamo_port),
                 "--router-mode", "kv" if policy == "kv" else "round-robin", *common],
                work / f"dynamo-{policy}-frontend.log", env)
    url = f"http://127.0.0.1:{args.dynamo_port}/v1/chat/completions"
    result = Result("dynamo", policy)
    try:
        wait_ready(url, READY, 180.0, procs)
        time.sleep(2)  # every worker registered (the first answer needs only one)
        asyncio.run(drive(url, items, args.concurrency, args.max_tokens, result))
    finally:
        procs.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="the tiny Llama (scripts/build_tiny_models.py)")
    parser.add_argument("--dynamo-venv", required=True, help="virtualenv with ai-dynamo (scripts/setup-dynamo.sh)")
    parser.add_argument("--groups", type=int, default=8, help="documents (shared prefixes)")
    parser.add_argument("--prefix-tokens", type=int, default=1400)
    parser.add_argument("--questions", type=int, default=24, help="questions per document")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kv-blocks", type=int, default=260, help="KV blocks of 16 tokens per worker, both sides")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--prefill-tps", type=float, default=20000.0, help="our mock's prefill speed")
    parser.add_argument("--itl-ms", type=float, default=5.0, help="our mock's inter-token latency")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=18900, help="our frontend (workers from port+10)")
    parser.add_argument("--dynamo-port", type=int, default=18990)
    parser.add_argument("--no-baseline", action="store_true", help="skip the round-robin runs")
    args = parser.parse_args()
    args.model_dir = str(pathlib.Path(args.model_dir).resolve())
    if not (pathlib.Path(args.dynamo_venv) / "bin" / "python").exists():
        raise SystemExit(f"no virtualenv at {args.dynamo_venv}: run scripts/setup-dynamo.sh {args.dynamo_venv}")
    items = workload(args.model_dir, args.groups, args.prefix_tokens, args.questions, args.seed)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-routing-"))
    policies = ("kv",) if args.no_baseline else ("kv", "round_robin")
    results = [run(policy, args, items, work) for policy in policies for run in (run_ours, run_dynamo)]
    print(f"\n# shared-prefix workload: {args.groups} documents of ~{args.prefix_tokens} tokens x {args.questions} "
          f"questions = {len(items)} streamed requests, {args.concurrency} concurrent, max_tokens {args.max_tokens}; "
          f"4 workers of {args.kv_blocks} blocks of 16 tokens on each side (logs: {work})")
    print(f"{'side':7} {'policy':12} {'hit rate':>9} {'cached/prompt tokens':>22} {'TTFT p50 ms':>12} "
          f"{'TTFT p90 ms':>12} {'wall s':>7} {'errors':>6}")
    for r in results:
        print(f"{r.side:7} {r.policy:12} {r.hit_rate:9.1%} {f'{r.cached_tokens}/{r.prompt_tokens}':>22} "
              f"{r.ttft_ms(0.5):12.1f} {r.ttft_ms(0.9):12.1f} {r.seconds:7.2f} {r.errors:6d}")
    by = {(r.side, r.policy): r for r in results}
    # Every request but each document's first hits all of the document's full blocks (the most any got).
    best = {g: max(max(r.cached_by_group.get(g, [0])) for r in results) for g in range(args.groups)}
    ceiling = sum(best[g] * (args.questions - 1) for g in best) / max(by["ours", "kv"].prompt_tokens, 1)
    print(f"{'(best possible)':20} {ceiling:9.1%}   every request but each document's first hits the whole document")
    ours, theirs = by["ours", "kv"], by["dynamo", "kv"]
    print(f"hit rate, ours kv / Dynamo kv: {ours.hit_rate / max(theirs.hit_rate, 1e-9):.2f}x "
          "(TTFT: compare within a side only; the two mocks' timing models differ)")
    for r in results:
        if r.notes:
            print(f"{r.side} {r.policy}: {r.notes}")


if __name__ == "__main__":
    main()
