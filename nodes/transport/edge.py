"""The E -> P embeddings hop of a request, in two calls.

The request path, with the frontend carrying two small JSON objects::

    prefill (once):  rx = TensorReceiver(256 << 20); publish rx.handle().to_dict()
    frontend:        POST encoder  {..., "edge": {"receiver": <prefill handle>}}
    encoder:         ticket = send_embeddings(body["edge"]["receiver"], emb)
                     respond {..., "edge": {"ticket": ticket}}
    frontend:        POST prefill  {..., "edge": {"ticket": <ticket>}}
    prefill:         emb = recv_embeddings(rx, body["edge"]["ticket"])

The bytes go encoder -> prefill directly (NIXL WRITE, or the fallback); the
frontend only relays the ~1 KB handle and the ~100 B ticket. A prefill hands
a decode its KV blocks the same way with ``send_blocks`` / ``recv_array``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .handle import EdgeHandle
from .notice import Ticket
from .receiver import TensorReceiver
from .sender import TensorSender

_senders: dict[tuple[str, int, str], TensorSender] = {}
_senders_lock = threading.Lock()


def _sender_for(handle: EdgeHandle) -> TensorSender:
    key = (handle.host, handle.port, handle.agent or handle.shm_name)
    with _senders_lock:
        if key not in _senders:
            _senders[key] = TensorSender(handle)
        return _senders[key]


def _handle(receiver: dict | str | EdgeHandle) -> EdgeHandle:
    if isinstance(receiver, EdgeHandle):
        return receiver
    return EdgeHandle.from_b64(receiver) if isinstance(receiver, str) else EdgeHandle.from_dict(receiver)


def send_embeddings(receiver: dict | str | EdgeHandle, tensor: Any, *, timeout: float = 30.0) -> dict:
    """Send one embeddings array to the receiver named by ``receiver``.

    Senders are cached per receiver, so the connection and NIXL metadata are
    set up once per prefill instance.

    Args:
        receiver: the prefill's handle (dict from JSON, base64 string or EdgeHandle).
        tensor: numpy array or torch tensor, C-contiguous.
        timeout: seconds for the whole transfer.

    Returns:
        The ticket as a JSON-safe dict, for the prefill request.

    Raises:
        TransportError: see ``TensorSender.send`` (a sender whose connection
            broke reconnects on the next call).
    """
    return _sender_for(_handle(receiver)).send([tensor], timeout=timeout).to_dict()


def send_blocks(
    receiver: dict | str | EdgeHandle, pool: Any, block_ids: Sequence[int], *, timeout: float = 30.0
) -> dict:
    """Send ``pool[block_ids]`` (one request's KV blocks) to the receiver named by ``receiver``.

    The pool is registered with the cached sender once, so long runs of
    blocks leave from where they are and short ones are gathered into one
    descriptor (``TensorSender.send_blocks``).

    Returns:
        The ticket as a JSON-safe dict; the receiver gets one array of
        shape ``(len(block_ids), *pool.shape[1:])``.

    Raises:
        TransportError: see ``TensorSender.send_blocks``.
    """
    sender = _sender_for(_handle(receiver))
    sender.register(pool)
    return sender.send_blocks(pool, block_ids, timeout=timeout).to_dict()


def recv_array(rx: TensorReceiver, ticket: dict, *, timeout: float = 30.0) -> Any:
    """Wait for the transfer named by ``ticket`` and return an owned copy of its (one) array.

    Raises:
        TransportTimeout: it did not arrive in time.
        TransportError: the sender died mid-transfer, or the ticket is malformed.
    """
    parsed = Ticket.from_dict(ticket)
    got = rx.recv(parsed.xfer_id, timeout=timeout, copy=True)
    return got.arrays[0]


recv_embeddings = recv_array  # the E -> P hop's name for it
