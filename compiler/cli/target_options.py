"""Targets on the command line: ``-O KEY=VALUE`` into a target's Options, and ``graph targets``."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import yaml
from rich.markup import escape

from ..engines import known_engines
from ..errors import did_you_mean
from ..targets import Target, get_target, option_docs, target_names
from .common import console, fail


def target_named(name: str) -> Target:
    """The target ``--target`` names, or a clear error listing them."""
    if name not in target_names():
        fail(f"unknown target '{name}'; choose one of: {', '.join(target_names())} (`graph targets` lists them)")
    return get_target(name)


def parse_target_options(target: Target, pairs: list[str]) -> Any:
    """``["namespace=prod", "gpus=8"]`` -> the target's Options.

    ``-O <prefix><engine>=IMAGE`` (``image_vllm=...`` on k8s) sets one engine's image, when the
    target's Options name an ``ENGINE_IMAGE_PREFIX``: the engines come from the registry, so no
    target declares an option per engine.
    """
    cls = target.Options
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    prefix = getattr(cls, "ENGINE_IMAGE_PREFIX", None)
    images_field = next((n for n in fields if n.endswith("engine_images")), None)
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            fail(f"-O '{pair}' is not KEY=VALUE; e.g. -O namespace=prod")
        if key not in fields and prefix and images_field and key.startswith(prefix):
            engine = key[len(prefix):]
            if engine not in known_engines():
                fail(f"target option '{key}': no engine called '{engine}'; {did_you_mean(engine, known_engines())}"
                     f"engines: {', '.join(known_engines())}")
            values.setdefault(images_field, {})[engine] = raw
            continue
        if key not in fields:
            fail(f"{target.name} target option '{key}' is unknown; {did_you_mean(key, fields)}"
                 f"known: {', '.join(sorted(fields))} "
                 "(`graph targets` says what each does)")
        hint = hints[key]
        value: Any = raw if hint is str or hint == typing.Optional[str] else yaml.safe_load(raw)
        values[key] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        fail(f"bad {target.name} target option: {exc}")


def list_targets() -> None:
    """Each target, what it writes, and every option with its default and what it does."""
    for name in target_names():
        target = get_target(name)
        console.print(f"[bold]{name}[/]: {escape(target.summary)}")
        docs = option_docs(target.Options)
        for f in dataclasses.fields(target.Options):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = "(required)"
            console.print(f"  -O {f.name}=  (default {default!r})  {escape(docs.get(f.name, ''))}")
        prefix = getattr(target.Options, "ENGINE_IMAGE_PREFIX", None)
        if prefix:
            console.print(f"  -O {prefix}<engine>=IMAGE  one engine's image (engines: {', '.join(known_engines())})")
