"""FROM debian:<release>[-<date>][-slim]: the base root filesystem, made with debootstrap from Debian's packages.

Debian's official images are a ``debootstrap --variant=minbase`` of the
release, plus container settings (no service starts, no apt caches, no
translations) and, for ``-slim``, no documentation, man pages or locales,
with dpkg told to keep it so. This module makes the same from the mirror
given, leaving out what would tie the image to this host (resolv.conf,
hostname, apt lists, the bootstrap log, device nodes).

The date in the tag pins the day's snapshot of the release; the Debian mirror
that can be reached here (deb.debian.org) serves the release as it is today,
so the packages may be newer point-release builds than the dated image's
(``--mirror`` takes a snapshot.debian.org URL where that can be reached).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
#: The PATH of Debian's images (their image config sets nothing else).
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

_REF = re.compile(r"^(?:docker\.io/)?(?:library/)?debian:(?P<release>[a-z]+)(?:-(?P<date>\d{8}))?(?P<slim>-slim)?$")

#: What -slim leaves out, and what it keeps inside those folders (dpkg path-exclude / path-include).
SLIM_EXCLUDE = ("/usr/share/doc/*", "/usr/share/groff/*", "/usr/share/info/*", "/usr/share/linda/*",
                "/usr/share/lintian/overrides/*", "/usr/share/locale/*", "/usr/share/man/*")
SLIM_INCLUDE = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")

_CONTAINER_CONFIG = {
    "usr/sbin/policy-rc.d": (0o755, "#!/bin/sh\n# A package install in an image build starts no services.\nexit 101\n"),
    "etc/dpkg/dpkg.cfg.d/docker-apt-speedup": (0o644, "# An image build is thrown away on failure: no fsync.\n"
                                                     "force-unsafe-io\n"),
    "etc/apt/apt.conf.d/docker-clean": (0o644, "# No package cache in image layers.\n"
                                              'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
                                              '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
                                              'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
                                              '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
                                              'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'),
    "etc/apt/apt.conf.d/docker-gzip-indexes": (0o644, "# Package lists stay compressed on disk.\n"
                                                     'Acquire::GzipIndexes "true";\n'),
    "etc/apt/apt.conf.d/docker-no-languages": (0o644, "# No translated package descriptions.\n"
                                                     'Acquire::Languages "none";\n'),
    "etc/apt/apt.conf.d/docker-autoremove-suggests": (0o644, "# autoremove also removes what was only suggested.\n"
                                                            'Apt::AutoRemove::SuggestsImportant "false";\n'),
    # A runtime mounts its own resolv.conf and hostname over these; /etc/hosts names localhost for any runtime.
    "etc/resolv.conf": (0o644, ""),
    "etc/hostname": (0o644, ""),
    "etc/hosts": (0o644, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
}


@dataclass(frozen=True)
class DebianBase:
    """A ``debian:`` image reference: release, optional snapshot date, slim or not."""

    ref: str
    release: str
    date: str | None
    slim: bool


def parse_ref(ref: str) -> DebianBase:
    """The Debian base a FROM names.

    Raises:
        ValueError: anything but ``debian:<release>[-<YYYYMMDD>][-slim]``.
    """
    match = _REF.match(ref)
    if not match or match.group("release") in ("latest", "stable", "testing", "unstable", "sid"):
        raise ValueError(
            f"FROM {ref}: the daemonless build makes its base with debootstrap, so it takes only "
            "debian:<release>-<YYYYMMDD>-slim (e.g. debian:bookworm-20250520-slim); an image built from other "
            "sources (python:*-slim compiles Python into /usr/local) cannot be reproduced from Debian's packages")
    return DebianBase(ref, match.group("release"), match.group("date"), bool(match.group("slim")))


def bootstrap(base: DebianBase, rootfs: str, in_root: Callable[[list[str]], None], mirror: str = DEFAULT_MIRROR,
              security_mirror: str = DEFAULT_SECURITY_MIRROR, log: Callable[[str], None] = print) -> None:
    """Make ``base``'s root filesystem in the empty folder ``rootfs``.

    Args:
        in_root: runs a command inside the new root filesystem as root (apt-mark, dpkg-query).
        mirror, security_mirror: where debootstrap and the image's apt sources get packages.
        log: progress lines.

    Raises:
        subprocess.CalledProcessError: debootstrap failed (its log is printed).
    """
    cmd = ["debootstrap", "--variant=minbase", "--merged-usr", "--force-check-gpg", base.release, rootfs, mirror]
    log(" ".join(cmd))
    # In a mount namespace of its own: the /proc and /sys it mounts in the target cannot outlive it, even if it fails.
    cmd = ["unshare", "--mount", "--propagation", "private", *cmd]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        log(proc.stdout[-4000:])
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    _write_sources(rootfs, base.release, mirror, security_mirror)
    for rel, (mode, text) in _CONTAINER_CONFIG.items():
        _write(rootfs, rel, text, mode)
    # Everything minbase installed is essential or needed by it: marked automatic, "apt-mark showmanual" lists
    # only what a Dockerfile installs.
    in_root(["sh", "-c", "apt-mark auto '.*' >/dev/null"])
    if base.slim:
        _slimify(rootfs)
    _clean(rootfs)


def _write_sources(rootfs: str, release: str, mirror: str, security_mirror: str) -> None:
    os.remove(os.path.join(rootfs, "etc/apt/sources.list"))
    stanza = "Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: main\n" \
             "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    text = stanza.format(uri=mirror, suites=f"{release} {release}-updates") + "\n" \
        + stanza.format(uri=security_mirror, suites=f"{release}-security")
    _write(rootfs, "etc/apt/sources.list.d/debian.sources", text, 0o644)


def _slimify(rootfs: str) -> None:
    lines = ["# The slim variant: files containers do not need are left out, and dpkg keeps them out."]
    lines += [f"path-exclude {p}" for p in SLIM_EXCLUDE] + [f"path-include {p}" for p in SLIM_INCLUDE]
    _write(rootfs, "etc/dpkg/dpkg.cfg.d/docker", "\n".join(lines) + "\n", 0o644)
    for pattern in SLIM_EXCLUDE:
        top = os.path.join(rootfs, os.path.dirname(pattern).lstrip("/"))
        if not os.path.isdir(top):
            continue
        for folder, dirs, files in os.walk(top, topdown=False):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                path = os.path.join(folder, name)
                if not any(fnmatch.fnmatchcase("/" + os.path.relpath(path, rootfs), p) for p in SLIM_INCLUDE):
                    os.remove(path)
            if folder != top and not os.listdir(folder):
                os.rmdir(folder)
        for folder, _, files in os.walk(top, topdown=False):  # links left dangling by the removal above
            for name in files:
                path = os.path.join(folder, name)
                if os.path.islink(path) and not os.path.exists(path):
                    os.remove(path)


def _clean(rootfs: str) -> None:
    """Leave out the download caches and what names this host."""
    for rel in ("var/cache/apt", "var/lib/apt/lists", "dev"):
        folder = os.path.join(rootfs, rel)
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    for rel in ("var/log/bootstrap.log", "var/log/apt/history.log", "var/log/apt/term.log",
                "etc/apt/apt.conf.d/01autoremove-kernels"):
        path = os.path.join(rootfs, rel)
        if os.path.lexists(path):
            os.remove(path)
    os.chmod(rootfs, 0o755)


def _write(rootfs: str, rel: str, text: str, mode: int) -> None:
    path = os.path.join(rootfs, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path):
        os.remove(path)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)
