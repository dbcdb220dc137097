"""Processes a bench starts (servers, engines, peers), each in its own process group, stopped together."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Procs:
    """Processes started by a bench (each its own process group, its output in a log), stopped together."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], log: pathlib.Path, env: dict | None = None) -> None:
        proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        proc.stdout_log = log  # type: ignore[attr-defined]
        self.procs.append(proc)

    def check(self) -> None:
        """Raises SystemExit if one of them has exited (its log says why)."""
        for p in self.procs:
            if p.poll() is not None:
                raise SystemExit(f"exited with {p.returncode}: {' '.join(p.args[:6])} ... (log: {p.stdout_log})")

    def stop(self) -> None:
        """SIGINT to every group (last started first), SIGKILL to those still there after 20 s."""
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self.procs.clear()
