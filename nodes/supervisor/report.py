"""What the supervisor tells a person: where to send requests, and why a start failed."""

from __future__ import annotations

import shlex
import signal

from rich.console import Console
from rich.text import Text

from graph.plan import Plan, Service

from .logs import NOTE_PREFIX, tail


def print_ready(console: Console, plan: Plan, url: str, logs_dir: str, state_path: str) -> None:
    """The URL, the served models, a curl to paste, and where logs and state are."""
    fe = plan.service(plan.frontend)
    models = [r["model"] for r in (fe.config or {}).get("routes", []) if r.get("model")]
    body = '{"model": "%s", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}' % (
        models[0] if models else "MODEL")
    c = console
    c.print()
    c.print(Text.assemble(("ready: ", "bold green"), f"graph '{plan.graph}' ({plan.shape}) at ",
                          (url, "bold underline")), highlight=False)
    if models:
        c.print(f"  models: {', '.join(models)}", highlight=False)
    c.print("  try:", highlight=False)
    c.print(Text(f"    curl {url}/chat/completions -H 'Content-Type: application/json' \\\n"
                 f"      -d '{body}'"), highlight=False, soft_wrap=True)
    c.print(f"  logs: {logs_dir}/   state: {state_path}", highlight=False, soft_wrap=True)
    c.print("  Ctrl-C stops everything.", highlight=False)
    c.print()


def print_failure(console: Console, service: str, reason: str, argv: list[str], log_path: str, lines: int) -> None:
    """Which service failed, why, its command, and the last ``lines`` lines it printed."""
    c = console
    c.print(Text.assemble(("error: ", "bold red"), (service, "bold"), f" failed to start: {reason}"), highlight=False)
    c.print(Text(f"  command: {shlex.join(argv)}"), highlight=False, soft_wrap=True)
    shown = [ln for ln in tail(log_path, lines * 3) if not ln.startswith(NOTE_PREFIX)][-lines:]
    c.print(f"  last {len(shown)} lines of {log_path}:", highlight=False, soft_wrap=True)
    for line in shown:
        c.print(Text(f"    {line}"), highlight=False, soft_wrap=True)
    if not shown:
        c.print("    (it printed nothing)", highlight=False)


def print_multi_host(console: Console, service: Service) -> None:
    """Why ``service``, one engine replica over several hosts, cannot run here, and the ways out."""
    why, fix = service.why_not_one_process()
    console.print(Text.assemble(("error: ", "bold red"), (service.name, "bold"),
                                why.removeprefix(service.name) + "; `graph run` runs every service as a single "
                                "process on this host"), highlight=False, soft_wrap=True)
    console.print(f"  fix: {fix}", highlight=False, soft_wrap=True)


def describe_exit(code: int | None) -> str:
    """How a process ended, for a line of output: "exited with code 1", "was killed by SIGKILL"."""
    if code is None:
        return "ended"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def plural(n: int, one: str, many: str) -> str:
    """``n`` and the noun that goes with it: "1 process", "3 processes"."""
    return f"{n} {one if n == 1 else many}"
