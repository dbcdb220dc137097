"""Run a graph with `graph run` as a real subprocess, for end-to-end tests."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _ephemeral_low(default: int = 32768) -> int:
    """The first port of the kernel's ephemeral range."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def free_port_block(count: int, start: int = 20000, end: int | None = None) -> int:
    """The first port of ``count`` consecutive free ports (checked by binding).

    By default below the kernel's ephemeral range: there no engine's outgoing
    connection or auto-bound socket (vLLM's ZMQ and NIXL side channels start
    before our frontend) can take a port between this check and the bind.
    """
    import random

    if end is None:
        end = _ephemeral_low()
        if end - start < 4 * count:  # an unusual ephemeral range: take what is there
            end = 60000
    for _ in range(200):
        base = random.randrange(start, end - count)
        if all(_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no block of free ports found")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_json(method: str, url: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
    """A tiny HTTP client that returns (status, parsed JSON or text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def metrics(base_url: str) -> dict[str, float]:
    """A Prometheus /metrics page as {'name{labels}': value} (comments dropped)."""
    status, text = http_json("GET", base_url + "/metrics")
    assert status == 200, f"{base_url}/metrics: HTTP {status}"
    out = {}
    for line in str(text).splitlines():
        match = re.match(r"^([A-Za-z_:][\w:]*(?:\{[^}]*\})?)\s+(\S+)$", line)
        if match and not line.startswith("#"):
            out[match.group(1)] = float(match.group(2))
    return out


def metric_sum(values: dict[str, float], name: str, **labels: str) -> float:
    """Sum of a metric over its label sets, only those carrying every ``labels`` value if given."""
    return sum(v for k, v in values.items()
               if (k == name or k.startswith(name + "{")) and all(f'{lk}="{lv}"' in k for lk, lv in labels.items()))


@dataclass
class RunningGraph:
    """A `graph run` process and what it wrote to its workdir."""

    proc: subprocess.Popen
    workdir: pathlib.Path
    port: int
    log: pathlib.Path
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def service(self, name: str) -> dict[str, Any]:
        return next(s for s in self.plan["services"] if s["name"] == name)

    def service_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.service(name)['ports']['http']}"

    def received(self, name: str) -> list[dict[str, Any]]:
        """What a mock engine recorded (GET /mock/requests)."""
        status, data = http_json("GET", self.service_url(name) + "/mock/requests")
        assert status == 200, data
        return data if isinstance(data, list) else data.get("requests", [])

    def clear(self) -> None:
        for s in self.plan["services"]:
            if s.get("engine"):
                http_json("DELETE", self.service_url(s["name"]) + "/mock/requests")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def start_graph(pipeline: str, workdir: pathlib.Path, *args: str, ready_timeout: float = 180.0,
                extra_env: dict[str, str] | None = None) -> RunningGraph:
    """`graph run PIPELINE --mock ...` in its own session (its environment: ours plus ``extra_env``);
    waits until the frontend answers /v1/models."""
    port = free_port_block(1)
    base = free_port_block(40)
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir.parent / f"{workdir.name}.graph-run.log"
    cmd = [sys.executable, "-m", "compiler.cli", "run", str(ROOT / pipeline), "--port", str(port),
           "--base-port", str(base), "--workdir", str(workdir), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
    running = RunningGraph(proc, workdir, port, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"graph run exited with {proc.returncode}:\n{running.output()[-4000:]}")
        try:
            status, _ = http_json("GET", running.url + "/models", timeout=2)
            if status == 200 and (workdir / "plan.json").exists():
                running.plan = json.loads((workdir / "plan.json").read_text())
                return running
        except OSError:
            pass
        time.sleep(0.2)
    running.stop()
    raise AssertionError(f"graph run not ready in {ready_timeout} s:\n{running.output()[-4000:]}")


def process_tree(root: int) -> set[int]:
    """``root`` and every live descendant (walking /proc parent links)."""
    children: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (zombies count as gone)."""
    out = set()
    for pid in pids:
        try:
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out
