"""The P/D and E/P handshakes of each imitated engine, both sides (docs/engines.md, "Disaggregation protocols").

vLLM: a prefill asked for ``do_remote_decode`` keeps the KV and returns
``kv_transfer_params`` (vLLM 0.32's fields); the decode pulls the block hashes
from ``remote_host:remote_port`` (POST /mock/kv/pull), with the KV bytes over
``nodes.transport`` when present, and checks both against its own prompt.
TRT-LLM: the same pull, addressed by ``ctx_request_id`` and an
``encoded_opaque_state`` (base64 JSON) in ``disaggregated_params``. SGLang:
the prefill fills the bootstrap room, the decode long-polls it on
``bootstrap_host:bootstrap_port`` (its receiver in the query for the bytes). Encoder: ``ec_transfer_params`` names
embeddings the prefill pulls (bytes over ``nodes.transport`` when present).
"""

from __future__ import annotations

import base64
import os
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..common.openai_errors import RequestError
from .edge import kv_blocks_for
from .embeddings import HIDDEN, embedding_for
from .request import GenRequest, Prepared
from .transfers import peer_error_message

if TYPE_CHECKING:
    from .engine import Engine

_PREFILL_ROLES = ("prefill", "encode_prefill", "prefill_decode", "worker")
#: SGLang's default --disaggregation-bootstrap-port.
SGLANG_BOOTSTRAP_PORT = 8998


