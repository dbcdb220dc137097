"""Streams under a worker killed mid-load: how many fail, with and without migration.

The aggregated example on mock engines (two workers, real pacing: ``--itl-ms``),
``--streams`` streamed chats at ``--concurrency``; once ``--kill-after`` of them
have started, one worker is SIGKILLed (the supervisor restarts it). Each stream
counts as complete (``[DONE]``, every token, usage right), failed (an error
status or error event: the client knows), or silent (ended without ``[DONE]``
or never ended: the client was misled). Run twice: ``migration_limit=3``
(the default, as Dynamo's ``--migration-limit 3``) and ``migration_limit=0``.
Also printed: how many calls the frontend still sent to the dead worker.

Usage: python bench/stream_migration.py [--streams 200] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import aiohttp

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e import metric_sum, metrics, start_graph  # noqa: E402

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass
class Tally:
    complete: int = 0
    failed: int = 0
    silent: int = 0


async def one_stream(session: aiohttp.ClientSession, url: str, max_tokens: int, timeout_s: float) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "tell a long story"}], "max_tokens": max_tokens,
            "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
    pieces, usage, done = 0, None, False
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, json=body) as resp:
                if resp.status != 200:
                    return "failed"
                async for line in resp.content:
                    if line.startswith(b"data: [DONE]"):
                        done = True
                    elif line.startswith(b"data: {"):
                        event = json.loads(line[6:])
                        if "error" in event:
                            return "failed"
                        for choice in event.get("choices") or ():
                            if (choice.get("delta") or {}).get("content"):
                                pieces += 1
                        usage = event.get("usage") or usage
    except TimeoutError:
        return "silent"
    except aiohttp.ClientError:
        return "failed"
    ok = done and pieces == max_tokens and usage and usage.get("completion_tokens") == max_tokens
    return "complete" if ok else "silent"


async def load(url: str, streams: int, concurrency: int, max_tokens: int, kill_after: int,
               kill: Callable[[], None]) -> Tally:
    tally = Tally()
    gate = asyncio.Semaphore(concurrency)
    started = 0

    async def run(session: aiohttp.ClientSession) -> None:
        nonlocal started
        async with gate:
            started += 1
            if started == kill_after:
                kill()
            outcome = await one_stream(session, url, max_tokens, 60.0)
        setattr(tally, outcome, getattr(tally, outcome) + 1)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(run(session) for _ in range(streams)))
    return tally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--itl-ms", type=float, default=5.0)
    ap.add_argument("--kill-after", type=int, default=80, help="kill a worker when this many streams have started")
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-migration-"))
    rows = []
    for limit in (3, 0):
        g = start_graph("pipelines/agg.py", work / f"limit-{limit}", "--mock",
                        "--set", f"frontend.migration_limit={limit}", "--set", "frontend.stage_timeout_s=10",
                        "--set", f"worker.mock={{itl_ms: {args.itl_ms}}}")
        try:
            state = json.loads((g.workdir / "state.json").read_text())
            victim = state["services"]["worker-0"]["pid"]
            killed_at: list[float] = []

            def kill() -> None:
                killed_at.append(time.monotonic())
                os.kill(victim, signal.SIGKILL)

            start = time.monotonic()
            tally = asyncio.run(load(g.url + "/chat/completions", args.streams, args.concurrency, args.max_tokens,
                                     args.kill_after, kill))
            took = time.monotonic() - start
            # Calls the frontend still sent to the killed worker (each found it unreachable).
            dead = metric_sum(metrics(g.url.removesuffix("/v1")), "servegraph_upstream_requests_total",
                              service="worker-0", status="unreachable")
            rows.append((limit, tally, int(dead), took))
        finally:
            g.stop()
    print(f"\n# {args.streams} streams of {args.max_tokens} tokens, {args.concurrency} at a time, "
          f"worker-0 SIGKILLed when stream {args.kill_after} started")
    print(f"{'migration_limit':>15} {'complete':>9} {'failed':>7} {'silent':>7} {'calls to dead':>14} {'seconds':>8}")
    for limit, t, dead, took in rows:
        print(f"{limit:>15} {t.complete:>9} {t.failed:>7} {t.silent:>7} {dead:>14} {took:>8.1f}")
    print("failed: the client got an error status or error event; silent: a stream that ended short or never "
          "ended without saying so (must be 0).")


if __name__ == "__main__":
    main()
