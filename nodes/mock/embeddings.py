"""Encoder -> prefill embedding bytes over the tensor edge (``nodes.transport``: NIXL, shm or TCP).

An encoder's "embeddings" are a deterministic function of the media digests
(float16, ``mm_tokens`` rows of ``HIDDEN`` per item), so the prefill can check
that the bytes that arrived are the ones for the media in its own request.
The edge is optional: without numpy or ``nodes.transport`` the handshake
still checks the digests, and no bytes move.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from ..common.openai_errors import RequestError

log = logging.getLogger("nodes.mock")

HIDDEN = 64
_RECEIVER_BYTES = 64 << 20


def edge_available() -> bool:
    """True when numpy and nodes.transport import."""
    try:
        import numpy  # noqa: F401

        from .. import transport  # noqa: F401
    except Exception as exc:  # any import-time failure means: no edge, digest-only handshake
        log.warning("embedding bytes will not move (nodes.transport unavailable: %s)", exc)
        return False
    return True


def embedding_for(digests: list[str], mm_tokens: int) -> Any:
    """The embeddings an encoder produces for these media: float16 [items * mm_tokens, HIDDEN]."""
    import numpy as np

    rows = []
    for digest in digests:
        raw = hashlib.shake_256(bytes.fromhex(digest)).digest(mm_tokens * HIDDEN * 2)
        rows.append(np.frombuffer(raw, dtype=np.float16).reshape(mm_tokens, HIDDEN))
    return np.concatenate(rows) if rows else np.zeros((0, HIDDEN), dtype=np.float16)


class EmbeddingEdge:
    """This process's end of embedding transfers (a receiver is made on first use).

    Args:
        bind_host: interface the receiver's side channel listens on.
        advertise_host: address senders use to reach it.
    """

    def __init__(self, bind_host: str, advertise_host: str) -> None:
        self._available: bool | None = None
        self._bind, self._advertise = bind_host, advertise_host
        self._rx: Any = None
        self._lock = asyncio.Lock()

    @property
    def available(self) -> bool:
        """Whether bytes can move (checked on first use: numpy is not imported at start-up)."""
        if self._available is None:
            self._available = edge_available()
        return self._available

    async def receiver_handle(self) -> dict[str, Any]:
        """The receiver's handle, for the encoder to send to."""
        async with self._lock:
            if self._rx is None:
                from ..transport import TensorReceiver

                self._rx = await asyncio.to_thread(TensorReceiver, _RECEIVER_BYTES, host=self._bind,
                                                   advertise_host=self._advertise)
        return self._rx.handle().to_dict()

    async def send(self, receiver: Any, array: Any, timeout_s: float) -> dict[str, Any]:
        """Write ``array`` to the prefill's receiver; returns the ticket.

        Raises:
            RequestError: 400 for a malformed handle, 502 when the transfer fails.
        """
        from ..transport import TransportError, send_embeddings

        try:
            return await asyncio.to_thread(send_embeddings, receiver, array, timeout=timeout_s)
        except TransportError as exc:
            raise RequestError(502, f"sending embeddings to the prefill failed: {exc}", "receiver") from None

    async def receive(self, ticket: Any, timeout_s: float) -> Any:
        """Wait for the bytes named by ``ticket``.

        Raises:
            RequestError: 502 when they do not arrive.
        """
        from ..transport import TransportError, recv_embeddings

        try:
            return await asyncio.to_thread(recv_embeddings, self._rx, ticket, timeout=timeout_s)
        except TransportError as exc:
            raise RequestError(502, f"receiving embeddings from the encoder failed: {exc}",
                               "ec_transfer_params") from None

    def close(self) -> None:
        """Release the receive region."""
        if self._rx is not None:
            self._rx.close()
            self._rx = None
