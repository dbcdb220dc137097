"""How the frontend talks to each engine: one module per engine's disaggregation protocol."""

from __future__ import annotations

from ..stage import StageRuntime
from .base import Outcome, Protocol
from .sglang import SglangProtocol
from .trtllm import TrtllmProtocol
from .vllm import VllmProtocol

PROTOCOLS: dict[str, type[Protocol]] = {"vllm": VllmProtocol, "sglang": SglangProtocol, "trtllm": TrtllmProtocol}

__all__ = ["Outcome", "PROTOCOLS", "Protocol", "StageRuntime"]
