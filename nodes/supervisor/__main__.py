"""``python -m nodes.supervisor DIR``: supervise the Plan in DIR (output of ``graph compile --target local``)."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError
from rich.console import Console

from graph.plan import Plan

from .ports import PortInUseError
from .supervisor import Supervisor, SupervisorOptions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; timings default to :class:`SupervisorOptions`'."""
    d = SupervisorOptions()
    p = argparse.ArgumentParser(prog="python -m nodes.supervisor", description=__doc__)
    p.add_argument("plan_dir", help="folder holding plan.json and the services' config files")
    p.add_argument("--host", default=d.host, help="address of every service (default %(default)s)")
    p.add_argument("--drain-timeout", type=float, default=d.drain_timeout_s, help="frontend grace period, s")
    p.add_argument("--stop-timeout", type=float, default=d.stop_timeout_s, help="SIGTERM -> SIGKILL for the rest, s")
    p.add_argument("--backoff-initial", type=float, default=d.backoff_initial_s, help="first restart delay, s")
    p.add_argument("--backoff-max", type=float, default=d.backoff_max_s, help="longest restart delay, s")
    p.add_argument("--backoff-reset", type=float, default=d.backoff_reset_s, help="healthy this long resets the delay, s")
    p.add_argument("--liveness-interval", type=float, default=d.liveness_interval_s,
                   help="health check period of running services, s")
    p.add_argument("--quiet", action="store_true", help="do not copy service output to the console (logs/ only)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the supervisor; its exit status."""
    args = parse_args(argv)
    err = Console(stderr=True, highlight=False)
    plan_file = os.path.join(args.plan_dir, "plan.json")
    try:
        with open(plan_file, encoding="utf-8") as fh:
            plan = Plan.model_validate_json(fh.read())
    except OSError as exc:
        err.print(f"[bold red]error:[/] cannot read {plan_file}: {exc.strerror}; "
                  "make one with `graph compile PIPELINE --target local -o DIR`")
        return 2
    except ValidationError as exc:
        err.print(f"[bold red]error:[/] {plan_file} is not a valid Plan:\n{exc}")
        return 2
    options = SupervisorOptions(
        host=args.host, drain_timeout_s=args.drain_timeout, stop_timeout_s=args.stop_timeout,
        backoff_initial_s=args.backoff_initial, backoff_max_s=args.backoff_max,
        backoff_reset_s=args.backoff_reset, liveness_interval_s=args.liveness_interval, echo_logs=not args.quiet,
    )
    try:
        return Supervisor(plan, args.plan_dir, options).run()
    except PortInUseError as exc:
        err.print("[bold red]error:[/] ports needed by the graph are taken:")
        for c in exc.conflicts:
            err.print(f"  {c.describe()}", soft_wrap=True)
        err.print("  fix: stop what uses them, or compile the graph with other ports")
        return 1


if __name__ == "__main__":
    sys.exit(main())
