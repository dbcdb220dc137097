"""The mock's HTTP surface: a raw ASGI app (no framework on the hot path).

Routes are looked up in one dict by (method, path); responses are orjson bytes
with pre-built headers. Every error is OpenAI-shaped (``{"error": {...}}``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from typing import Any, Callable
from urllib.parse import parse_qs

import orjson

from ..common.asgi import (
    JSON, SSE_START, Receive, Send, cancel_on_disconnect, read_json, run_lifespan, send_error, send_json, send_raw,
)
from ..common.http_cycle import DirectBody, resumed
from ..common.openai_errors import RequestError
from .engine import Engine
from .request import GenRequest
from .openai_api import StreamFormatter, full_response, parse_chat, parse_completion, parse_generate

log = logging.getLogger("nodes.mock")

_OWNER = {"vllm": "vllm", "sglang": "sglang", "trtllm": "tensorrt_llm"}
_ROOM_PREFIX = "/mock/sglang/room/"


class MockApp:
    """ASGI callable serving one ``Engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cfg = engine.cfg
        self.recorded: deque[dict[str, Any]] = deque(maxlen=max(self.cfg.record_requests, 1))
        self._record = self.cfg.record_requests > 0
        gen = {"/v1/chat/completions": parse_chat, "/v1/completions": parse_completion}
        if self.cfg.imitate == "sglang":
            gen["/generate"] = parse_generate
        self._generate = gen
        info = (self._server_info, self._model_info)
        self._get: dict[str, Callable[[], Any]] = {
            "/health": self._health, "/health_generate": self._health, "/ping": self._health,
            "/v1/models": self._models, "/metrics": self._metrics, "/prometheus/metrics": self._metrics,
            "/server_info": info[0], "/get_server_info": info[0], "/model_info": info[1],
            "/get_model_info": info[1], "/version": self._version,
            "/mock/requests": self._requests, "/mock/kv": self._kv, "/mock/faults": self._faults,
            "/mock/state": self._state, "/mock/nodes": self._nodes,
        }
        self._post: dict[str, Callable[[Any], Any]] = {
            "/tokenize": self._tokenize, "/detokenize": self._detokenize,
            "/mock/faults": self._set_faults,
        }
        self._post_async = {"/mock/ec/pull": engine.handshakes.serve_ec_pull,
                            "/mock/kv/pull": engine.handshakes.serve_kv_pull}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await run_lifespan(receive, send, self.engine.start, self.engine.stop)

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        try:
            if method == "POST":
                parser = self._generate.get(path)
                body = await read_json(receive)
                if self._record and not path.startswith("/mock/"):
                    self.recorded.append({"path": path, "time": time.time(), "body": body})
                if parser is not None:
                    if not isinstance(body, dict):
                        raise RequestError(400, "the request body must be a JSON object")
                    await self._serve_generation(parser(self.engine, body), scope, receive, send)
                    return
                handler = self._post.get(path)
                if handler is not None:
                    await send_json(send, 200, handler(body))
                    return
                async_handler = self._post_async.get(path)
                if async_handler is not None:
                    if not isinstance(body, dict):
                        raise RequestError(400, "the request body must be a JSON object")
                    await send_json(send, 200, await async_handler(body))
                    return
            elif method == "GET":
                handler0 = self._get.get(path)
                if handler0 is not None:
                    result = handler0()
                    if isinstance(result, tuple):
                        await send_raw(send, *result)
                    else:
                        await send_json(send, 200, result)
                    return
                if path.startswith(_ROOM_PREFIX):
                    await self._room(path[len(_ROOM_PREFIX):], scope, send)
                    return
            elif method == "DELETE" and path == "/mock/requests":
                self.recorded.clear()
                await send_json(send, 200, {"cleared": True})
                return
            known = path in self._get or path in self._post or path in self._generate or path in self._post_async
            raise RequestError(405 if known else 404,
                               f"{method} {path} is not supported" if known else f"no route {path}")
        except RequestError as exc:
            self.engine.metrics.errors[str(exc.status)] += 1
            await send_error(send, exc)

    async def _serve_generation(self, req: GenRequest, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        engine = self.engine
        watch = None
        if req.stream or engine.faults.stall_after_tokens is not None:
            watch = asyncio.get_running_loop().create_task(cancel_on_disconnect(receive, asyncio.current_task()))
        try:
            prep = await engine.prepare(req)
            rid = engine.next_id()
            try:
                if req.stream:
                    await self._stream(prep, rid, scope, send)
                else:
                    ids = await engine.wait_output(prep)
                    body = full_response(engine, prep, rid, ids, "length")
                    engine.finish(prep, len(ids))
                    await send_raw(send, 200, body, JSON)
            finally:
                engine.abort(prep)
        except asyncio.CancelledError:
            return  # the client went away; blocks and slot are freed above
        finally:
            if watch is not None:
                watch.cancel()

    async def _stream(self, prep: Any, rid: str, scope: dict[str, Any], send: Send) -> None:
        engine = self.engine
        fmt = StreamFormatter(engine, prep, rid)
        decoder = engine.tok.stream_decoder()
        body: DirectBody = scope["extensions"]["servegraph.body"]  # one write per step, no message per write
        await send(SSE_START)
        first = fmt.start()
        if first:
            body.write(first)
        n = 0
        async for step in engine.tokens(prep):
            if len(step) == 1:
                body.write(fmt.token(step[0], decoder.step(step[0]), n))
                n += 1
            else:
                events = []
                for tid in step:
                    events.append(fmt.token(tid, decoder.step(tid), n))
                    n += 1
                body.write(b"".join(events))
            if body.paused:
                await resumed(body)
        engine.finish(prep, n)
        await send({"type": "http.response.body", "body": fmt.end(n, "length"), "more_body": False})

    async def _room(self, tail: str, scope: dict[str, Any], send: Send) -> None:
        try:
            room = int(tail)
            query = parse_qs(scope.get("query_string", b"").decode())
            timeout = float(query.get("timeout_s", [self.cfg.bootstrap_timeout_s])[0])
        except ValueError:
            raise RequestError(400, f"bad room path or timeout: {tail}") from None
        info = await self.engine.handshakes.serve_room(room, timeout, query.get("receiver", [None])[0])
        if info is None:
            await send_error(send, RequestError(408, f"room {room} not filled within {timeout:g}s"))
        else:
            await send_json(send, 200, info)

    # --- small endpoints -----------------------------------------------------------------

    def _health(self) -> tuple[int, bytes, list]:
        cfg = self.cfg
        if self.engine.faults.health_fail:
            return 503, b'{"status":"unhealthy","reason":"health_fail fault"}', JSON
        if time.monotonic() - self.engine.started < cfg.startup_delay_s:
            return 503, b'{"status":"starting"}', JSON
        gate = self.engine.gate
        if gate is not None and not gate.ready:
            return 503, orjson.dumps({"status": "waiting for the replica's other hosts", **gate.state()}), JSON
        return 200, b"", []

    def _nodes(self) -> dict[str, Any]:
        """The hosts of this replica: the leader and the ranks that joined it (one host: just this one)."""
        gate = self.engine.gate
        if gate is None:
            return {"nnodes": 1, "leader": {"rank": 0, "host": socket.gethostname()}, "joined": []}
        return gate.state()

    def _models(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"object": "list", "data": [{
            "id": cfg.model_name, "object": "model", "created": int(self.engine.started),
            "owned_by": _OWNER.get(cfg.imitate, "servegraph"), "root": cfg.model, "parent": None, "max_model_len": cfg.max_model_len,
        }]}

    def _metrics(self) -> tuple[int, bytes, list]:
        self.engine.metrics.cached_blocks = self.engine.pool.cached_count
        return 200, self.engine.metrics.render(), [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]

    def _server_info(self) -> dict[str, Any]:
        cfg = self.cfg
        mode = {"prefill": "prefill", "encode_prefill": "prefill", "decode": "decode"}.get(cfg.role, "null")
        return {"model_path": cfg.model, "tokenizer_path": cfg.tokenizer or cfg.model,
                "served_model_name": cfg.model_name, "disaggregation_mode": mode, "tp_size": 1, "dp_size": 1,
                "page_size": cfg.block_size, "disaggregation_bootstrap_port": cfg.bootstrap_port,
                "max_total_num_tokens": cfg.kv_blocks * cfg.block_size, "context_length": cfg.max_model_len,
                "version": "mock", "mock": {"role": cfg.role, "imitate": cfg.imitate,
                                            "engine_id": self.engine.engine_id}}

    def _model_info(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"model_path": cfg.model, "tokenizer_path": cfg.tokenizer or cfg.model, "is_generation": True,
                "preferred_sampling_params": None, "weight_version": "default",
                "has_image_understanding": True, "has_audio_understanding": True, "model_type": "mock"}

    def _version(self) -> dict[str, Any]:
        return {"version": "mock"}

    def _requests(self) -> list[dict[str, Any]]:
        return list(self.recorded)

    def _kv(self) -> dict[str, Any]:
        pool = self.engine.pool
        return {"engine_id": self.engine.engine_id, "block_size": pool.block_size, "capacity": pool.capacity,
                "usage": pool.usage, "hash": "nodes.common.kvhash.block_hashes", "blocks": pool.cached_hashes}

    def _faults(self) -> dict[str, Any]:
        return self.engine.faults.as_dict()

    def _set_faults(self, body: Any) -> dict[str, Any]:
        self.engine.faults.update(body)
        log.warning("%s: faults now %s", self.cfg.name, self.engine.faults.as_dict())
        return self.engine.faults.as_dict()

    def _state(self) -> dict[str, Any]:
        e = self.engine
        return {"engine_id": e.engine_id, "role": self.cfg.role, "imitate": self.cfg.imitate,
                "transfers": e.registry.snapshot(), "kv_usage": e.pool.usage,
                "cached_blocks": len(e.pool.cached_hashes)}

    def _tokenize(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        if "messages" in body:
            ids = parse_chat(self.engine, {**body, "stream": False, "max_tokens": 1}).prompt_ids
        else:
            ids = parse_completion(self.engine, {**body, "max_tokens": 1}).prompt_ids
        return {"count": len(ids), "max_model_len": self.cfg.max_model_len, "tokens": ids, "token_strs": None}

    def _detokenize(self, body: Any) -> dict[str, Any]:
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list) or not all(type(t) is int for t in tokens):
            raise RequestError(400, "'tokens' must be a list of token ids", "tokens")
        return {"prompt": self.engine.tok.decode(tokens)}
