"""The tensor edge: move arrays between two processes over NIXL, or a plain fallback.

Receiver (e.g. a prefill engine)::

    rx = TensorReceiver(capacity_bytes=256 << 20)   # registers its region once
    handle = rx.handle().to_dict()                   # publish: JSON / base64, ~1 KB
    with rx.recv(ticket["xfer_id"], timeout=10) as got:
        use(got.arrays)                              # views into the region

Sender (e.g. an encoder)::

    tx = TensorSender(handle)                        # loads the receiver's metadata
    tx.register(big_buffer)                          # optional: zero-copy sources
    ticket = tx.send([emb], timeout=10)              # WRITE + notification
    # pass ticket.to_dict() on to the receiver

Over NIXL a sender leases a few slots of the receiver's region once and gets
them back as credits when the receiver releases transfers, and keeps its
NIXL transfers prepared: a send of a registered array re-posts one (see
``slot_client``). Backends: NIXL when importable and startable; otherwise
shared memory (same host) or the receiver's TCP side channel, with one
logged warning. Force one
with ``backend=`` or ``SERVEGRAPH_TRANSPORT=nixl|shm|tcp``. Every wait has a
deadline: a dead or silent peer raises ``TransportTimeout``/``TransportError``.
For the E/P/D request path see ``nodes.transport.edge``.
"""

from .edge import recv_embeddings, send_embeddings
from .errors import TransportError, TransportTimeout
from .handle import EdgeHandle
from .receiver import Received, TensorReceiver
from .sender import Reservation, TensorSender, Ticket

__all__ = [
    "EdgeHandle",
    "Received",
    "Reservation",
    "TensorReceiver",
    "TensorSender",
    "Ticket",
    "TransportError",
    "TransportTimeout",
    "recv_embeddings",
    "send_embeddings",
]
