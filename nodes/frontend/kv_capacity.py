"""How much prompt each replica's KV cache holds, learned from the engines, for the kv routing policy.

The kv policy models each replica's prefix cache from what it sent there; to forget what the engine
has evicted and to place a new prefix where it fits, it needs the cache's size in the unit it hashes:
prompt characters. Two facts give it (docs/engines.md, "vLLM", the prefix cache):

* the cache's size in tokens: vLLM's ``GET /metrics`` gauge ``vllm:cache_config_info``, whose labels
  ``num_gpu_blocks`` (what profiling left, or ``--num-gpu-blocks-override``) times ``block_size`` is it
  (the mock exports the same gauge); SGLang's ``GET /get_server_info`` ``max_total_num_tokens``.
  TensorRT-LLM states neither: its replicas stay unsized, and the policy keeps its old bound;
* characters per token: ``POST /tokenize`` (vLLM, the mock) of a few prompts the policy routed, so the
  ratio is this traffic's and this model's; before their answers, that of a fixed English text
  (:data:`PROBE_TEXT`), asked with the sizes; if no engine tokenizes, :data:`DEFAULT_CHARS_PER_TOKEN`.

Learning runs as tasks on the frontend's event loop, started by the first routed request, off the
request's path; sizes are asked until each replica answered (an engine may still be loading).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Coroutine, Sequence

import aiohttp
import orjson

from graph.plan import Upstream

log = logging.getLogger("servegraph.frontend")

#: Seconds between rounds of asking replicas that have not answered yet.
RETRY_S = 2.0
#: Prompts tokenized at a replica to learn characters per token.
SAMPLES = 4
#: Shorter prompts are not sampled (a few characters say little about the ratio).
MIN_SAMPLE_CHARS = 256
#: Characters per token when no engine tokenizes (English text and Llama-style tokenizers: ~4).
DEFAULT_CHARS_PER_TOKEN = 4.0
#: Tokenized with the sizes, so the ratio is the model's before the first routed prompt's answer.
PROBE_TEXT = (
    "A serving system keeps the key and value tensors of every prompt it has read in a cache of fixed-size "
    "blocks. When a new request begins with the same text as an earlier one, the engine can reuse those "
    "blocks instead of computing them again, which saves time before the first token. The cache is small, "
    "though: when it is full, the blocks used least recently are dropped to make room for new ones. A router "
    "that knows which engine holds which prefix, and how much each engine can hold, sends every request to "
    "the engine where its beginning is still cached, and places a new document where it fits."
)
_TIMEOUT = aiohttp.ClientTimeout(total=5)
_INFO = re.compile(r"^vllm:cache_config_info\{([^}]*)\}", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def vllm_cache_tokens(metrics_text: str) -> int | None:
    """The KV cache's size in tokens from vLLM's Prometheus text (``vllm:cache_config_info``), if stated.

    With several engines (data parallel) each has its own cache; a request is served by one of them, so
    the smallest is the size.
    """
    sizes = []
    for labels in _INFO.findall(metrics_text):
        fields = dict(_LABEL.findall(labels))
        try:
            blocks, block_size = int(fields["num_gpu_blocks"]), int(fields["block_size"])
        except (KeyError, ValueError):  # "None" before profiling ended
            continue
        if blocks > 0 and block_size > 0:
            sizes.append(blocks * block_size)
    return min(sizes) if sizes else None


class CacheSizes:
    """Per replica, the KV cache's size in tokens; and characters per token of the routed prompts.

    Args:
        upstreams: the stage's replicas.
    """

    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        self._upstreams = list(upstreams)
        #: KV capacity in tokens of each replica that stated it.
        self.tokens: dict[str, int] = {}
        self._answered: set[str] = set()
        self._sample_chars = 0
        self._sample_tokens = 0
        self._samples = 0
        self._probe: float | None = None
        self._sizing = False
        self._sampling = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def chars_per_token(self) -> float:
        """Prompt characters per token: from the routed prompts sampled so far, else the probe's, else the default."""
        if self._sample_tokens:
            return self._sample_chars / self._sample_tokens
        return self._probe or DEFAULT_CHARS_PER_TOKEN

    def chars(self, service: str) -> int | None:
        """How many prompt characters the replica's cache holds; None if it did not say."""
        tokens = self.tokens.get(service)
        return None if tokens is None else int(tokens * self.chars_per_token)

    def record_sample(self, chars: int, tokens: int) -> None:
        """A prompt of ``chars`` characters that the engine counted as ``tokens`` tokens."""
        if chars > 0 and tokens > 0:
            self._sample_chars += chars
            self._sample_tokens += tokens

    def observe(self, upstream: Upstream, prompt: str) -> None:
        """A prompt was routed to ``upstream``: learn what is not known yet (in tasks; needs a running loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the frontend's loop (unit tests): nothing to learn from
            return
        if not self._sizing and len(self._answered) < len(self._upstreams):
            self._sizing = True
            self._spawn(loop, self._size_all())
        if not self._sampling and self._samples < SAMPLES and len(prompt) >= MIN_SAMPLE_CHARS:
            self._sampling = True
            self._spawn(loop, self._sample(upstream, prompt))

    async def wait(self) -> None:
        """Until the learning started so far has finished (for tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks)

    def _spawn(self, loop: asyncio.AbstractEventLoop, work: Coroutine[None, None, None]) -> None:
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _size_all(self) -> None:
        try:
            async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
                while True:
                    probe = [self._probe_ratio(session)] if self._probe is None else []
                    await asyncio.gather(*(self._size(session, u) for u in self._upstreams
                                           if u.service not in self._answered), *probe)
                    if len(self._answered) == len(self._upstreams):
                        return
                    await asyncio.sleep(RETRY_S)
        finally:
            self._sizing = False

    async def _size(self, session: aiohttp.ClientSession, upstream: Upstream) -> None:
        tokens = None
        try:
            async with session.get(upstream.url + "/metrics") as resp:
                if resp.status == 200:
                    tokens = vllm_cache_tokens(await resp.text())
            if tokens is None:
                async with session.get(upstream.url + "/get_server_info") as resp:
                    if resp.status == 200:
                        info = orjson.loads(await resp.read())
                        size = info.get("max_total_num_tokens") if isinstance(info, dict) else None
                        tokens = size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, UnicodeDecodeError):
            return  # not up yet: asked again next round
        self._answered.add(upstream.service)
        if tokens is not None:
            self.tokens[upstream.service] = tokens
            log.info("%s: KV cache of %d tokens (kv routing)", upstream.service, tokens)
        else:
            log.info("%s: states no KV cache size; kv routing bounds it by MAX_BLOCKS", upstream.service)

    async def _probe_ratio(self, session: aiohttp.ClientSession) -> None:
        for upstream in self._upstreams:
            count = await self._tokenize(session, upstream, PROBE_TEXT)
            if count:
                self._probe = len(PROBE_TEXT) / count
                return

    async def _sample(self, upstream: Upstream, prompt: str) -> None:
        try:
            async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
                count = await self._tokenize(session, upstream, prompt)
            if count:
                self.record_sample(len(prompt), count)
        finally:
            self._samples += 1
            self._sampling = False

    @staticmethod
    async def _tokenize(session: aiohttp.ClientSession, upstream: Upstream, text: str) -> int | None:
        """How many tokens the engine makes of ``text``; None if it cannot say (SGLang, TensorRT-LLM)."""
        try:
            async with session.post(upstream.url + "/tokenize",
                                    json={"prompt": text, "add_special_tokens": False}) as resp:
                body = orjson.loads(await resp.read()) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return None
        count = body.get("count") if isinstance(body, dict) else None
        return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None
