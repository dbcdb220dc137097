"""The receiver's address: a small, JSON-safe description a sender needs to write to it.

A handle travels wherever a real deployment can carry a few hundred bytes: an
HTTP JSON body (``handle.to_dict()``), a header or argv (``handle.to_b64()``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field

from .errors import TransportError

HANDLE_VERSION = 1


@dataclass(frozen=True)
class EdgeHandle:
    """Where and how a sender reaches one ``TensorReceiver``.

    Attributes:
        backend: ``"nixl"`` (write over NIXL into ``base``) or ``"shm"`` (write into
            the shared-memory segment ``shm_name``); any DRAM receiver also
            accepts bytes over its TCP side channel, which a sender uses when it
            can neither load NIXL nor attach the segment (another host).
        host: side-channel host (reservations, fallback data, liveness).
        port: side-channel TCP port.
        node: identity of the receiver's machine; same-host fast paths need it equal.
        capacity: bytes in the receiver's registered region.
        mem: ``"DRAM"`` or ``"VRAM"``.
        device: GPU ordinal for VRAM, 0 otherwise.
        agent: NIXL agent name (nixl only).
        metadata: NIXL agent metadata, base64 (nixl only).
        base: address of the registered region in the receiver (nixl only).
        shm_name: shared-memory segment name (shm only).
    """

    backend: str
    host: str
    port: int
    node: str
    capacity: int
    mem: str = "DRAM"
    device: int = 0
    agent: str = ""
    metadata: str = ""
    base: int = 0
    shm_name: str = ""
    version: int = field(default=HANDLE_VERSION)

    def to_dict(self) -> dict:
        """Return a JSON-safe dict (embed it in an HTTP body)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EdgeHandle:
        """Rebuild a handle from ``to_dict()`` output.

        Raises:
            TransportError: the dict is not a handle of this version.
        """
        if not isinstance(data, dict):
            raise TransportError(f"edge handle must be a JSON object, got {type(data).__name__}")
        if data.get("version") != HANDLE_VERSION:
            raise TransportError(
                f"edge handle version {data.get('version')!r} is not {HANDLE_VERSION}: "
                "sender and receiver run different servegraph versions; upgrade both"
            )
        if data.get("mem", "DRAM") not in ("DRAM", "VRAM"):
            raise TransportError(f"malformed edge handle: mem is {data.get('mem')!r}, not 'DRAM' or 'VRAM'")
        try:
            return cls(**data)
        except TypeError as exc:
            raise TransportError(f"malformed edge handle: {exc}") from exc

    def to_b64(self) -> str:
        """Return the handle as one URL-safe base64 string."""
        return base64.urlsafe_b64encode(json.dumps(self.to_dict(), sort_keys=True).encode()).decode()

    @classmethod
    def from_b64(cls, text: str) -> EdgeHandle:
        """Parse ``to_b64()`` output.

        Raises:
            TransportError: the text is not a base64-encoded handle.
        """
        try:
            data = json.loads(base64.urlsafe_b64decode(text.encode()))
        except (ValueError, TypeError) as exc:
            raise TransportError(f"edge handle is not valid base64 JSON: {exc}") from exc
        return cls.from_dict(data)

    def nixl_metadata(self) -> bytes:
        """Return the receiver's NIXL agent metadata as bytes."""
        return base64.b64decode(self.metadata)
