"""Build small Plans of fake services and watch a supervisor run them (for tests/test_supervisor_*.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from graph.plan import HealthCheck, Plan, Service
from compiler.targets.local import render
from compiler.targets.output import write_output

FAKE = str(Path(__file__).with_name("fake_service.py"))
REPO = str(Path(__file__).resolve().parents[2])


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that are free right now."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def fake(name: str, port: int, *flags: str, depends_on: tuple[str, ...] = (), role: str = "worker",
         startup_timeout_s: float = 10.0) -> Service:
    """A Service running tests/fakes/fake_service.py on ``port``."""
    return Service(
        name=name, node=name.rsplit("-", 1)[0], role=role,  # type: ignore[arg-type]
        argv=[sys.executable, FAKE, "--port", str(port), "--name", name, *flags],
        ports={"http": port}, health=HealthCheck(port=port, startup_timeout_s=startup_timeout_s),
        depends_on=list(depends_on),
    )


def make_plan(services: list[Service], frontend: str) -> Plan:
    """A Plan of hand-made services."""
    port = next(s.http_port for s in services if s.name == frontend)
    return Plan(graph="fake", shape="test", services=services, frontend=frontend, url=f"http://127.0.0.1:{port}")


def write_plan(plan: Plan, folder: Path) -> Path:
    """Write the local target's files for ``plan`` into ``folder`` (what `graph compile` would)."""
    write_output(render(plan), str(folder))
    return folder


def health(port: int, path: str = "/health") -> int | None:
    """HTTP status of GET 127.0.0.1:port/path, None if nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


# --- processes, from /proc --------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, session) of a process, None if it is gone. Zombies count as gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    state, ppid, pgid, sid = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    return None if state in ("Z", "X") else (state, ppid, pgid, sid)


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` in the parent tree."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st:
            children.setdefault(st[1], []).append(pid)
    out: set[int] = set()
    todo = [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive_in(pids: set[int], sessions: set[int]) -> set[int]:
    """Those of ``pids`` still alive, plus any live process in one of ``sessions``."""
    out = {p for p in pids if proc_stat(p)}
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[3] in sessions:
            out.add(pid)
    return out


def wait_for(pred: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll ``pred`` until it returns something truthy; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class SupervisorProcess:
    """``python -m nodes.supervisor DIR`` (or any command) as a subprocess, output into a file."""

    def __init__(self, argv: list[str], workdir: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.log_path = log
        self._log = open(log, "wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    @classmethod
    def for_plan(cls, plan: Plan, tmp: Path, *flags: str) -> SupervisorProcess:
        """Write ``plan`` into tmp/plan and supervise it."""
        folder = write_plan(plan, tmp / "plan")
        argv = [sys.executable, "-m", "nodes.supervisor", str(folder), *flags]
        return cls(argv, folder, tmp / "supervisor.out")

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.workdir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def wait_phase(self, phase: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """Wait until state.json says ``phase`` (fails early if the supervisor exits)."""
        def check() -> dict[str, Any] | None:
            st = self.state()
            if st.get("phase") == phase:
                return st
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited ({self.proc.returncode}) before '{phase}':\n{self.output}")
            return None

        return wait_for(check, timeout_s, f"phase {phase}\n{self.output}")

    def interrupt(self, sig: int = signal.SIGINT, timeout_s: float = 15.0) -> int:
        """Send ``sig`` and wait for the supervisor to exit; its exit status."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout_s)

    def close(self) -> None:
        """Never leave anything behind, even when a test failed half-way."""
        tree = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in tree:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self._log.close()
