"""What the engine works on: a parsed request, and the state of one admitted request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .blocks import Allocation
from .media import MediaItem


@dataclass
class GenRequest:
    """A parsed generation request (chat, completion or SGLang /generate)."""

    kind: str
    body: dict[str, Any]
    prompt_ids: list[int]
    media: list[MediaItem]
    max_tokens: int
    stream: bool = False
    ignore_eos: bool = False


@dataclass
class Prepared:
    """A request that has its KV and is ready to emit tokens."""

    req: GenRequest
    mode: str
    seed: bytes
    n_out: int
    start: float
    alloc: Allocation | None = None
    cached_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    choice_extra: dict[str, Any] = field(default_factory=dict)
    exit_midway: bool = False
    handed_off: bool = False
    done: bool = False
    out_ids: list[int] | None = None
