"""Fault injection: set from the command line, changed at runtime with POST /mock/faults."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..common.openai_errors import RequestError


@dataclass
class Faults:
    """What goes wrong on purpose.

    Attributes:
        fail_rate: fraction of generation requests answered with HTTP 500.
        stall_after_tokens: after this many tokens a request stops and hangs (None: never).
        exit_after_requests: the process exits during this generation request (None: never).
        health_fail: GET /health answers 503.
        lose_handoffs: the KV and embeddings this engine hands out are gone when a later stage asks
            for them, as if it had restarted in between (the peer gets a 404).
    """

    fail_rate: float = 0.0
    stall_after_tokens: int | None = None
    exit_after_requests: int | None = None
    health_fail: bool = False
    lose_handoffs: bool = False

    def __post_init__(self) -> None:
        self._rng = random.Random(0)
        self.requests_seen = 0

    def should_fail(self) -> bool:
        """Draw whether this request fails (deterministic sequence)."""
        return self.fail_rate > 0 and self._rng.random() < self.fail_rate

    def count_request(self) -> bool:
        """Count a generation request; True if the process must exit during it."""
        self.requests_seen += 1
        return self.exit_after_requests is not None and self.requests_seen >= self.exit_after_requests

    def as_dict(self) -> dict[str, Any]:
        """The knobs plus the request counter."""
        return {**{k: v for k, v in asdict(self).items() if not k.startswith("_")},
                "requests_seen": self.requests_seen}

    def update(self, changes: Any) -> None:
        """Apply a partial update from POST /mock/faults.

        Raises:
            RequestError: 400 for unknown keys or values of the wrong type.
        """
        if not isinstance(changes, dict):
            raise RequestError(400, "POST /mock/faults takes a JSON object of fault knobs")
        known = {f.name: f for f in fields(self)}
        checked: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in known:
                raise RequestError(400, f"unknown fault '{key}'; known: {', '.join(sorted(known))}", key)
            if key == "fail_rate":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise RequestError(400, "fail_rate must be a number within [0, 1]", key)
                value = float(value)
            elif key in ("health_fail", "lose_handoffs"):
                if not isinstance(value, bool):
                    raise RequestError(400, f"{key} must be true or false", key)
            elif value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise RequestError(400, f"{key} must be a non-negative integer or null", key)
            checked[key] = value
        for key, value in checked.items():
            setattr(self, key, value)
        if "exit_after_requests" in checked:
            self.requests_seen = 0
