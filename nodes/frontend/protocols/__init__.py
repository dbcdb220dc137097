"""How the frontend talks to the engines: one module per disaggregation protocol."""

from __future__ import annotations

from ..stage import StageRuntime
from .base import Outcome, Protocol
from .sglang import SglangProtocol
from .trtllm import TrtllmProtocol
from .vllm import VllmProtocol

#: protocol name (an engine adapter's ``protocol``) -> how to talk to it. "openai" is any plain
#: OpenAI-compatible server: one engine does the whole request, no disaggregation handshake.
PROTOCOLS: dict[str, type[Protocol]] = {
    "openai": Protocol, "vllm": VllmProtocol, "sglang": SglangProtocol, "trtllm": TrtllmProtocol,
}

__all__ = ["Outcome", "PROTOCOLS", "Protocol", "StageRuntime"]