class Handshakes:
    """The handshake logic of one engine; state lives in the engine's registry and metrics."""

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self.cfg = engine.cfg

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

    # --- sender side ------------------------------------------------------------------

    def publish_kv(self, prep: Prepared, hashes: list[int]) -> None:
        """After a prefill for a remote decode: keep the blocks and say where the decode gets them."""
        assert prep.alloc is not None
        cfg, req = self.cfg, prep.req
        n = len(req.prompt_ids)
        if cfg.imitate == "sglang":
            room = _room_of(req.body)
            self.engine.registry.fill_room(room, prep.alloc, {
                "engine_id": self.engine.engine_id, "block_hashes": hashes, "num_tokens": n,
                "block_ids": prep.alloc.block_ids,
            })
            prep.handed_off = True  # the registry releases the blocks once a decode took them
            self.engine.metrics.kv_sent += 1
            return
        request_id = self.engine.next_id() if cfg.imitate == "vllm" else str(_ctx_request_id())
        self.engine.registry.offer_kv(request_id, prep.alloc, hashes, n)
        prep.handed_off = True
        self.engine.metrics.kv_sent += 1
        if cfg.imitate == "vllm":
            prep.extra["kv_transfer_params"] = {
                "do_remote_prefill": True, "do_remote_decode": False,
                "remote_block_ids": prep.alloc.block_ids, "remote_engine_id": self.engine.engine_id,
                "remote_request_id": request_id, "remote_host": cfg.public_host,
                "remote_port": cfg.side_channel_port, "tp_size": 1, "dcp_size": 1, "pp_size": 1,
                "remote_num_tokens": n, "remote_blocks_expiry_time": time.time() + cfg.transfer_ttl_s,
                "transfer_mode": "pull",
            }
        else:
            state = {"engine_id": self.engine.engine_id, "host": cfg.public_host, "port": cfg.side_channel_port,
                     "block_ids": prep.alloc.block_ids}
            prep.choice_extra["disaggregated_params"] = {
                "request_type": "context_only", "first_gen_tokens": [self.engine.token_at(prep, 0)],
                "ctx_request_id": int(request_id),
                "encoded_opaque_state": base64.b64encode(orjson.dumps(state)).decode(),
                "draft_tokens": None,
            }

    def publish_embeddings(self, prep: Prepared) -> None:
        """After encoding: keep the embeddings and return their handle as ``ec_transfer_params``."""
        cfg, media = self.cfg, prep.req.media
        ec_id = self.engine.next_id()
        hashes = [m.digest for m in media]
        self.engine.registry.offer_ec(ec_id, hashes, [cfg.mm_tokens] * len(media))
        prep.extra["ec_transfer_params"] = {
            "engine_id": self.engine.engine_id, "request_id": ec_id, "host": cfg.public_host,
            "port": cfg.side_channel_port, "mm_hashes": hashes, "num_tokens": [cfg.mm_tokens] * len(media),
            "shape": [cfg.mm_tokens * len(media), HIDDEN], "dtype": "float16",
            "transport": "nodes.transport" if self.engine.edge.available else None,
        }

    async def serve_kv_pull(self, payload: Any) -> dict[str, Any]:
        """POST /mock/kv/pull on a prefill: check the handle, send the KV blocks if a receiver is
        given, then unpin them and hand over the block hashes."""
        offer = self.engine.registry.claim_kv(payload)
        if self.engine.faults.lose_handoffs:
            self.engine.registry.release_blocks(offer.alloc)
            raise _lost("KV", payload.get("request_id"))
        answer: dict[str, Any] = {"block_hashes": offer.hashes, "num_tokens": offer.num_tokens}
        return await self._send_kv(answer, offer.alloc, payload.get("receiver"))

    async def serve_room(self, room: int, timeout_s: float, receiver: str | None) -> dict[str, Any] | None:
        """GET /mock/sglang/room/<room> on a prefill: wait for the room, send its KV blocks if a
        receiver is given, then unpin them; None if the room was not filled in time."""
        taken = await self.engine.registry.take_room(room, timeout_s)
        if taken is None:
            return None
        info, alloc = taken
        if self.engine.faults.lose_handoffs:
            self.engine.registry.release_blocks(alloc)
            raise _lost("bootstrap room", room)
        return await self._send_kv(dict(info), alloc, receiver)

    async def _send_kv(self, answer: dict[str, Any], alloc: Any, receiver: Any) -> dict[str, Any]:
        """Send the prompt blocks named in ``answer`` to ``receiver`` (if any), then release them;
        the ticket goes into the answer."""
        try:
            hashes = answer["block_hashes"]
            if receiver is not None and hashes and alloc is not None and self.engine.edge.moves_kv:
                answer["ticket"] = await self.engine.edge.send_kv(receiver, alloc.block_ids[: len(hashes)], hashes,
                                                                  self.cfg.transfer_timeout_s)
            return answer
        finally:
            self.engine.registry.release_blocks(alloc)

    async def serve_ec_pull(self, payload: Any) -> dict[str, Any]:
        """POST /mock/ec/pull on an encoder: check the handle, then send the bytes if a receiver is given."""
        answer = self.engine.registry.take_ec(payload)
        if self.engine.faults.lose_handoffs:
            raise _lost("embeddings", payload.get("request_id"))
        receiver = payload.get("receiver")
        if receiver is not None and self.engine.edge.available:
            array = embedding_for(answer["mm_hashes"], self.cfg.mm_tokens)
            answer["ticket"] = await self.engine.edge.send(receiver, array, self.cfg.transfer_timeout_s)
            answer["nbytes"] = int(array.nbytes)
        return answer

    # --- receiver side ----------------------------------------------------------------

    async def media_cost(self, req: GenRequest) -> float:
        """Seconds of encoder work this request still needs (0 when an encoder sent its handle)."""
        params = req.body.get("ec_transfer_params")
        if params is None:
            return self.cfg.delay(self.cfg.encode_ms / 1000.0) * len(req.media)
        if not isinstance(params, dict):
            raise RequestError(400, "ec_transfer_params must be the object an encoder returned",
                               "ec_transfer_params")
        url = f"http://{params.get('host')}:{params.get('port')}/mock/ec/pull"
        pull: dict[str, Any] = {"engine_id": params.get("engine_id"), "request_id": params.get("request_id")}
        if params.get("transport") and self.engine.edge.available:
            pull["receiver"] = await self.engine.edge.receiver_handle()
        status, body = await self.engine.peers.call("POST", url, "embeddings pull from the encoder",
                                             self.cfg.transfer_timeout_s, pull)
        if status != 200:
            raise _load_failed("ec_transfer_params", f"ec_transfer_params rejected by the encoder at {url}: "
                               f"{peer_error_message(body)}")
        mine = [m.digest for m in req.media]
        if body.get("mm_hashes") != mine:
            raise RequestError(400, "ec_transfer_params were produced for other media than this request's "
                               f"({len(body.get('mm_hashes') or [])} encoded vs {len(mine)} here, hashes differ)",
                               "ec_transfer_params")
        if "ticket" in body:
            got = await self.engine.edge.receive(body["ticket"], self.cfg.transfer_timeout_s,
                                                 "embeddings from the encoder", "ec_transfer_params")
            want = embedding_for(mine, self.cfg.mm_tokens)
            if got.shape != want.shape or got.tobytes() != want.tobytes():
                raise RequestError(400, "the embedding bytes from the encoder differ from what these media encode to",
                                   "ec_transfer_params")
            self.engine.metrics.ec_bytes_received += int(got.nbytes)
        self.engine.metrics.ec_received += 1
        return 0.0

    async def receive_kv(self, req: GenRequest, hashes: list[int], n: int) -> dict[str, Any]:
        """A decode's half: get the prefill's block hashes and check they are this prompt's.

        Raises:
            RequestError: 400 forged/foreign handle, 502/504 the prefill can't be reached or never filled.
        """
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
        if self.engine.edge.moves_kv:
            pull["receiver"] = await self.engine.edge.receiver_handle()
        status, answer = await self.engine.peers.call("POST", url, "KV pull from the prefill",
                                               self.cfg.transfer_timeout_s, pull)
        if status != 200:
            raise _load_failed(field_, f"{field_} rejected by the prefill at {host}:{port}: "
                               f"{peer_error_message(answer)}")
        await self._receive_kv_bytes(answer, f"{host}:{port}", field_)
        return answer

    async def _receive_kv_bytes(self, answer: dict[str, Any], prefill: str, field_: str) -> None:
        """Take the KV bytes named by the answer's ticket (if any) and check they are its blocks'."""
        if "ticket" not in answer:
            return
        got = await self.engine.edge.receive(answer["ticket"], self.cfg.transfer_timeout_s,
                                             f"KV blocks from the prefill at {prefill}", field_)
        hashes = answer.get("block_hashes") or []
        if got.ndim != 2 or got.tobytes() != kv_blocks_for(hashes, got.shape[1]).tobytes():
            raise RequestError(400, f"the KV bytes from the prefill at {prefill} are not those of the blocks "
                               "it named", field_)
        self.engine.metrics.kv_bytes_received += int(got.nbytes)

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
        if self.engine.edge.moves_kv:
            url += "&receiver=" + await self.engine.edge.receiver_b64()
        status, answer = await self.engine.peers.call("GET", url, "bootstrap room wait", timeout + 5.0)
        if status == 408:
            raise RequestError(504, f"bootstrap room {room} was never filled by the prefill at {host}:{port} "
                               f"within {timeout:g}s (--bootstrap-timeout-s): did the prefill get this request?",
                               "bootstrap_room")
        if status != 200:
            raise _load_failed("bootstrap_room", f"bootstrap room {room} at {host}:{port}: "
                               f"{peer_error_message(answer)}")
        await self._receive_kv_bytes(answer, f"{host}:{port}", "bootstrap_room")
        return answer

    def check_first_token(self, prep: Prepared) -> None:
        """TRT-LLM generation_only: the context's first token must be this prompt's first token."""
        first = prep.req.body["disaggregated_params"].get("first_gen_tokens")
        if first is not None and (not isinstance(first, list) or first[:1] != [self.engine.token_at(prep, 0)]):
            raise RequestError(400, "disaggregated_params.first_gen_tokens do not match this prompt's first token: "
                               "the generation request must carry the context response of the same prompt",
                               "disaggregated_params.first_gen_tokens")


def _lost(what: str, key: Any) -> RequestError:
    return RequestError(404, f"{what} {key!r} is gone (lose_handoffs fault: as if this engine restarted since)",
                        code="mock_fault")


def _load_failed(field: str, message: str) -> RequestError:
    """A peer refused the KV or embeddings this request names: the load failed on the server's side.

    vLLM 0.32 (``kv_load_failure_policy`` "fail", its default) finishes such a
    request with an error and answers 500; the frontend then runs it again.
    """
    return RequestError(500, message, field, code="kv_load_failed")


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
