"""Engine adapters, one module per engine, found by name in one registry.

Adding an engine is one module with an :class:`EngineAdapter` subclass and one
line in ``_REGISTRY``; an engine of your own package can instead declare an
entry point in the ``servegraph.engines`` group (``llamacpp =
"mypkg.llamacpp:LlamaCppAdapter"``) or call :func:`register`. Nothing else in
servegraph names an engine.
"""

from __future__ import annotations

import importlib
import importlib.metadata

from .base import EngineAdapter, EngineCommand, EngineInput

#: name -> "module:Class", imported on first use.
_REGISTRY: dict[str, str | type[EngineAdapter]] = {
    "vllm": "compiler.engines.vllm:VllmAdapter",
    "sglang": "compiler.engines.sglang:SglangAdapter",
    "trtllm": "compiler.engines.trtllm:TrtllmAdapter",
    "mock": "compiler.engines.mock:MockAdapter",
}
#: The engine of a node that names none.
DEFAULT_ENGINE = "vllm"
#: The engine ``--mock`` puts in place of every engine node.
MOCK_ENGINE = "mock"

_LOADED: dict[str, EngineAdapter] = {}
_PLUGINS_READ = False


def _read_plugins() -> None:
    """Engines other packages declare as ``servegraph.engines`` entry points (read once)."""
    global _PLUGINS_READ
    if _PLUGINS_READ:
        return
    _PLUGINS_READ = True
    for entry in importlib.metadata.entry_points(group="servegraph.engines"):
        _REGISTRY.setdefault(entry.name, entry.value)


def register(name: str, adapter: str | type[EngineAdapter]) -> None:
    """Add an engine: ``register("llamacpp", "mypkg.llamacpp:LlamaCppAdapter")`` or the class itself.

    Raises:
        ValueError: the name is taken by another adapter.
    """
    if _REGISTRY.get(name, adapter) != adapter:
        raise ValueError(f"engine '{name}' is already registered ({_REGISTRY[name]})")
    _REGISTRY[name] = adapter
    _LOADED.pop(name, None)


def known_engines() -> list[str]:
    """Names of every registered engine."""
    _read_plugins()
    return sorted(_REGISTRY)


def get_adapter(engine: str) -> EngineAdapter:
    """The adapter for ``engine`` (imported on first use).

    Raises:
        KeyError: no engine of that name is registered.
    """
    adapter = _LOADED.get(engine)
    if adapter is not None:
        return adapter
    _read_plugins()
    try:
        target = _REGISTRY[engine]
    except KeyError:
        raise KeyError(f"unknown engine '{engine}' (known: {', '.join(known_engines())})") from None
    if isinstance(target, str):
        module, cls = target.split(":")
        target = getattr(importlib.import_module(module), cls)
    adapter = target()
    _LOADED[engine] = adapter
    return adapter


__all__ = ["DEFAULT_ENGINE", "MOCK_ENGINE", "EngineAdapter", "EngineCommand", "EngineInput", "get_adapter",
           "known_engines", "register"]
