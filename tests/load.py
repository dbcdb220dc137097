"""A steady client load with engine replicas killed under it: every request is counted as served
or failed, with the failure's text (for the fault tests and ``bench/chaos_load.py``).

Half of the clients stream; every other request carries a small image when the graph has an
encoder, so the encoder → prefill hand-off is under load too. A request is *served* when it got
a 200 and, streamed, ``[DONE]`` with no error event; anything else is a failure, kept with what
the client saw.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import aiohttp


@dataclass
class Tally:
    """What the clients saw."""

    served: int = 0
    failures: Counter = field(default_factory=Counter)
    kills: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def report(self) -> str:
        lines = [f"{self.served} served, {self.failed} failed, {len(self.kills)} kills ({', '.join(self.kills)})"]
        lines += [f"  {n} x {text}" for text, n in self.failures.most_common(10)]
        return "\n".join(lines)


def tiny_png(seed: int) -> str:
    """An 8x8 PNG of one colour, as a data URL."""
    from PIL import Image

    rng = random.Random(seed)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def request_body(model: str, n: int, stream: bool, image: bool) -> dict:
    content: list | str = f"request {n}: tell me something about the number {n}"
    if image:
        content = [{"type": "text", "text": str(content)},
                   {"type": "image_url", "image_url": {"url": tiny_png(n % 7)}}]
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 16, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def one_request(session: aiohttp.ClientSession, url: str, body: dict, timeout_s: float) -> str | None:
    """None when served, else what went wrong as the client saw it."""
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, json=body) as resp:
                if resp.status != 200:
                    text = await resp.text()
                    return f"HTTP {resp.status}: {text[:200]}"
                if not body["stream"]:
                    data = await resp.json()
                    return None if data.get("choices") else f"no choices: {str(data)[:200]}"
                done = False
                async for line in resp.content:
                    if line.startswith(b"data: [DONE]"):
                        done = True
                    elif line.startswith(b"data: {") and b'"error"' in line:
                        event = json.loads(line[6:])
                        if "error" in event:
                            return f"error event: {str(event['error'])[:200]}"
                return None if done else "stream ended without [DONE]"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except aiohttp.ClientError as exc:
        return f"{type(exc).__name__}: {exc}"


async def run_load(url: str, model: str, clients: int, duration_s: float, kill_every_s: float,
                   kill: Callable[[], str], images: bool, timeout_s: float = 60.0, stream: bool | None = None) -> Tally:
    """``clients`` loops of requests for ``duration_s``; ``kill()`` every ``kill_every_s`` (returns what it killed).
    ``stream``: every request streamed (True), none (False), or half of the clients (None)."""
    tally = Tally()
    stop_at = time.monotonic() + duration_s
    counter = iter(range(10**9))

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        streamed = i % 2 == 0 if stream is None else stream
        while time.monotonic() < stop_at:
            n = next(counter)
            failure = await one_request(session, url, request_body(model, n, streamed, images and n % 2 == 0),
                                        timeout_s)
            if failure is None:
                tally.served += 1
            else:
                tally.failures[failure] += 1

    async def chaos() -> None:
        while True:
            await asyncio.sleep(kill_every_s)
            if time.monotonic() >= stop_at - 1:
                return
            tally.kills.append(kill())

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        killer = asyncio.create_task(chaos()) if kill_every_s > 0 else None
        await asyncio.gather(*(client(i, session) for i in range(clients)))
        if killer is not None:
            killer.cancel()
    return tally


async def run_load_with_fault(url: str, model: str, clients: int, duration_s: float, at_s: float,
                              fault: Callable[[], str], stream: bool | None = None, timeout_s: float = 60.0) -> Tally:
    """``run_load`` with one ``fault()`` ``at_s`` seconds in (run in a thread: it may block); what it
    returns is the tally's one kill."""
    async def inject() -> str:
        await asyncio.sleep(at_s)
        return await asyncio.to_thread(fault)

    injector = asyncio.create_task(inject())
    tally = await run_load(url, model, clients, duration_s, 0, lambda: "", False, timeout_s, stream)
    tally.kills.append(await injector)
    return tally


def kill_random_engine(state_file: str, rng: random.Random) -> Callable[[], str]:
    """A ``kill()`` that SIGKILLs a random engine replica a `graph run` supervisor runs (read from its state.json)."""

    def kill() -> str:
        with open(state_file, encoding="utf-8") as fh:
            services = json.load(fh)["services"]
        engines = sorted(name for name, s in services.items()
                         if s.get("pid") and not name.startswith(("frontend", "processor")))
        name = rng.choice(engines)
        try:
            os.kill(services[name]["pid"], signal.SIGKILL)
        except ProcessLookupError:
            return f"{name} (already gone)"
        return name

    return kill
