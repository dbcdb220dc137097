"""Our frontend + mock engine against NVIDIA Dynamo's frontend + mocker, same load, same run.

Equal work on both sides: each mock tokenizes the prompt with the model's real tokenizer
and chat template and detokenizes every output token (ours: `--tokenizer`; Dynamo's mocker
does it in its frontend), speed-up matched. Load: wrk, non-streaming chat, max_tokens 8,
32 connections; then streaming, max_tokens 128 with ignore_eos. Prints req/s, output
tokens/s, p50/p99 and the ratio ours/Dynamo, plus our frontend's overhead over calling
our mock directly (p50 at 1 and at 32 connections).

Our mock writes the streamed tokens whose time has come in one write (one SSE event each),
as vLLM hands its HTTP side every output that piled up; the row "1 write per token" runs
a second copy with `tokens_per_write: 1` so the frontend relays every token on its own.

Usage:
    scripts/setup-dynamo.sh .venv-dynamo
    python scripts/build_tiny_models.py models/      # needs torch + transformers (scripts/setup-vllm.sh)
    python bench/frontend_vs_dynamo.py --model-dir models/llama --dynamo-venv .venv-dynamo [--duration 20]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import Procs  # noqa: E402

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
"""


@dataclass
class Load:
    """One wrk result."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wait_ready(url: str, body: dict, timeout: float = 120.0, procs: Procs | None = None) -> None:
    """Post ``body`` until ``url`` answers 200; with ``procs``, give up as soon as one of them exits."""
    data = json.dumps(body).encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs is not None:
            procs.check()
        try:
            req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"not ready after {timeout:.0f} s: {url}")


def post(url: str, body: dict) -> dict | str:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read().decode()
    return json.loads(raw) if not body.get("stream") else raw


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, body: dict, connections: int, duration: int) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(LUA % json.dumps(body))
        script = fh.name
    out = subprocess.run(
        ["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{duration}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    os.unlink(script)
    # Anchored: a "+/- Stdev" column such as "72.50%" must not pass for the 50th percentile.
    p50_row, p99_row = (re.search(rf"^\s+{q}%\s+([\d.]+\w+)\s*$", out, re.M) for q in (50, 99))
    if not p50_row or not p99_row:
        raise SystemExit(f"wrk got no answers from {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50, p99 = _ms(p50_row.group(1)), _ms(p99_row.group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return Load(rps, p50, p99, errors)


def chat(max_tokens: int, stream: bool) -> dict:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a short poem about the sea."}],
            "max_tokens": max_tokens}
    if stream:
        body.update(stream=True, ignore_eos=True, stream_options={"include_usage": True})
    return body


def usage_tokens(url: str, body: dict) -> int:
    """Completion tokens of one streamed request (from its usage chunk)."""
    raw = post(url, body)
    for line in str(raw).splitlines():
        if line.startswith("data: {") and '"usage"' in line:
            usage = json.loads(line[6:]).get("usage")
            if usage:
                return int(usage["completion_tokens"])
    return -1


def _worker_port(workdir: pathlib.Path) -> int:
    """The HTTP port of the graph's first mock worker (from the Plan `graph run` wrote)."""
    plan = json.loads((workdir / "plan.json").read_text())
    return next(s["ports"]["http"] for s in plan["services"] if s["role"] == "worker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="local model folder with tokenizer (tiny llama)")
    parser.add_argument("--dynamo-venv", required=True, help="virtualenv with ai-dynamo (scripts/setup-dynamo.sh)")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--speedup", type=float, default=1000.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pipeline", default="pipelines/agg.py",
                        help="our graph (bench/passthrough_agg.py: with a pass-through node of your own in the route)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    model_dir = str(pathlib.Path(args.model_dir).resolve())
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-fe-"))
    procs = Procs()
    ours_port, ours1_port, dyn_port, base = 18500, 18530, 18600, 18510
    try:
        # (a) ours: graph run, aggregated example, one mock worker with the real tokenizer. A second
        # copy whose mock writes every streamed token on its own shows what the coalescing is worth.
        for name, port, base_port, per_write in (("ours", ours_port, base, 0), ("ours-1", ours1_port, base + 30, 1)):
            knobs = f"{{tokenizer: {model_dir}, speedup: {args.speedup}, tokens_per_write: {per_write}}}"
            procs.start([sys.executable, "-m", "compiler.cli", "run", args.pipeline, "--mock", "--port", str(port),
                         "--base-port", str(base_port), "--workdir", str(work / name), "--set", "worker.replicas=1",
                         "--set", f"worker.mock={knobs}"], work / f"{name}.log")
        # (b) Dynamo: mocker + frontend, no etcd/NATS (file discovery, tcp request plane).
        dyn_env = {"DYN_FILE_KV": str(work / "dynamo-discovery")}
        py = str(pathlib.Path(args.dynamo_venv) / "bin" / "python")
        common = ["--discovery-backend", "file", "--request-plane", "tcp", "--event-plane", "zmq"]
        procs.start([py, "-m", "dynamo.mocker", "--model-path", model_dir, "--model-name", MODEL,
                     "--speedup-ratio", str(args.speedup), *common], work / "dynamo-mocker.log", dyn_env)
        procs.start([py, "-m", "dynamo.frontend", "--http-port", str(dyn_port), "--router-mode", "round-robin", *common],
                    work / "dynamo-frontend.log", dyn_env)
        ours = f"http://127.0.0.1:{ours_port}/v1/chat/completions"
        ours1 = f"http://127.0.0.1:{ours1_port}/v1/chat/completions"
        theirs = f"http://127.0.0.1:{dyn_port}/v1/chat/completions"
        wait_ready(ours, chat(2, False))
        wait_ready(ours1, chat(2, False))
        wait_ready(theirs, chat(2, False), timeout=180)
        mock = f"http://127.0.0.1:{_worker_port(work / 'ours')}/v1/chat/completions"
        rows = []
        loads = (("non-streaming, max_tokens 8", chat(8, False), ours),
                 ("streaming, max_tokens 128", chat(128, True), ours),
                 ("streaming, 1 write per token", chat(128, True), ours1))
        for label, body, ours_url in loads:
            tokens = {name: (usage_tokens(url, body) if body.get("stream") else 8)
                      for name, url in (("ours", ours_url), ("dynamo", theirs))}
            a = wrk(ours_url, body, args.connections, args.duration)
            b = wrk(theirs, body, args.connections, args.duration)
            rows.append((label, a, b, tokens))
        short = max(args.duration // 2, 5)
        direct = {c: wrk(mock, chat(8, False), c, short) for c in (1, args.connections)}
        mock1 = f"http://127.0.0.1:{_worker_port(work / 'ours-1')}/v1/chat/completions"
        direct_stream = {label: wrk(url, chat(128, True), args.connections, short)
                         for label, url in (("streaming", mock), ("1 write per token", mock1))}
        through = {c: wrk(ours, chat(8, False), c, short) for c in (1, args.connections)}
    finally:
        procs.stop()
    print(f"\n# frontend vs Dynamo ({args.pipeline}), {args.connections} connections, {args.duration} s each, "
          f"speedup {args.speedup:g}")
    print(f"{'load':32} {'side':7} {'req/s':>9} {'out tok/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for label, a, b, tokens in rows:
        for side, r in (("ours", a), ("dynamo", b)):
            print(f"{label:32} {side:7} {r.rps:9.0f} {r.rps * tokens[side]:10.0f} {r.p50_ms:8.1f} {r.p99_ms:8.1f} {r.errors:6d}")
        print(f"{'':32} {'ratio':7} {a.rps / b.rps:9.2f}   (ours/Dynamo req/s; tokens per request: {tokens})")
    print(f"\nour mock called directly: {direct[args.connections].rps:.0f} req/s at {args.connections} connections "
          f"(non-streaming, max_tokens 8); streaming 128: " +
          ", ".join(f"{label} {r.rps:.0f} req/s" for label, r in direct_stream.items()))
    for c in (1, args.connections):
        print(f"frontend overhead at {c:2d} connection(s): p50 {through[c].p50_ms:.2f} ms through the frontend - "
              f"{direct[c].p50_ms:.2f} ms direct = {through[c].p50_ms - direct[c].p50_ms:.2f} ms")
    print("(Dynamo's mocker has no HTTP API of its own, so it cannot be called directly.)")


if __name__ == "__main__":
    main()
