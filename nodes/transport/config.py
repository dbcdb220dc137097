"""Which backend an edge uses: the constructor argument, else $SERVEGRAPH_TRANSPORT."""

from __future__ import annotations

import os

from .errors import TransportError

ENV_BACKEND = "SERVEGRAPH_TRANSPORT"
BACKENDS = ("auto", "nixl", "shm", "tcp")


def requested_backend(arg: str = "auto") -> str:
    """Resolve ``arg`` ("auto" defers to the environment variable).

    Raises:
        TransportError: an unknown backend name.
    """
    choice = arg if arg != "auto" else os.environ.get(ENV_BACKEND, "auto") or "auto"
    if choice not in BACKENDS:
        raise TransportError(
            f"unknown transport backend {choice!r} (from {ENV_BACKEND} or argument); use one of {BACKENDS}"
        )
    return choice
