"""This process's end of the tensor edge (``nodes.transport``: NIXL, shm or TCP) to its peers.

Two hops move real bytes: an encoder's embeddings to a prefill, and a
prefill's KV blocks to a decode. A block's simulated KV is a deterministic
function of its hash (``kv_blocks_for``), so the decode checks that the bytes
that arrived are the ones for its own prompt. The edge is optional: without
numpy or ``nodes.transport`` the handshakes still check digests and hashes,
and no bytes move.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from ..common.openai_errors import RequestError

log = logging.getLogger("nodes.mock")

_RECEIVER_BYTES = 64 << 20


def edge_available() -> bool:
    """True when numpy and nodes.transport import."""
    try:
        import numpy  # noqa: F401

        from .. import transport  # noqa: F401
    except Exception as exc:  # any import-time failure means: no edge, digest-only handshakes
        log.warning("embedding and KV bytes will not move (nodes.transport unavailable: %s)", exc)
        return False
    return True


def kv_blocks_for(hashes: list[int], block_bytes: int) -> Any:
    """The simulated KV of these blocks: uint8 [len(hashes), block_bytes], a function of each hash."""
    import numpy as np

    data = b"".join(hashlib.shake_256(str(h).encode()).digest(block_bytes) for h in hashes)
    return np.frombuffer(data, dtype=np.uint8).reshape(len(hashes), block_bytes)


class PeerEdge:
    """This process's end of embedding and KV transfers (receiver and KV pool made on first use).

    Args:
        bind_host: interface the receiver's side channel listens on.
        advertise_host: address senders use to reach it.
        kv_blocks: blocks in this engine's KV cache (rows of the simulated KV pool).
        kv_block_bytes: bytes of simulated KV per block (0: no KV bytes move).
    """

    def __init__(self, bind_host: str, advertise_host: str, kv_blocks: int = 0, kv_block_bytes: int = 0) -> None:
        self._available: bool | None = None
        self._bind, self._advertise = bind_host, advertise_host
        self._kv_shape = (kv_blocks, kv_block_bytes)
        self._rx: Any = None
        self._kv_pool: Any = None
        self._lock = asyncio.Lock()

    @property
    def available(self) -> bool:
        """Whether bytes can move (checked on first use: numpy is not imported at start-up)."""
        if self._available is None:
            self._available = edge_available()
        return self._available

    @property
    def moves_kv(self) -> bool:
        """Whether KV blocks travel as bytes (the edge is up and blocks have a size)."""
        return self._kv_shape[1] > 0 and self.available

    async def _receiver(self) -> Any:
        async with self._lock:
            if self._rx is None:
                from ..transport import TensorReceiver

                self._rx = await asyncio.to_thread(TensorReceiver, _RECEIVER_BYTES, host=self._bind,
                                                   advertise_host=self._advertise)
        return self._rx

    async def receiver_handle(self) -> dict[str, Any]:
        """The receiver's handle, for an encoder or a prefill to send to."""
        return (await self._receiver()).handle().to_dict()

    async def receiver_b64(self) -> str:
        """The receiver's handle as one URL-safe string (for a query parameter)."""
        return (await self._receiver()).handle().to_b64()

    async def send(self, receiver: Any, array: Any, timeout_s: float) -> dict[str, Any]:
        """Write embeddings to the prefill's receiver; returns the ticket.

        Raises:
            RequestError: 502 when the transfer fails (or the handle is malformed).
        """
        from ..transport import send_embeddings

        return await self._sending("embeddings to the prefill", send_embeddings, receiver, array, timeout=timeout_s)

    async def send_kv(self, receiver: Any, block_ids: list[int], hashes: list[int], timeout_s: float) -> dict:
        """Write the simulated KV of ``hashes`` into pool rows ``block_ids``, then send those rows
        to the decode's receiver (from the pool, as an engine sends its KV cache); returns the ticket.

        Raises:
            RequestError: 502 when the transfer fails (or the handle is malformed).
        """
        import numpy as np

        from ..transport import send_blocks

        if self._kv_pool is None:
            self._kv_pool = np.zeros(self._kv_shape, dtype=np.uint8)
        self._kv_pool[block_ids] = kv_blocks_for(hashes, self._kv_shape[1])
        return await self._sending("KV blocks to the decode", send_blocks, receiver, self._kv_pool, block_ids,
                                   timeout=timeout_s)

    @staticmethod
    async def _sending(what: str, send: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from ..transport import TransportError

        try:
            return await asyncio.to_thread(send, *args, **kwargs)
        except TransportError as exc:
            raise RequestError(502, f"sending {what} failed: {exc}", "receiver") from None

    async def receive(self, ticket: Any, timeout_s: float, what: str, field: str) -> Any:
        """Wait for the array named by ``ticket`` (``what`` and ``field`` name it in errors).

        Raises:
            RequestError: 502 when it does not arrive.
        """
        from ..transport import TransportError, recv_array

        try:
            return await asyncio.to_thread(recv_array, self._rx, ticket, timeout=timeout_s)
        except TransportError as exc:
            raise RequestError(502, f"receiving {what} failed: {exc}", field) from None

    def close(self) -> None:
        """Release the receive region."""
        if self._rx is not None:
            self._rx.close()
            self._rx = None
