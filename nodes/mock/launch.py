"""Start mock engines as real subprocesses (for tests and benchmarks).

    with MockProcess(["--role", "worker", "--imitate", "vllm"]) as mock:
        httpx.get(mock.url + "/v1/models")
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Iterator, Sequence


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MockProcess:
    """``python -m nodes.mock`` on free ports, waited for until /health answers 200.

    Args:
        args: extra flags (``--port``/``--host`` are chosen here; pass
            ``bootstrap=True`` for a ``--bootstrap-port``).
        bootstrap: also listen on a bootstrap/side-channel port.
        ready_timeout_s: how long to wait for /health.
        env: extra environment.
    """

    def __init__(self, args: Sequence[str] = (), *, bootstrap: bool = False, ready_timeout_s: float = 20.0,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.bootstrap_port = free_port() if bootstrap else None
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.ready_timeout_s = ready_timeout_s
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "MockProcess":
        """Spawn and wait for health.

        Raises:
            RuntimeError: the process exited or never became healthy (with its output).
        """
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> "MockProcess":
        """Start the process without waiting (see ``wait_ready``)."""
        argv = [sys.executable, "-m", "nodes.mock", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        if self.bootstrap_port:
            argv += ["--bootstrap-port", str(self.bootstrap_port)]
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), **self.env}
        self._log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child never blocks on it
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        return self

    def wait_ready(self) -> "MockProcess":
        """Poll /health until 200.

        Raises:
            RuntimeError: the process exited or never became healthy (with its output).
        """
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mock exited with {self.proc.returncode}: {self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mock on {self.url} not healthy within {self.ready_timeout_s}s: {self.output()}")

    def output(self) -> str:
        """The last 4000 characters the process printed so far."""
        if self.proc is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> "MockProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(*mocks: MockProcess) -> Iterator[tuple[MockProcess, ...]]:
    """Start several mocks at once (their start-ups overlap) and stop them all on exit."""
    try:
        for m in mocks:
            m.spawn()
        for m in mocks:
            m.wait_ready()
        yield mocks
    finally:
        for m in mocks:
            m.stop()
