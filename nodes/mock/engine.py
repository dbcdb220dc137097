"""The simulated engine: admission, KV blocks, timing and output tokens.

One request goes ``prepare`` (queue, KV, prefill or handshake, first-token
wait) -> ``tokens``/``wait_output`` (the output ids, paced by the inter-token
latency) -> ``finish``/``abort``. Handshakes with peers are in
``nodes.mock.handshakes``; the HTTP layer (``nodes.mock.app``) formats results.

Output ids depend only on the prompt ids (media included) and ``--seed``: an
aggregated engine, a P/D pair and every imitation give the same tokens for the
same prompt, which is what lets tests compare shapes token for token.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import uuid
from array import array
from collections import deque
from hashlib import blake2b, shake_128
from typing import Any, AsyncIterator

from ..common.kvhash import block_hashes
from ..common.openai_errors import RequestError
from .blocks import Allocation, BlockPool
from .config import MockConfig
from .edge import PeerEdge
from .faults import Faults
from .handshakes import Handshakes
from .metrics import MockMetrics
from .request import GenRequest, Prepared
from .tokenizer import Tokenizer
from .transfers import PeerClient, TransferRegistry

log = logging.getLogger("nodes.mock")

#: Delays shorter than this are summed and slept together (asyncio timers cost ~20 us).
_MIN_SLEEP = 0.0005


class Engine:
    """State of one mock engine process."""

    def __init__(self, cfg: MockConfig, tokenizer: Tokenizer) -> None:
        self.cfg = cfg
        self.tok = tokenizer
        self.engine_id = f"{cfg.name}-{uuid.uuid4().hex[:12]}"
        self.pool = BlockPool(cfg.kv_blocks, cfg.block_size)
        self.metrics = MockMetrics(cfg.imitate, cfg.model_name, cfg.role, cfg.kv_blocks, cfg.block_size)
        self.faults = Faults(cfg.fail_rate, cfg.stall_after_tokens, cfg.exit_after_requests, cfg.health_fail,
                             cfg.lose_handoffs)
        self.registry = TransferRegistry(self.engine_id, cfg.transfer_ttl_s, self._release)
        self.peers = PeerClient()
        self.edge = PeerEdge(cfg.host, cfg.public_host, cfg.kv_blocks, cfg.kv_block_bytes)
        self.handshakes = Handshakes(self)
        self._active = 0
        self._slot_queue: deque[asyncio.Future[None]] = deque()
        self._kv_freed: asyncio.Condition | None = None
        self._kv_waiters = 0
        self._ids = itertools.count(1)
        self._seed_bytes = cfg.seed.to_bytes(8, "little", signed=True)
        self._out = tokenizer.output_ids
        self._itl = cfg.delay(cfg.itl_ms / 1000.0)
        self.started = time.monotonic()
        #: The leader's view of a replica over several hosts (nodes/mock/multinode.py); None on one host.
        self.gate: Any = None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Create loop-bound state and the expiry task (called at ASGI startup)."""
        self._kv_freed = asyncio.Condition()
        self._expiry = asyncio.create_task(self._expire_loop())

    async def stop(self) -> None:
        """Stop background work and close peer connections."""
        self._expiry.cancel()
        await self.peers.close()
        self.edge.close()

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.cfg.transfer_ttl_s / 4))
            if self.registry.expire():
                await self._notify_freed()

    def next_id(self) -> str:
        """A short unique request id."""
        return f"{next(self._ids)}-{self.engine_id[-6:]}"

    # --- the request path --------------------------------------------------------------

    async def prepare(self, req: GenRequest) -> Prepared:
        """Admit the request, get its KV (computed, cached or from a peer) and wait out the prefill.

        Raises:
            RequestError: bad handshake data (400), peer failures (502/504), injected faults (500).
        """
        mode = self.handshakes.mode_of(req.body)
        self.metrics.requests[mode] += 1
        if self.faults.should_fail():
            self.metrics.faults["fail_rate"] += 1
            raise RequestError(500, "injected failure (--fail-rate)", code="mock_fault")
        exit_midway = self.faults.count_request()
        n, limit = len(req.prompt_ids), self.cfg.max_model_len
        # vLLM 0.32: max_tokens above the context length or a prompt that fills it is refused; otherwise
        # the output stops where the context ends (finish_reason "length").
        if req.max_tokens > limit:
            raise RequestError(400, f"max_tokens={req.max_tokens} cannot be greater than max_total_tokens={limit}. "
                               "Please request fewer output tokens.", "max_tokens")
        if n >= limit:
            raise RequestError(400, f"This model's maximum context length is {limit} tokens. However, your prompt "
                               f"contains {n} input tokens, which leaves no room for output. Please reduce the "
                               "length of the input prompt.", "input_tokens")
        seed = self._seed(req.prompt_ids)
        # SGLang and TRT-LLM prefill servers stop after the first token; vLLM's honours max_tokens (1 from a proxy).
        n_out = 1 if mode == "encode" or (mode == "prefill" and self.cfg.imitate != "vllm") else \
            min(req.max_tokens, limit - n)
        prep = Prepared(req, mode, seed, n_out, time.perf_counter(), exit_midway=exit_midway)
        if self._active < self.cfg.max_num_seqs:
            self._active += 1
        else:
            await self._queue_for_slot()
        self.metrics.running += 1
        try:
            await self._prefill(prep)
        except BaseException:
            self._end(prep)
            raise
        return prep

    async def _prefill(self, prep: Prepared) -> None:
        req, cfg = prep.req, self.cfg
        n = len(req.prompt_ids)
        hashes = block_hashes(req.prompt_ids, cfg.block_size)
        total_blocks = -(-(n + prep.n_out) // cfg.block_size)
        if total_blocks > cfg.kv_blocks:
            raise RequestError(400, f"the request needs {total_blocks} KV blocks of {cfg.block_size} tokens but "
                               f"this engine has {cfg.kv_blocks} (--kv-blocks)", "messages")
        encode_s = 0.0
        if req.media and prep.mode != "decode":
            encode_s = await self.handshakes.media_cost(req)
        remote: dict[str, Any] | None = None
        if prep.mode == "decode":
            remote = await self.handshakes.receive_kv(req, hashes, n)
        prep.alloc = await self._allocate(hashes, total_blocks - len(hashes))
        hit = min(prep.alloc.hit_blocks, (n - 1) // cfg.block_size)
        prep.cached_tokens = hit * cfg.block_size
        now = time.monotonic()
        # A hit on blocks another prefill still computes counts as cached (vLLM caches blocks when it
        # schedules them) but is read once they are computed: wait for that prefill, then compute the rest.
        wait = max(prep.alloc.hits_ready_at(hit) - now, 0.0)
        if wait:
            self.metrics.prefix_waits += 1
        if remote is None:
            self.metrics.prefix(n, len(hashes), hit, cfg.block_size)
            computed = n - prep.cached_tokens
        else:
            computed = 0
            self.metrics.kv_received += 1
            self.metrics.kv_blocks_received += len(remote.get("block_hashes", ()))
        self.metrics.prompt_tokens += n
        self.metrics.kv_usage = self.pool.usage
        delay = wait + cfg.delay(cfg.ttft_ms / 1000.0 + computed / cfg.prefill_tps) + encode_s
        prep.alloc.computed_at(now + delay)
        if delay >= _MIN_SLEEP:
            await asyncio.sleep(delay)
        if prep.mode == "prefill":
            self.handshakes.publish_kv(prep, hashes)
        elif prep.mode == "encode":
            self.handshakes.publish_embeddings(prep)
        elif prep.mode == "decode" and cfg.imitate == "trtllm":
            self.handshakes.check_first_token(prep)

    async def _allocate(self, hashes: list[int], extra: int) -> Allocation:
        alloc = self.pool.allocate(hashes, extra)
        if alloc is not None:
            return alloc
        assert self._kv_freed is not None
        self.metrics.waiting += 1
        self._kv_waiters += 1
        try:
            async with self._kv_freed:
                while (alloc := self.pool.allocate(hashes, extra)) is None:
                    await self._kv_freed.wait()
        finally:
            self.metrics.waiting -= 1
            self._kv_waiters -= 1
        return alloc

    def _release(self, alloc: Allocation) -> None:
        self.pool.release(alloc)
        self.metrics.kv_usage = self.pool.usage
        if self._kv_waiters:
            asyncio.get_running_loop().create_task(self._notify_freed())

    async def _notify_freed(self) -> None:
        assert self._kv_freed is not None
        async with self._kv_freed:
            self._kv_freed.notify_all()

    def tokens(self, prep: Prepared) -> AsyncIterator[list[int]]:
        """The output ids in steps, paced by ``--itl-ms`` (the first id alone and at once).

        Ids whose time has come together form one step (at most ``--tokens-per-write``), as
        vLLM hands its HTTP side every output that piled up since it last looked
        (RequestOutputCollector.put in v1/engine/output_processor.py): one write, not one per id.
        """
        return self._tokens(prep)

    async def _tokens(self, prep: Prepared) -> AsyncIterator[list[int]]:
        ids = self.output_ids(prep)
        stall = self.faults.stall_after_tokens
        end = prep.n_out if stall is None else min(stall, prep.n_out)
        itl = self._itl
        most = self.cfg.tokens_per_write or end
        self.metrics.ttft.observe(time.perf_counter() - prep.start)
        i, owed = 0, 0.0
        while i < end:
            step = 1
            if i:
                owed += itl
                while owed < _MIN_SLEEP and i + step < end and step < most:
                    owed += itl
                    step += 1
                if owed >= _MIN_SLEEP:
                    await asyncio.sleep(owed)
                    owed = 0.0
            yield ids[i:i + step]
            i += step
            if prep.exit_midway:
                self._exit_now()
        if end < prep.n_out:
            self.metrics.faults["stall"] += 1
            await asyncio.Event().wait()  # hang until the client goes away

    def output_ids(self, prep: Prepared) -> list[int]:
        """All output ids of a request: ``output_ids[u32_i % len]`` for u32 words of shake128(seed)."""
        if prep.out_ids is None:
            out = self._out
            span = len(out)
            words = array("I", shake_128(prep.seed).digest(4 * prep.n_out))
            prep.out_ids = [out[w % span] for w in words]
        return prep.out_ids

    def token_at(self, prep: Prepared, i: int) -> int:
        """The i-th output id (the same for any n_out > i)."""
        words = array("I", shake_128(prep.seed).digest(4 * (i + 1)))
        return self._out[words[i] % len(self._out)]

    async def wait_output(self, prep: Prepared) -> list[int]:
        """All output ids at once, after the time the whole generation would take."""
        stall = self.faults.stall_after_tokens
        self.metrics.ttft.observe(time.perf_counter() - prep.start)
        if stall is not None and stall < prep.n_out:
            self.metrics.faults["stall"] += 1
            await asyncio.Event().wait()
        if prep.exit_midway:
            self._exit_now()
        pause = self._itl * (prep.n_out - 1)
        if pause >= _MIN_SLEEP:
            await asyncio.sleep(pause)
        return self.output_ids(prep)

    def finish(self, prep: Prepared, n_generated: int, reason: str = "length") -> None:
        """Book a completed request and free its slot and blocks."""
        if prep.done:
            return
        self.metrics.generation_tokens += n_generated
        self.metrics.e2e.observe(time.perf_counter() - prep.start)
        self.metrics.success[reason] += 1
        self._end(prep)

    def abort(self, prep: Prepared) -> None:
        """Free a request that ended early (client gone, error)."""
        self._end(prep)

    def _end(self, prep: Prepared) -> None:
        if prep.done:
            return
        prep.done = True
        if prep.alloc is not None and not prep.handed_off:
            self._release(prep.alloc)
        self.metrics.running -= 1
        self._release_slot()

    async def _queue_for_slot(self) -> None:
        """Wait (FIFO) until a running request hands over its slot (--max-num-seqs)."""
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_queue.append(slot)
        self.metrics.waiting += 1
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self._release_slot()  # handed over just as the client left: pass it on
            raise
        finally:
            self.metrics.waiting -= 1

    def _release_slot(self) -> None:
        while self._slot_queue:
            slot = self._slot_queue.popleft()
            if not slot.done():
                slot.set_result(None)  # the slot passes straight to the next in line
                return
        self._active -= 1

    def _exit_now(self) -> None:
        self.metrics.faults["exit"] += 1
        log.warning("%s: exiting mid-request (--exit-after-requests %s)", self.cfg.name,
                    self.faults.exit_after_requests)
        logging.shutdown()
        os._exit(17)

    def _seed(self, ids: list[int]) -> bytes:
        return blake2b(array("I", ids).tobytes(), digest_size=16, key=self._seed_bytes).digest()


