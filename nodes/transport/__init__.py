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
    out = tx.prepare(big_buffer)                     # a buffer sent again and again:
    ticket = out.send(timeout=10)                    #   described once, each send a re-post
    group = tx.prepare([keys, values])               # several arrays, one notification each send

Over NIXL a sender leases a few slots of the receiver's region once and gets
them back as credits when the receiver releases transfers, and keeps its
one prepared NIXL WRITE per slot and registered array: a send re-posts
one, and the next send's slot is set aside while the bytes move (see
``leased_slots`` and ``fast_path``). On a GPU the edge makes the CUDA
context before its NIXL agent (``cuda_first``). Backends: NIXL when
importable and startable; otherwise shared memory (same host) or the
receiver's TCP side channel, with one logged warning. Force one with
``backend=`` or ``SERVEGRAPH_TRANSPORT=nixl|shm|tcp``. Every wait has a
deadline: a dead or silent peer raises ``TransportTimeout``/``TransportError``.
For the E/P/D request path (and a prefill's KV blocks to a decode) see
``nodes.transport.edge``.

Modules, by job:

* sending: ``sender`` (the API), ``fast_path`` (routes, armed sends),
  ``general_path`` (a slot per send, staging, gathers), ``sources`` (what is
  registered, what is staged), ``notice`` (notification and ticket),
  ``slot_client`` (reservations, the sender's side channel) with
  ``leased_slots`` (its leases and credits);
* receiving: ``receiver`` (the API), ``transfers`` (each transfer's slot and
  state), ``lease_book`` (the slots leased to senders), ``sidechannel_server``;
* shared: ``nixl_backend`` and ``nixl_calls`` (the process's NIXL agent),
  ``cuda_first`` (CUDA before that agent, or no VRAM on it),
  ``sidechannel`` (frames), ``layout``, ``memory``, ``slots``, ``fallback``,
  ``handle``, ``config``, ``errors``.
"""

from .edge import recv_array, recv_embeddings, send_blocks, send_embeddings
from .errors import TransportError, TransportTimeout
from .handle import EdgeHandle
from .notice import Ticket
from .receiver import Received, TensorReceiver
from .sender import PreparedSend, TensorSender
from .slot_client import Reservation

__all__ = [
    "EdgeHandle",
    "PreparedSend",
    "Received",
    "Reservation",
    "TensorReceiver",
    "TensorSender",
    "Ticket",
    "TransportError",
    "TransportTimeout",
    "recv_array",
    "recv_embeddings",
    "send_blocks",
    "send_embeddings",
]
