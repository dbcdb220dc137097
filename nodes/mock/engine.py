"""The simulated engine: admission, KV blocks, handshakes with peers, timing and output tokens.

One request goes ``prepare`` (queue, KV, prefill or handshake, first-token
wait) -> ``tokens`` (the output ids, paced by the inter-token latency) ->
``finish``/``abort``. The HTTP layer (``nodes.mock.api``) formats the result.

Output ids depend only on the prompt ids (media included) and ``--seed``: an
aggregated engine, a P/D pair and every imitation give the same tokens for the
same prompt, which is what lets tests compare shapes token for token.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os
import time
import uuid
from array import array
from dataclasses import dataclass, field
from hashlib import blake2b, shake_128
from typing import Any, AsyncIterator

import orjson

from ..common.kvhash import block_hashes
from ..common.openai_errors import RequestError
from .blocks import Allocation, BlockPool
from .config import MockConfig
from .embeddings import HIDDEN, EmbeddingEdge, embedding_for
from .faults import Faults
from .media import MediaItem
from .metrics import MockMetrics
from .tokenizer import Tokenizer
from .transfers import PeerClient, TransferRegistry, peer_error_message

log = logging.getLogger("nodes.mock")

_PREFILL_ROLES = ("prefill", "encode_prefill", "prefill_decode", "worker")
#: SGLang's default --disaggregation-bootstrap-port.
SGLANG_BOOTSTRAP_PORT = 8998
#: Delays shorter than this are summed and slept together (asyncio timers cost ~20 us).
_MIN_SLEEP = 0.0005


@dataclass
class GenRequest:
    """A parsed generation request (chat, completion or SGLang /generate)."""

    kind: str
    body: dict[str, Any]
    prompt_ids: list[int]
    media: list[MediaItem]
    max_tokens: int
    stream: bool = False
    ignore_eos: bool = False


@dataclass
class Prepared:
    """A request that has its KV and is ready to emit tokens."""

    req: GenRequest
    mode: str
    seed: bytes
    n_out: int
    start: float
    alloc: Allocation | None = None
    cached_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    choice_extra: dict[str, Any] = field(default_factory=dict)
    exit_midway: bool = False
    handed_off: bool = False
    done: bool = False
    out_ids: list[int] | None = None


class Engine:
    """State of one mock engine process."""

    def __init__(self, cfg: MockConfig, tokenizer: Tokenizer) -> None:
        self.cfg = cfg
        self.tok = tokenizer
        self.engine_id = f"{cfg.name}-{uuid.uuid4().hex[:12]}"
        self.pool = BlockPool(cfg.kv_blocks, cfg.block_size)
        self.metrics = MockMetrics(cfg.imitate, cfg.model_name, cfg.role)
        self.faults = Faults(cfg.fail_rate, cfg.stall_after_tokens, cfg.exit_after_requests, cfg.health_fail)
        self.registry = TransferRegistry(self.engine_id, cfg.transfer_ttl_s, self._release)
        self.peers = PeerClient()
        self.edge = EmbeddingEdge(cfg.host, cfg.public_host)
        self._slots: asyncio.Semaphore | None = None
        self._kv_freed: asyncio.Condition | None = None
        self._kv_waiters = 0
        self._ids = itertools.count(1)
        self._seed_bytes = cfg.seed.to_bytes(8, "little", signed=True)
        self._out = tokenizer.output_ids
        self._itl = cfg.delay(cfg.itl_ms / 1000.0)
        self.started = time.monotonic()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Create loop-bound primitives and the expiry task (called at ASGI startup)."""
        self._slots = asyncio.Semaphore(self.cfg.max_num_seqs)
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

    def mode_of(self, body: dict[str, Any]) -> str:
        """aggregate | prefill | decode | encode, from the role and the handshake fields.

        Raises:
            RequestError: 400 when the fields ask this role for something it cannot do.
        """
        role, imitate = self.cfg.role, self.cfg.imitate
        if role == "encoder":
            return "encode"
        mode = "aggregate"
        if imitate == "vllm":
            params = body.get("kv_transfer_params")
            if params is not None:
                if not isinstance(params, dict):
                    raise RequestError(400, "kv_transfer_params must be an object", "kv_transfer_params")
                if params.get("do_remote_decode"):
                    mode = "prefill"
                elif params.get("do_remote_prefill"):
                    mode = "decode"
        elif imitate == "trtllm":
            params = body.get("disaggregated_params")
            if params is not None:
                kind = params.get("request_type") if isinstance(params, dict) else None
                if kind == "context_only":
                    mode = "prefill"
                elif kind == "generation_only":
                    mode = "decode"
                elif kind != "context_and_generation":
                    raise RequestError(400, "disaggregated_params.request_type must be context_only, "
                                       "generation_only or context_and_generation",
                                       "disaggregated_params.request_type")
        elif body.get("bootstrap_room") is not None and role in ("prefill", "encode_prefill", "decode"):
            mode = "decode" if role == "decode" else "prefill"
        if mode == "prefill" and role not in _PREFILL_ROLES:
            raise RequestError(400, f"this engine is a {role}: it cannot prefill for a remote decode "
                               "(send the prefill request to a prefill engine)")
        if mode == "decode" and role in ("prefill", "encode_prefill"):
            raise RequestError(400, f"this engine is a {role}: it cannot consume remote KV (send the decode "
                               "request to a decode engine)")
        return mode

    async def prepare(self, req: GenRequest) -> Prepared:
        """Admit the request, get its KV (computed, cached or from a peer) and wait out the prefill.

        Raises:
            RequestError: bad handshake data (400), peer failures (502/504), injected faults (500).
        """
        mode = self.mode_of(req.body)
        self.metrics.requests[mode] += 1
        if self.faults.should_fail():
            self.metrics.faults["fail_rate"] += 1
            raise RequestError(500, "injected failure (--fail-rate)", code="mock_fault")
        exit_midway = self.faults.count_request()
        n = len(req.prompt_ids)
        if n + req.max_tokens > self.cfg.max_model_len:
            raise RequestError(400, f"This model's maximum context length is {self.cfg.max_model_len} tokens. "
                               f"However, you requested {n + req.max_tokens} tokens ({n} in the messages, "
                               f"{req.max_tokens} in the completion).", "max_tokens")
        seed = self._seed(req.prompt_ids)
        # SGLang and TRT-LLM prefill servers stop after the first token; vLLM's honours max_tokens (1 from a proxy).
        n_out = 1 if mode == "encode" or (mode == "prefill" and self.cfg.imitate != "vllm") else req.max_tokens
        prep = Prepared(req, mode, seed, n_out, time.perf_counter(), exit_midway=exit_midway)
        assert self._slots is not None
        if self._slots.locked():
            self.metrics.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.metrics.waiting -= 1
        else:
            await self._slots.acquire()
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
            encode_s = await self._media_cost(req)
        remote: dict[str, Any] | None = None
        if prep.mode == "decode":
            remote = await self._receive_kv(req, hashes, n)
        prep.alloc = await self._allocate(hashes, total_blocks - len(hashes))
        hit = min(prep.alloc.hit_blocks, (n - 1) // cfg.block_size)
        prep.cached_tokens = hit * cfg.block_size
        if remote is None:
            self.metrics.prefix(n, len(hashes), hit, cfg.block_size)
            computed = n - prep.cached_tokens
        else:
            computed = 0
            self.metrics.kv_received += 1
            self.metrics.kv_blocks_received += len(remote.get("block_hashes", ()))
        self.metrics.prompt_tokens += n
        self.metrics.kv_usage = self.pool.usage
        delay = cfg.delay(cfg.ttft_ms / 1000.0 + computed / cfg.prefill_tps) + encode_s
        if delay >= _MIN_SLEEP:
            await asyncio.sleep(delay)
        if prep.mode == "prefill":
            self._publish_kv(prep, hashes)
        elif prep.mode == "encode":
            self._publish_embeddings(prep)
        elif prep.mode == "decode" and cfg.imitate == "trtllm":
            self._check_first_token(prep)

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

    def tokens(self, prep: Prepared) -> AsyncIterator[int]:
        """The output ids, paced by ``--itl-ms`` (first one immediately)."""
        return self._tokens(prep)

    async def _tokens(self, prep: Prepared) -> AsyncIterator[int]:
        ids = self.output_ids(prep)
        stall = self.faults.stall_after_tokens
        itl = self._itl
        owed = 0.0
        self.metrics.ttft.observe(time.perf_counter() - prep.start)
        for i in range(prep.n_out):
            if stall is not None and i >= stall:
                self.metrics.faults["stall"] += 1
                await asyncio.Event().wait()  # hang until the client goes away
            if i:
                owed += itl
                if owed >= _MIN_SLEEP:
                    await asyncio.sleep(owed)
                    owed = 0.0
            yield ids[i]
            if prep.exit_midway:
                self._exit_now()

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
        assert self._slots is not None
        self._slots.release()

    def _exit_now(self) -> None:
        self.metrics.faults["exit"] += 1
        log.warning("%s: exiting mid-request (--exit-after-requests %s)", self.cfg.name,
                    self.faults.exit_after_requests)
        logging.shutdown()
        os._exit(17)

    # --- handshakes: sender side ---------------------------------------------------------

    def _publish_kv(self, prep: Prepared, hashes: list[int]) -> None:
        assert prep.alloc is not None
        cfg, req = self.cfg, prep.req
        n = len(req.prompt_ids)
        if cfg.imitate == "sglang":
            room = _room_of(req.body)
            self.registry.fill_room(room, prep.alloc, {
                "engine_id": self.engine_id, "block_hashes": hashes, "num_tokens": n,
                "block_ids": prep.alloc.block_ids,
            })
            prep.handed_off = True  # the registry releases the blocks once a decode took them
            self.metrics.kv_sent += 1
            return
        request_id = self.next_id() if cfg.imitate == "vllm" else str(_ctx_request_id())
        self.registry.offer_kv(request_id, prep.alloc, hashes, n)
        prep.handed_off = True
        self.metrics.kv_sent += 1
        if cfg.imitate == "vllm":
            prep.extra["kv_transfer_params"] = {
                "do_remote_prefill": True, "do_remote_decode": False,
                "remote_block_ids": prep.alloc.block_ids, "remote_engine_id": self.engine_id,
                "remote_request_id": request_id, "remote_host": cfg.public_host,
                "remote_port": cfg.side_channel_port, "tp_size": 1, "dcp_size": 1, "pp_size": 1,
                "remote_num_tokens": n, "remote_blocks_expiry_time": time.time() + cfg.transfer_ttl_s,
                "transfer_mode": "pull",
            }
        else:
            state = {"engine_id": self.engine_id, "host": cfg.public_host, "port": cfg.side_channel_port,
                     "block_ids": prep.alloc.block_ids}
            prep.choice_extra["disaggregated_params"] = {
                "request_type": "context_only", "first_gen_tokens": [self.token_at(prep, 0)],
                "ctx_request_id": int(request_id),
                "encoded_opaque_state": base64.b64encode(orjson.dumps(state)).decode(),
                "draft_tokens": None,
            }

    def _publish_embeddings(self, prep: Prepared) -> None:
        cfg, media = self.cfg, prep.req.media
        ec_id = self.next_id()
        hashes = [m.digest for m in media]
        self.registry.offer_ec(ec_id, hashes, [cfg.mm_tokens] * len(media))
        prep.extra["ec_transfer_params"] = {
            "engine_id": self.engine_id, "request_id": ec_id, "host": cfg.public_host,
            "port": cfg.side_channel_port, "mm_hashes": hashes, "num_tokens": [cfg.mm_tokens] * len(media),
            "shape": [cfg.mm_tokens * len(media), HIDDEN], "dtype": "float16",
            "transport": "nodes.transport" if self.edge.available else None,
        }

    async def serve_ec_pull(self, payload: Any) -> dict[str, Any]:
        """POST /mock/ec/pull on an encoder: check the handle, then send the bytes if a receiver is given."""
        answer = self.registry.take_ec(payload)
        receiver = payload.get("receiver")
        if receiver is not None and self.edge.available:
            array = embedding_for(answer["mm_hashes"], self.cfg.mm_tokens)
            answer["ticket"] = await self.edge.send(receiver, array, self.cfg.transfer_timeout_s)
            answer["nbytes"] = int(array.nbytes)
        return answer

    # --- handshakes: receiver side --------------------------------------------------------

    async def _media_cost(self, req: GenRequest) -> float:
        """Seconds of encoder work this request still needs (0 when an encoder sent its handle)."""
        params = req.body.get("ec_transfer_params")
        if params is None:
            return self.cfg.delay(self.cfg.encode_ms / 1000.0) * len(req.media)
        if not isinstance(params, dict):
            raise RequestError(400, "ec_transfer_params must be the object an encoder returned",
                               "ec_transfer_params")
        url = f"http://{params.get('host')}:{params.get('port')}/mock/ec/pull"
        pull: dict[str, Any] = {"engine_id": params.get("engine_id"), "request_id": params.get("request_id")}
        if params.get("transport") and self.edge.available:
            pull["receiver"] = await self.edge.receiver_handle()
        status, body = await self.peers.call("POST", url, "embeddings pull from the encoder",
                                             self.cfg.transfer_timeout_s, pull)
        if status != 200:
            raise RequestError(400, f"ec_transfer_params rejected by the encoder at {url}: "
                               f"{peer_error_message(body)}", "ec_transfer_params")
        mine = [m.digest for m in req.media]
        if body.get("mm_hashes") != mine:
            raise RequestError(400, "ec_transfer_params were produced for other media than this request's "
                               f"({len(body.get('mm_hashes') or [])} encoded vs {len(mine)} here, hashes differ)",
                               "ec_transfer_params")
        if "ticket" in body:
            got = await self.edge.receive(body["ticket"], self.cfg.transfer_timeout_s)
            want = embedding_for(mine, self.cfg.mm_tokens)
            if got.shape != want.shape or got.tobytes() != want.tobytes():
                raise RequestError(400, "the embedding bytes from the encoder differ from what these media encode to",
                                   "ec_transfer_params")
            self.metrics.ec_bytes_received += int(got.nbytes)
        self.metrics.ec_received += 1
        return 0.0

    async def _receive_kv(self, req: GenRequest, hashes: list[int], n: int) -> dict[str, Any]:
        if self.cfg.imitate == "sglang":
            got = await self._wait_room(req.body)
        else:
            got = await self._pull_kv(req.body)
        if got.get("num_tokens") != n or got.get("block_hashes") != hashes:
            raise RequestError(400, f"the KV handle describes a different prompt ({got.get('num_tokens')} tokens) "
                               f"than this request ({n} tokens, or the same length with other tokens): the decode "
                               "must get the same prompt as the prefill", _handshake_field(self.cfg.imitate))
        return got

    async def _pull_kv(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.cfg.imitate == "vllm":
            p = body["kv_transfer_params"]
            field_ = "kv_transfer_params"
            need = {"remote_engine_id": str, "remote_request_id": str, "remote_host": str, "remote_port": int,
                    "remote_block_ids": list}
            for key, typ in need.items():
                if not isinstance(p.get(key), typ) or isinstance(p.get(key), bool):
                    raise RequestError(400, f"kv_transfer_params.{key} must be a {typ.__name__} as a vLLM prefill "
                                       "returns it; copy the prefill response's kv_transfer_params verbatim",
                                       f"{field_}.{key}")
            host, port = p["remote_host"], p["remote_port"]
            pull = {"engine_id": p["remote_engine_id"], "request_id": p["remote_request_id"],
                    "block_ids": p["remote_block_ids"]}
        else:
            p = body["disaggregated_params"]
            field_ = "disaggregated_params"
            try:
                state = orjson.loads(base64.b64decode(p.get("encoded_opaque_state") or "", validate=True))
                host, port = state["host"], int(state["port"])
                pull = {"engine_id": state["engine_id"], "request_id": str(p["ctx_request_id"]),
                        "block_ids": state["block_ids"]}
            except (ValueError, KeyError, TypeError):
                raise RequestError(400, "disaggregated_params must carry the ctx_request_id and "
                                   "encoded_opaque_state a context server returned", field_) from None
        url = f"http://{host}:{port}/mock/kv/pull"
        status, answer = await self.peers.call("POST", url, "KV pull from the prefill",
                                               self.cfg.transfer_timeout_s, pull)
        if status != 200:
            raise RequestError(400, f"{field_} rejected by the prefill at {host}:{port}: "
                               f"{peer_error_message(answer)}", field_)
        return answer

    async def _wait_room(self, body: dict[str, Any]) -> dict[str, Any]:
        room = _room_of(body)
        host = body.get("bootstrap_host")
        # sglang-router sends null when it was given no bootstrap port: SGLang's default applies.
        port = body.get("bootstrap_port") if body.get("bootstrap_port") is not None else SGLANG_BOOTSTRAP_PORT
        if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
            raise RequestError(400, "bootstrap_host (string) and bootstrap_port (int) must name the prefill's "
                               "bootstrap server", "bootstrap_port")
        timeout = self.cfg.bootstrap_timeout_s
        url = f"http://{host}:{port}/mock/sglang/room/{room}?timeout_s={timeout}"
        status, answer = await self.peers.call("GET", url, "bootstrap room wait", timeout + 5.0)
        if status == 408:
            raise RequestError(504, f"bootstrap room {room} was never filled by the prefill at {host}:{port} "
                               f"within {timeout:g}s (--bootstrap-timeout-s): did the prefill get this request?",
                               "bootstrap_room")
        if status != 200:
            raise RequestError(400, f"bootstrap room {room} at {host}:{port}: {peer_error_message(answer)}",
                               "bootstrap_room")
        return answer

    def _check_first_token(self, prep: Prepared) -> None:
        first = prep.req.body["disaggregated_params"].get("first_gen_tokens")
        if first is not None and (not isinstance(first, list) or first[:1] != [self.token_at(prep, 0)]):
            raise RequestError(400, "disaggregated_params.first_gen_tokens do not match this prompt's first token: "
                               "the generation request must carry the context response of the same prompt",
                               "disaggregated_params.first_gen_tokens")

    def _seed(self, ids: list[int]) -> bytes:
        return blake2b(array("I", ids).tobytes(), digest_size=16, key=self._seed_bytes).digest()


def _room_of(body: dict[str, Any]) -> int:
    room = body.get("bootstrap_room")
    if isinstance(room, bool) or not isinstance(room, int) or not 0 <= room < 1 << 64:
        raise RequestError(400, "bootstrap_room must be one integer in [0, 2^63-1] (batched rooms are not "
                           "supported by the mock)", "bootstrap_room")
    return room


def _ctx_request_id() -> int:
    return int.from_bytes(os.urandom(8), "little") >> 1


def _handshake_field(imitate: str) -> str:
    return {"vllm": "kv_transfer_params", "sglang": "bootstrap_room", "trtllm": "disaggregated_params"}[imitate]
