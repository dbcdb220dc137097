"""One process in a root filesystem: the part of a container runtime that building and running our image needs.

``python3 -m scripts.image.sandbox SPEC_JSON`` (what :func:`spawn` starts) moves
into new mount, PID, UTS and IPC namespaces and forks the process that
becomes PID 1 there. That process mounts ``/proc``, a small ``/dev`` (null,
zero, full, random, urandom, tty, a tmpfs ``/dev/shm``), the host files the
spec names (``/etc/resolv.conf``, as a runtime does) and the spec's tmpfs
folders, makes the root read-only if asked, chroots, switches to the spec's
uid/gid/groups (dropping every capability), optionally sets no_new_privs,
and executes the spec's argv with exactly the spec's environment and working
folder. The network is the host's (``docker run --network host``).

The parent stays outside: it forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to
that PID 1, sends SIGKILL ``grace`` seconds after a SIGINT or SIGTERM if it
is still there (``docker stop``), and exits with its status. When PID 1 ends,
the kernel kills whatever else runs in its PID namespace, and the mounts go
with the mount namespace: nothing is left behind on the host. If the parent
is killed, PID 1 gets SIGKILL (parent-death signal).

Needs root (real, not in a user namespace).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC, _CLONE_NEWPID = 0x00020000, 0x04000000, 0x08000000, 0x20000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


@dataclass(frozen=True)
class Spec:
    """What to run and how.

    Args:
        rootfs: the root filesystem (a folder on the host).
        args: argv; ``args[0]`` is looked up on the environment's PATH inside the root.
        env: ``KEY=VALUE`` strings, the whole environment.
        cwd: working folder inside the root; it must exist.
        uid, gid, groups: the identity the process runs as.
        read_only: mount the root read-only (the tmpfs folders, /dev and /proc stay writable).
        tmpfs: folders inside the root that get an empty tmpfs (mode 1777), e.g. ``["/tmp"]``.
        host_files: host files bound read-only over the same path inside the root, where the root has it.
        hostname: the UTS namespace's hostname.
        no_new_privs: set PR_SET_NO_NEW_PRIVS (Kubernetes' allowPrivilegeEscalation: false).
        grace: seconds between a forwarded SIGINT/SIGTERM and SIGKILL.
        pid_file: where the parent writes PID 1's host pid (to find the namespace's processes from outside).
    """

    rootfs: str
    args: list[str]
    env: list[str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    read_only: bool = False
    tmpfs: list[str] = field(default_factory=list)
    host_files: list[str] = field(default_factory=lambda: ["/etc/resolv.conf"])
    hostname: str = "servegraph"
    no_new_privs: bool = False
    grace: float = 10.0
    pid_file: str | None = None


def command(spec: Spec) -> list[str]:
    """The host command line that runs ``spec`` (run it with ``cwd=REPO``)."""
    return [sys.executable, "-m", "scripts.image.sandbox", json.dumps(asdict(spec))]


def spawn(spec: Spec, **popen: object) -> subprocess.Popen:
    """Start ``spec`` in the background; ``popen`` goes to :class:`subprocess.Popen` (stdout, stderr, ...)."""
    return subprocess.Popen(command(spec), cwd=REPO, **popen)  # type: ignore[call-overload]


def run(spec: Spec, line: Callable[[str], None] = print) -> int:
    """Run ``spec`` to its end, handing each line of its output (stdout and stderr) to ``line``; its exit status."""
    proc = spawn(spec, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line(raw.decode(errors="replace").rstrip("\n"))
    finally:
        code = proc.wait()
    return code


def main(argv: list[str]) -> int:
    """Entry point of ``python3 -m scripts.image.sandbox SPEC_JSON``."""
    if len(argv) != 2:
        print("usage: python3 -m scripts.image.sandbox SPEC_JSON", file=sys.stderr)
        return 2
    spec = Spec(**json.loads(argv[1]))
    if os.geteuid() != 0:
        print("sandbox: needs root (namespaces, mounts, chroot)", file=sys.stderr)
        return 125
    _call("unshare", _libc().unshare(_CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWUTS | _CLONE_NEWIPC))
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we mount propagates to the host
    pid = os.fork()
    if pid == 0:
        try:
            _become(spec)
        except BaseException as exc:  # noqa: BLE001 - whatever failed, say so and never return into the parent's code
            os.write(2, f"sandbox: {exc}\n".encode())
        os._exit(127)
    return _supervise(pid, spec)


def _supervise(pid: int, spec: Spec) -> int:
    """Forward signals to PID 1 and wait for it; its exit status (128+N for signal N)."""
    if spec.pid_file:
        with open(spec.pid_file, "w", encoding="utf-8") as fh:
            fh.write(f"{pid}\n")

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        if signum in (signal.SIGINT, signal.SIGTERM) and spec.grace > 0:
            signal.setitimer(signal.ITIMER_REAL, spec.grace)

    def kill(_signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    signal.signal(signal.SIGALRM, kill)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _become(spec: Spec) -> None:
    """In the child (PID 1 of the new namespace): mounts, chroot, identity, exec. Never returns."""
    libc = _libc()
    name = spec.hostname.encode()
    _call("sethostname", libc.sethostname(name, len(name)))
    root = os.path.abspath(spec.rootfs)
    _mount(root, root, None, _MS_BIND | _MS_REC)
    _mount("proc", f"{root}/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    _mount_dev(root)
    for host in spec.host_files:
        inside = root + host
        if os.path.isfile(host) and os.path.isfile(inside) and not os.path.islink(inside):
            _mount(host, inside, None, _MS_BIND)
            _mount(None, inside, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY)
    for folder in spec.tmpfs:
        _mount("tmpfs", root + folder, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777")
    if spec.read_only:
        _mount(None, root, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY)
    os.chroot(root)
    os.chdir("/")
    try:
        os.chdir(spec.cwd)
    except OSError as exc:
        raise RuntimeError(f"working folder {spec.cwd}: {exc.strerror}") from None
    os.setgroups(spec.groups)
    os.setgid(spec.gid)
    os.setuid(spec.uid)
    if spec.no_new_privs:
        _call("prctl(NO_NEW_PRIVS)", libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    _call("prctl(PDEATHSIG)", libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))  # after setuid, which clears it
    env = dict(item.split("=", 1) for item in spec.env)
    os.execve(_which(spec.args[0], env.get("PATH", "")), spec.args, env)


def _mount_dev(root: str) -> None:
    dev = f"{root}/dev"
    _mount("tmpfs", dev, "tmpfs", _MS_NOSUID, "mode=755,size=65536k")
    for name, (major, minor) in _DEVICES.items():
        os.mknod(f"{dev}/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm")
    _mount("shm", f"{dev}/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777")


def _which(program: str, path: str) -> str:
    if "/" in program:
        return program
    for folder in path.split(":"):
        candidate = os.path.join(folder or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"{program}: not found on PATH={path}")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _call(what: str, result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    libc = _libc()
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    enc = (lambda s: s.encode() if s is not None else None)
    _call(f"mount {source or ''} on {target}", libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
