"""What a send tells the other side: the receiver's notification, the caller's ticket.

The notification (NIXL's notification message, or the side channel's ``meta``)
names the slot the bytes landed in and how to read them::

    {"rx": receiver id, "id": transfer id, "off": slot offset, "n": bytes,
     "layout": encode_layout(...), "crc": CRC-32 or null,
     "lease": whether the slot is the sender's lease, "seq": writes into that leased slot so far}

The ticket is what the consumer hands to ``TensorReceiver.recv``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

import orjson

from .errors import TransportError
from .nixl_backend import NOTIF_PREFIX

if TYPE_CHECKING:
    from .slot_client import Reservation


class Ticket(NamedTuple):
    """What the receiving side needs to pick a transfer up: put ``to_dict()`` in JSON."""

    xfer_id: str
    nbytes: int
    count: int

    def to_dict(self) -> dict:
        """JSON-safe form."""
        return self._asdict()

    @classmethod
    def from_dict(cls, data: dict) -> Ticket:
        """Parse ``to_dict()`` output.

        Raises:
            TransportError: fields missing.
        """
        try:
            return cls(str(data["xfer_id"]), int(data["nbytes"]), int(data["count"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TransportError(f"malformed edge ticket {data!r}: needs xfer_id, nbytes, count") from exc


def notice(slot: Reservation, total: int, layout: list, crc: int | None, leased: bool = False) -> dict:
    """What the receiver learns of a transfer: its slot, size, layout, CRC and, for a leased
    slot, how many times this sender has written it."""
    return {
        "rx": slot.receiver_id,
        "id": slot.xfer_id,
        "off": slot.offset,
        "n": total,
        "layout": layout,
        "crc": crc,
        "lease": leased,
        "seq": slot.seq,
    }


class LeasedShape(Protocol):
    """What ``leased_notice`` reads of a route (``fast_path.Route`` has these): the bytes and
    layout it sends, and its per-slot notification heads."""

    nbytes: int
    layout: list
    heads: dict[int, bytes]


def nixl_message(meta: dict) -> bytes:
    """A notification as NIXL carries it (the prefix tells ours from other agents' messages)."""
    return NOTIF_PREFIX + orjson.dumps(meta)


def leased_notice(slot: Reservation, route: LeasedShape) -> bytes:
    """The NIXL notification of a write of ``route``'s bytes into the leased ``slot``, without a CRC.

    Built from the slot's head, made once per slot and kept in ``route.heads``: only the write
    count and the transfer id change from one send to the next.
    """
    head = route.heads.get(slot.offset)
    if head is None:
        head = route.heads[slot.offset] = _leased_head(slot, route.nbytes, route.layout)
    return head + b'%d,"id":%b}' % (slot.seq, orjson.dumps(slot.xfer_id))


def _leased_head(slot: Reservation, nbytes: int, layout: list) -> bytes:
    """A leased slot's notification up to its write count: the rest is ``b'<seq>,"id":"<id>"}'``.
    Same fields as ``notice``."""
    whole = notice(slot, nbytes, layout, None, leased=True)
    fixed = {k: v for k, v in whole.items() if k not in ("id", "seq")}
    return NOTIF_PREFIX + orjson.dumps(fixed)[:-1] + b',"seq":'
