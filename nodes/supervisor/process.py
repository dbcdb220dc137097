"""One child process: its own process group, killed with its parent, output pumped line by line."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
from typing import Any, Callable

_PR_SET_PDEATHSIG = 1
_READ_CHUNK = 1 << 16


def _libc_prctl() -> Callable[..., int] | None:
    # Resolved before any fork: looking a symbol up in the forked child is not async-signal-safe.
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _libc_prctl()


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when the supervisor dies, even by SIGKILL."""
    if _prctl is None:
        return None

    def preexec() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


class _Watchdog:
    """The supervisor's end of ``watchdog.py``: tells it which sessions are ours."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def _pipe(self) -> Any:
        if self._proc is None or self._proc.poll() is not None:
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "watchdog.py")
            self._proc = subprocess.Popen([sys.executable, "-I", script], stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL, start_new_session=True)
        return self._proc.stdin

    def tell(self, line: str) -> None:
        try:
            pipe = self._pipe()
            pipe.write(line.encode() + b"\n")
            pipe.flush()
        except OSError as exc:  # never let the safety net break a start or a stop
            sys.stderr.write(f"servegraph: watchdog unavailable ({exc}); grandchildren may outlive a killed supervisor\n")


_watchdog = _Watchdog()


class Child:
    """A running service process, leader of its own session and process group.

    Its stdout and stderr are merged (keeps their order) and handed to
    ``on_lines`` as lists of whole lines. Exit is watched on its own (a pidfd), not
    through the output pipe: asyncio's ``Process.wait()`` also waits for the
    pipe to close, which never happens while a grandchild holds it.
    """

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, on_lines: Callable[[list[str]], None]) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self._on_lines = on_lines
        self._popen: subprocess.Popen[bytes] | None = None
        self._pump: asyncio.Task[None] | None = None
        self.exited: asyncio.Future[int] | None = None

    @property
    def pid(self) -> int | None:
        """Process id (also its process group and session id), None before start."""
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        """Exit status once it has exited (negative: killed by that signal)."""
        return self._popen.returncode if self._popen else None

    async def start(self) -> int:
        """Start the process; returns its pid.

        Raises:
            OSError: the program could not be started (e.g. not found).
        """
        loop = asyncio.get_running_loop()
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        _watchdog.tell(f"+{self._popen.pid}")
        self.exited = loop.create_future()
        _watch_exit(loop, self._popen, self.exited)
        reader = asyncio.StreamReader(limit=_READ_CHUNK, loop=loop)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), self._popen.stdout)
        self._pump = asyncio.create_task(self._pump_lines(reader))
        return self._popen.pid

    async def wait(self) -> int:
        """Wait for the process to exit; its exit status."""
        assert self.exited is not None, "not started"
        return await asyncio.shield(self.exited)

    def alive(self) -> bool:
        """Started and not yet exited."""
        return self.exited is not None and not self.exited.done()

    def terminate(self) -> None:
        """SIGTERM to the leader only, so it can stop its own children in order."""
        if self.alive():
            try:
                os.kill(self._popen.pid, signal.SIGTERM)  # type: ignore[union-attr]
            except ProcessLookupError:
                pass

    def kill_group(self) -> None:
        """SIGKILL the whole process group: the leader and anything it left behind."""
        if self._popen is None:
            return
        try:
            os.killpg(self._popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if not self.alive():
            _watchdog.tell(f"-{self._popen.pid}")  # gone: its id may be reused by someone else's session

    async def finish_output(self, timeout_s: float) -> None:
        """Let the output pump reach end of file (bounded: an escaped grandchild may hold the pipe)."""
        if self._pump is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._pump), timeout_s)
        except asyncio.TimeoutError:
            self._pump.cancel()

    async def _pump_lines(self, stream: asyncio.StreamReader) -> None:
        pending = b""
        while True:
            chunk = await stream.read(_READ_CHUNK)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > _READ_CHUNK * 16:  # a process writing without newlines
                lines.append(pending)
                pending = b""
            if lines:
                self._deliver([line.rstrip(b"\r").decode("utf-8", "replace") for line in lines])
        if pending:
            self._deliver([pending.decode("utf-8", "replace")])

    def _deliver(self, lines: list[str]) -> None:
        # Never stop reading: a child whose pipe fills up blocks on its next write.
        try:
            self._on_lines(lines)
        except Exception as exc:  # noqa: BLE001 (a full disk or a closed console must not wedge the child)
            sys.stderr.write(f"servegraph: could not record output of pid {self.pid}: {exc}\n")


def _watch_exit(loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes], done: asyncio.Future[int]) -> None:
    """Resolve ``done`` with the exit status of ``popen`` once it exits (reaping it)."""
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): poll
        loop.create_task(_poll_exit(popen, done))
        return

    def on_exit() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not done.done():
            done.set_result(popen.wait())

    loop.add_reader(pidfd, on_exit)


async def _poll_exit(popen: subprocess.Popen[bytes], done: asyncio.Future[int]) -> None:
    while popen.poll() is None:
        await asyncio.sleep(0.05)
    if not done.done():
        done.set_result(popen.returncode)
