"""The multi-host test bed of scripts/multihost.sh, for tests and scripts.

Hosts are network + UTS namespaces on one bridge, with a Slurm cluster across them
(``SLURM_CONF`` from ``multihost.sh env``). This module finds the bed, builds command
lines that run inside a host, and starts processes there that are killed at the end::

    reason = skip_reason()                  # None when the bed and its Slurm are usable
    h1, h2, *_ = hosts()                    # Host(name="sg-h1", addr="198.18.0.11"), ...
    run_in(h1.name, ["hostname"])           # CompletedProcess, stdout "sg-h1\\n"
    with Procs() as procs:
        server = procs.start(h1.name, [sys.executable, "-c", "..."])
        ...                                 # every process started is killed on exit
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "multihost.sh"
UTS_DIR = "/run/servegraph-multihost/uts"  # where multihost.sh keeps each host's UTS namespace
# what the bed's hosts have to do for UCX to really cross the bridge: without it UCX sees one
# kernel and one /dev/shm and moves the bytes through shared memory (measured: 3.8 KB on the
# receiver's eth0 for 12 MiB sent); UCX 1.23 picks eth0 by itself (lo: "local loopback remote
# non-loopback"), so no UCX_NET_DEVICES is needed
UCX_ACROSS_HOSTS = {"UCX_TLS": "tcp,self"}


@dataclass(frozen=True)
class Host:
    """One host of the bed: its name (hostname, Slurm node name, DNS name) and address."""

    name: str
    addr: str


def skip_reason() -> str | None:
    """Why the bed cannot be used here, or None when it is up with all its Slurm nodes."""
    if os.geteuid() != 0:
        return "the multi-host bed needs root (namespaces); run the tests as root"
    for tool in ("ip", "nsenter", "sbatch", "srun", "squeue", "scancel", "sinfo"):
        if shutil.which(tool) is None:
            return f"`{tool}` not on PATH; install and start the bed with: sudo scripts/multihost.sh up"
    try:
        status = subprocess.run([str(SCRIPT), "status"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "scripts/multihost.sh status timed out (slurmctld not answering?); run: sudo scripts/multihost.sh up"
    if status.returncode != 0:
        lines = (status.stdout + status.stderr).strip().replace("\n", "; ") or "status printed nothing"
        return f"the multi-host bed is not up ({lines}); run: sudo scripts/multihost.sh up"
    return None


def hosts() -> list[Host]:
    """The bed's hosts, in order (sg-h1 first)."""
    out = subprocess.run([str(SCRIPT), "hosts"], capture_output=True, text=True, timeout=10, check=True)
    return [Host(*line.split()) for line in out.stdout.splitlines() if line.strip()]


def slurm_env(**extra: str) -> dict[str, str]:
    """This environment with ``SLURM_CONF`` of the bed's cluster (and ``extra``)."""
    out = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, timeout=10, check=True)
    env = dict(os.environ)
    env.update(re.findall(r"^export (\w+)=(\S+)$", out.stdout, re.M))
    env.update(extra)
    return env


def in_host(host: str, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` inside ``host``."""
    return [str(SCRIPT), "exec", host, "--", *argv]


def run_in(host: str, argv: list[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess:
    """Runs ``argv`` inside ``host`` to completion (text output captured)."""
    return subprocess.run(in_host(host, argv), capture_output=True, text=True, timeout=timeout, **kwargs)


def eth0_rx_bytes(host: str) -> int:
    """Bytes received so far on the host's interface to the bridge."""
    return int(run_in(host, ["cat", "/sys/class/net/eth0/statistics/rx_bytes"], check=True).stdout)


_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWNET = 0x00020000, 0x04000000, 0x40000000
_MS_REC, _MS_SLAVE = 0x4000, 0x80000


def enter_host(host: str) -> None:
    """Moves this process into ``host``: its network, its hostname and a /sys of its network, as
    ``multihost.sh exec`` does for a new command. For a child that must keep its pipes to a parent
    in another host (a multiprocessing child); call it first thing, before any thread starts
    (a namespace entered applies to the calling thread and the threads it starts later).

    Raises:
        OSError: not root, or no such host.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what} for host {host!r}: {os.strerror(errno)} (is the bed up? are you root?)")

    for path, kind in ((f"/run/netns/{host}", _CLONE_NEWNET), (f"{UTS_DIR}/{host}", _CLONE_NEWUTS)):
        fd = os.open(path, os.O_RDONLY)
        try:
            check(libc.setns(fd, kind), f"setns({path})")
        finally:
            os.close(fd)
    # UCX lists interfaces in /sys/class/net: mount a sysfs of this network in a mount namespace
    # of our own (what `ip netns exec` does), leaving everyone else's /sys alone
    check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(b"none", b"/", None, _MS_REC | _MS_SLAVE, None), "mount --make-rslave /")
    check(libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None), "mount sysfs /sys")


class Procs:
    """Processes started inside hosts; on exit each one's process group gets SIGKILL and is reaped.

    ``multihost.sh exec`` execs into the command (``ip netns exec`` and ``nsenter`` do not fork),
    so each Popen's pid is the command itself, the leader of its own session.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, host: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """Starts ``argv`` in ``host`` with text pipes for stdin and stdout (stderr inherited)."""
        kwargs.setdefault("stdin", subprocess.PIPE)
        kwargs.setdefault("stdout", subprocess.PIPE)
        proc = subprocess.Popen(in_host(host, argv), text=True, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:  # a dead reader: the unsent rest is dropped
                        pass
