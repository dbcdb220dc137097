"""A child's environment and argv: the Plan's ``${VAR}`` placeholders made concrete."""

from __future__ import annotations

import os
import re
from typing import Mapping

from graph.plan import Plan, Service

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class PlaceholderError(ValueError):
    """A ``${VAR}`` in a service's argv or env has no value."""


def expand(text: str, values: Mapping[str, str], service: str) -> str:
    """Replace every ``${VAR}`` in ``text`` with ``values[VAR]``.

    Raises:
        PlaceholderError: a variable has no value (names the service and variable).
    """

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise PlaceholderError(
                f"service {service}: ${{{name}}} in its command or env has no value; "
                "the Plan's env or the local host variables (SG_HOST_*, SG_SELF_HOST) must define it"
            )
        return values[name]

    return _PLACEHOLDER.sub(sub, text)


def child_env(plan: Plan, service: Service, host: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The full environment of ``service``'s process.

    Layers, later wins: the supervisor's own environment, unbuffered Python
    output (so log lines arrive as they are written), every service's address
    variable, then the service's own env with placeholders expanded.
    """
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(plan.single_host_env(host))
    lookup = dict(env)
    for key, value in service.env.items():
        env[key] = expand(value, lookup, service.name)
    return env


def child_argv(service: Service, env: Mapping[str, str]) -> list[str]:
    """``service.argv`` with placeholders expanded from its environment."""
    return [expand(arg, env, service.name) for arg in service.argv]
