"""Load a process's config slice, expanding ``${VAR}`` address placeholders from the environment."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A config file is missing, unreadable, or names an undefined variable."""


def expand(value: Any, env: dict[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` in every string of a JSON-like value.

    Raises:
        ConfigError: a variable is not defined.
    """
    env = os.environ if env is None else env
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                raise ConfigError(f"${{{name}}} is not defined: set it to the address of that service")
            return env[name]

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [expand(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, env) for k, v in value.items()}
    return value


def load_config(path: str, model: type[T]) -> T:
    """Read a JSON config file into ``model`` after expanding placeholders."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config '{path}': {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config '{path}' is not valid JSON: {exc}") from None
    try:
        return model.model_validate(expand(raw))
    except ValueError as exc:
        raise ConfigError(f"config '{path}': {exc}") from None


@dataclass
class ServiceArgs(Generic[T]):
    """What one of our services was started with: its config (loaded), name, port and config file."""

    config: T
    name: str
    port: int
    config_path: str


def service_args(prog: str, description: str | None, model: type[T], name: str,
                 argv: list[str] | None = None) -> ServiceArgs[T]:
    """Parse the command line every service of ours takes (``--config``, ``--name``, ``--port``) and load
    its config; a config that cannot be loaded exits 2 with the problem, prefixed by the service name."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="the service's config slice (JSON)")
    parser.add_argument("--name", default=name, help="service name, for logs")
    parser.add_argument("--port", type=int, default=None, help="override the config's port")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, model)
    except ConfigError as exc:
        print(f"{args.name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return ServiceArgs(config, args.name, args.port or config.port, args.config)  # type: ignore[attr-defined]
