"""Each served model's context length, learned from its engines' GET /v1/models.

vLLM refuses a ``max_tokens`` above the model's context length (``max_model_len``,
which vLLM and SGLang report in /v1/models): knowing it, the frontend refuses such a
request before a prefill has spent time on it, and its OpenAPI document states the
bound. An engine that reports no length (TensorRT-LLM) leaves the bound unknown.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Mapping, Protocol, Sequence

import orjson

from .upstream import UpstreamError, UpstreamPool

log = logging.getLogger("servegraph.frontend")

#: Seconds between rounds of asking engines that have not answered yet (they may still be loading).
RETRY_S = 2.0


class Replica(Protocol):
    """An engine replica: its service name and base URL."""

    service: str
    url: str


class ContextLengths:
    """model -> context length in tokens, for the models whose final-stage engines told us."""

    def __init__(self, replicas: Mapping[str, Sequence[Replica]], pool: UpstreamPool) -> None:
        self._stages = dict(replicas)
        self._pool = pool
        #: What is known; read by the request path (a plain dict: no lock needed on one event loop).
        self.known: dict[str, int] = {}
        self._asked: set[str] = set()

    @property
    def settled(self) -> bool:
        """Every model's engines have answered (with a length or without one)."""
        return self._asked >= self._stages.keys()

    async def learn(self, timeout_s: float = 2.0) -> None:
        """Ask each model's engines that have not answered yet, once."""
        await asyncio.gather(*(self._ask(m, r, timeout_s) for m, r in self._stages.items() if m not in self._asked))

    async def run(self) -> None:
        """Learn until every model's engines have answered (a task for the app's lifetime)."""
        while not self.settled:
            await self.learn()
            if not self.settled:
                await asyncio.sleep(RETRY_S)

    async def _ask(self, model: str, replicas: Sequence[Replica], timeout_s: float) -> None:
        for upstream in replicas:
            try:
                reply = await self._pool.get(upstream.service, upstream.url + "/v1/models", timeout_s)
                if reply.status != 200:
                    continue
                cards = orjson.loads(reply.body).get("data") or []
            except (UpstreamError, orjson.JSONDecodeError, AttributeError):
                continue
            lengths = [c.get("max_model_len") for c in cards if isinstance(c, dict) and c.get("id") == model]
            length = next((n for n in lengths if isinstance(n, int) and not isinstance(n, bool) and n > 0), None)
            if length is not None:
                self.known[model] = length
                log.info("%s: context length %d tokens (from %s)", model, length, upstream.service)
            self._asked.add(model)
            return
