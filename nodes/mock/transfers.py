"""Both sides of the mock's P/D and E/P handshakes.

Sender side (a prefill or encoder) keeps what it produced until a peer takes it:

* KV offers, keyed by request id (vLLM ``remote_request_id``, TRT-LLM
  ``ctx_request_id``): the prefill's blocks stay pinned until the decode pulls
  them with POST /mock/kv/pull (and, with the decode's receiver in the pull,
  are sent over the tensor edge first), or until ``--transfer-ttl-s`` passes.
* SGLang bootstrap rooms: the decode long-polls GET /mock/sglang/room/<room>
  on the prefill's bootstrap port until the prefill fills the room (and, with
  the decode's receiver in the query, gets the KV over the tensor edge first).
* Embedding handles of an encoder, pulled with POST /mock/ec/pull (readable
  until they expire, so a retried prefill can read them again).

Receiver side (``PeerClient``) calls those endpoints with one pooled aiohttp
session and turns every failure into an OpenAI-shaped error that says which
peer failed and how.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

from ..common.openai_errors import RequestError
from .blocks import Allocation


@dataclass
class KVOffer:
    """KV a prefill holds for one decode."""

    alloc: Allocation
    hashes: list[int]
    num_tokens: int
    expires: float


@dataclass
class ECEntry:
    """Embeddings an encoder holds for one prefill."""

    mm_hashes: list[str]
    num_tokens: list[int]
    expires: float


@dataclass
class _Room:
    future: "asyncio.Future[dict[str, Any]]"
    expires: float
    alloc: Allocation | None = None
    waiters: int = field(default=0)


class TransferRegistry:
    """What this process produced for peers, each with an expiry.

    Args:
        engine_id: this engine's id; pulls naming another id are refused.
        ttl_s: seconds an unclaimed offer, room or handle is kept.
        release: returns an allocation's blocks to the pool.
    """

    def __init__(self, engine_id: str, ttl_s: float, release: Callable[[Allocation], None]) -> None:
        self.engine_id = engine_id
        self.ttl_s = ttl_s
        self._release = release
        self._kv: dict[str, KVOffer] = {}
        self._rooms: dict[int, _Room] = {}
        self._ec: dict[str, ECEntry] = {}

    # --- KV offers (vLLM, TRT-LLM) ---------------------------------------------------------

    def offer_kv(self, request_id: str, alloc: Allocation, hashes: list[int], num_tokens: int) -> None:
        """Keep ``alloc`` pinned until a decode pulls ``request_id``."""
        self._kv[request_id] = KVOffer(alloc, hashes, num_tokens, time.monotonic() + self.ttl_s)

    def claim_kv(self, payload: Any) -> KVOffer:
        """POST /mock/kv/pull: check the decode's handle and take its offer (its blocks stay
        pinned until ``release_blocks``, so they can be sent first).

        Raises:
            RequestError: 400 malformed, 404 unknown engine or request, 409 block ids differ.
        """
        if not isinstance(payload, dict):
            raise RequestError(400, "KV pull body must be a JSON object")
        engine_id, request_id = payload.get("engine_id"), payload.get("request_id")
        if engine_id != self.engine_id:
            raise RequestError(404, f"engine id {engine_id!r} is not this prefill's ({self.engine_id}): the "
                               "handle is forged, or the prefill restarted since it was issued", "remote_engine_id")
        offer = self._kv.get(str(request_id))
        if offer is None:
            raise RequestError(404, f"no KV waiting for request {request_id!r} on {self.engine_id}: already "
                               f"pulled, expired (--transfer-ttl-s {self.ttl_s:g}) or never prefilled here",
                               "remote_request_id")
        if payload.get("block_ids") != offer.alloc.block_ids:
            raise RequestError(409, f"block ids {payload.get('block_ids')!r} do not match the blocks of request "
                               f"{request_id!r}", "remote_block_ids")
        del self._kv[str(request_id)]
        return offer

    # --- SGLang bootstrap rooms ------------------------------------------------------------

    def _room(self, room: int) -> _Room:
        entry = self._rooms.get(room)
        if entry is None:
            entry = _Room(asyncio.get_running_loop().create_future(), time.monotonic() + self.ttl_s)
            self._rooms[room] = entry
        return entry

    def fill_room(self, room: int, alloc: Allocation, info: dict[str, Any]) -> None:
        """Publish a prefilled room; its blocks stay pinned until a decode takes it."""
        entry = self._room(room)
        if entry.future.done():
            raise RequestError(400, f"bootstrap_room {room} was already used; rooms are single-use", "bootstrap_room")
        entry.alloc = alloc
        entry.expires = time.monotonic() + self.ttl_s
        entry.future.set_result(info)

    async def take_room(self, room: int, timeout_s: float) -> tuple[dict[str, Any], Allocation | None] | None:
        """Wait until ``room`` is filled and take it; None if it was not within ``timeout_s``.

        Returns its info and its blocks, still pinned: ``release_blocks`` them once sent.
        """
        entry = self._room(room)
        entry.waiters += 1
        try:
            info = await asyncio.wait_for(asyncio.shield(entry.future), timeout_s)
        except asyncio.TimeoutError:
            return None
        finally:
            entry.waiters -= 1
        self._rooms.pop(room, None)
        alloc, entry.alloc = entry.alloc, None
        return info, alloc

    def release_blocks(self, alloc: Allocation | None) -> None:
        """Give a taken offer's or room's blocks back to the pool."""
        if alloc is not None:
            self._release(alloc)

    # --- encoder handles -------------------------------------------------------------------

    def offer_ec(self, ec_id: str, mm_hashes: list[str], num_tokens: list[int]) -> None:
        """Keep an encoder's output until a prefill pulls it."""
        self._ec[ec_id] = ECEntry(mm_hashes, num_tokens, time.monotonic() + self.ttl_s)

    def take_ec(self, payload: Any) -> dict[str, Any]:
        """Serve POST /mock/ec/pull.

        Raises:
            RequestError: 404 unknown encoder id or handle.
        """
        if not isinstance(payload, dict):
            raise RequestError(400, "embeddings pull body must be a JSON object")
        if payload.get("engine_id") != self.engine_id:
            raise RequestError(404, f"encoder id {payload.get('engine_id')!r} is not this encoder's "
                               f"({self.engine_id})", "ec_transfer_params.engine_id")
        # Not single-use: like vLLM's encoder cache files, a handle stays readable until it expires,
        # so a retried or re-routed prefill can read it again.
        entry = self._ec.get(str(payload.get("request_id")))
        if entry is None:
            raise RequestError(404, f"no embeddings under {payload.get('request_id')!r}: expired "
                               f"(--transfer-ttl-s {self.ttl_s:g}) or never encoded here",
                               "ec_transfer_params.request_id")
        return {"mm_hashes": entry.mm_hashes, "num_tokens": entry.num_tokens}

    # --- housekeeping ----------------------------------------------------------------------

    def expire(self) -> int:
        """Drop offers, rooms and handles past their time; returns how many went."""
        now = time.monotonic()
        gone = 0
        for key in [k for k, v in self._kv.items() if v.expires < now]:
            self._release(self._kv.pop(key).alloc)
            gone += 1
        for key in [k for k, v in self._rooms.items() if v.expires < now and not v.waiters]:
            entry = self._rooms.pop(key)
            if entry.alloc is not None:
                self._release(entry.alloc)
            gone += 1
        for key in [k for k, v in self._ec.items() if v.expires < now]:
            del self._ec[key]
            gone += 1
        return gone

    def snapshot(self) -> dict[str, int]:
        """Counts, for GET /mock/state."""
        return {"kv_offers": len(self._kv), "rooms": len(self._rooms), "ec_handles": len(self._ec)}


class PeerClient:
    """Calls other mocks' handshake endpoints over one pooled HTTP session."""

    def __init__(self) -> None:
        self._session: Any = None

    async def _get_session(self) -> Any:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300), json_serialize=lambda o: orjson.dumps(o).decode()
            )
        return self._session

    async def call(self, method: str, url: str, what: str, timeout_s: float, payload: Any = None) -> tuple[int, Any]:
        """One request to a peer; returns (status, parsed JSON).

        Raises:
            RequestError: 502 when the peer can't be reached or answers garbage, 504 on timeout.
        """
        import aiohttp

        session = await self._get_session()
        try:
            async with session.request(method, url, json=payload,
                                       timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                raw = await resp.read()
                status = resp.status
        except asyncio.TimeoutError:
            raise RequestError(504, f"{what}: no answer from {url} within {timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise RequestError(502, f"{what}: cannot reach {url}: {exc}") from None
        try:
            return status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RequestError(502, f"{what}: {url} answered HTTP {status} with a non-JSON body") from None

    async def close(self) -> None:
        """Close the session (at shutdown)."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def peer_error_message(body: Any) -> str:
    """The message of a peer's ``{"error": {...}}`` body."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", body["error"]))
    return str(body)[:300]
