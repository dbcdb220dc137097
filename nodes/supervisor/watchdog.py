"""Outlives the supervisor to clear away what its children leave behind.

PR_SET_PDEATHSIG kills the supervisor's children when it dies, even by SIGKILL,
but not their own children (vLLM's engine cores, say), which would run on as
orphans holding GPUs and ports. This process, started by the supervisor in a
session of its own, reads the session ids of the children from its stdin
(``+SID`` when one starts, ``-SID`` once one is gone); when stdin closes — the
supervisor exited, however it exited — it SIGKILLs every process still in one
of those sessions, then exits.

Run as a script (not ``-m``) so that it imports nothing of the project: it must
start quickly and cannot fail on the project's imports.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _session_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # Fields after the parenthesised command: state ppid pgrp session ...
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[3]) if len(fields) > 3 else None


def kill_sessions(sessions: set[int]) -> int:
    """SIGKILL every process in ``sessions``; how many were signalled."""
    killed = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid() and _session_of(pid) in sessions:
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    sessions: set[int] = set()
    for line in sys.stdin.buffer:
        sign, sid = line[:1], line[1:].strip()
        if sid.isdigit():
            (sessions.add if sign == b"+" else sessions.discard)(int(sid))
    # A process forking while we scan can escape one pass; a few passes catch it.
    for _ in range(3):
        if not kill_sessions(sessions):
            break
        time.sleep(0.05)


if __name__ == "__main__":
    main()
