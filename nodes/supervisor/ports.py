"""Check, before anything starts, that every port of the Plan is free on this host."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from graph.plan import Plan


@dataclass(frozen=True)
class PortConflict:
    """One port of one service that cannot be used."""

    service: str
    kind: str
    port: int
    reason: str
    owner: str | None = None

    def describe(self) -> str:
        """``frontend-0 needs port 8000 (http): already in use by pid 12 (python3)``."""
        who = f" by {self.owner}" if self.owner else ""
        return f"{self.service} needs port {self.port} ({self.kind}): {self.reason}{who}"


class PortInUseError(RuntimeError):
    """Some ports of the Plan are taken; ``conflicts`` says which and by whom."""

    def __init__(self, conflicts: list[PortConflict]) -> None:
        self.conflicts = conflicts
        super().__init__("; ".join(c.describe() for c in conflicts))


def check_ports(plan: Plan) -> None:
    """Raise :class:`PortInUseError` listing every port that is taken or claimed twice."""
    conflicts: list[PortConflict] = []
    claimed: dict[int, str] = {}
    for service in plan.services:
        for kind, port in sorted(service.ports.items()):
            if port in claimed:
                conflicts.append(PortConflict(service.name, kind, port, f"also claimed by {claimed[port]} in the Plan"))
                continue
            claimed[port] = service.name
            reason = bind_error(port)
            if reason:
                conflicts.append(PortConflict(service.name, kind, port, reason, listener_of(port)))
    if conflicts:
        raise PortInUseError(conflicts)


def bind_error(port: int) -> str | None:
    """Why a server could not listen on ``port`` on all addresses, or None if it could.

    SO_REUSEADDR as servers set it, so that sockets in TIME_WAIT from a previous
    run do not count as taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "already in use"
            if exc.errno == errno.EACCES:
                return "needs privileges (ports below 1024)"
            return exc.strerror or str(exc)
    return None


def listener_of(port: int) -> str | None:
    """``pid N (comm)`` of a process listening on ``port``, when /proc lets us see it."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(fd_dir):
                link = os.readlink(f"{fd_dir}/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return f"pid {pid} ({_comm(pid)})"
        except OSError:
            continue
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                next(fh, None)
                for line in fh:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except OSError:
            continue
    return inodes


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return "?"
