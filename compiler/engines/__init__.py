"""Engine adapters, one module per engine, looked up by name."""

from __future__ import annotations

import importlib

from .base import EngineAdapter, EngineCommand, EngineInput

_REGISTRY = {
    "vllm": "compiler.engines.vllm:VllmAdapter",
    "sglang": "compiler.engines.sglang:SglangAdapter",
    "trtllm": "compiler.engines.trtllm:TrtllmAdapter",
    "mock": "compiler.engines.mock:MockAdapter",
}


def known_engines() -> list[str]:
    """Names of every registered engine."""
    return sorted(_REGISTRY)


def get_adapter(engine: str) -> EngineAdapter:
    """The adapter for ``engine`` (imported on first use)."""
    try:
        target = _REGISTRY[engine]
    except KeyError:
        raise KeyError(f"unknown engine '{engine}' (known: {', '.join(sorted(_REGISTRY))})") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["EngineAdapter", "EngineCommand", "EngineInput", "get_adapter", "known_engines"]
