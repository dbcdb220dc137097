"""Paths, users and copies inside a root filesystem seen from the host.

A path in the image is resolved the way a process chrooted into it would
resolve it: an absolute symlink (Debian has ``/var/run -> /run``) restarts at
the image's root, never at the host's, and ``..`` stops at the root. COPY and
WORKDIR write through :func:`host_path` only, so no Dockerfile can write
outside the image.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from dataclasses import dataclass

_MAX_LINKS = 40


def host_path(root: str, path: str) -> str:
    """The host path of the image path ``path`` (absolute) in ``root``, every symlink in it followed inside root.

    Components that do not exist yet are appended as they are.

    Raises:
        OSError: too many levels of symlinks.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(f"too many symlinks resolving {path} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def makedirs(root: str, path: str, uid: int = 0, gid: int = 0) -> str:
    """``mkdir -p`` of the image path ``path``, new folders mode 0755 owned by uid:gid; returns its host path."""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = posixpath.join(current, part)
        target = host_path(root, current)
        if not os.path.isdir(target):
            os.mkdir(target, 0o755)
            os.lchown(target, uid, gid)
    return host_path(root, path)


@dataclass(frozen=True)
class Identity:
    """A process identity inside the image: uid, gid, supplementary groups and home folder."""

    uid: int
    gid: int
    groups: list[int]
    home: str


def identity(root: str, user: str) -> Identity:
    """Resolve a USER value (``name``, ``uid``, ``name:group``, ``uid:gid``; empty for root) in the image.

    Raises:
        ValueError: a name the image's /etc/passwd or /etc/group does not have.
    """
    name, _, group = (user or "root").partition(":")
    passwd = _table(root, "/etc/passwd")
    entry = next((e for e in passwd if e[0] == name or e[2] == name), None)
    if entry is None and not name.isdigit():
        raise ValueError(f"user {name!r} is not in the image's /etc/passwd")
    uid = int(entry[2]) if entry else int(name)
    home = entry[5] if entry else "/"
    groups_table = _table(root, "/etc/group")
    if group:
        match = next((g for g in groups_table if g[0] == group or g[2] == group), None)
        if match is None and not group.isdigit():
            raise ValueError(f"group {group!r} is not in the image's /etc/group")
        gid = int(match[2]) if match else int(group)
    else:
        gid = int(entry[3]) if entry else uid
    login = entry[0] if entry else None
    extra = [int(g[2]) for g in groups_table if login and login in g[3].split(",")]
    return Identity(uid, gid, sorted({gid, *extra}), home)


def owner(root: str, chown: str) -> tuple[int, int]:
    """uid, gid of a COPY --chown value; a user without a group means gid = uid, as in Docker."""
    name, _, group = chown.partition(":")
    uid = identity(root, name).uid
    return uid, identity(root, f"{name}:{group}").gid if group else uid


def copy_entry(source: str, target: str, uid: int, gid: int) -> None:
    """Copy one file, symlink or folder (not its contents) from the host to ``target``, mode and mtime kept."""
    if os.path.islink(source):
        if os.path.lexists(target):
            os.remove(target)
        os.symlink(os.readlink(source), target)
    elif os.path.isdir(source):
        if not os.path.isdir(target):
            os.mkdir(target)
        shutil.copystat(source, target)
    else:
        if os.path.islink(target) or os.path.isdir(target):
            raise IsADirectoryError(f"{target} exists and is not a file")
        shutil.copy2(source, target)
    os.lchown(target, uid, gid)


def remove_tree(path: str) -> None:
    """``rm -rf path`` (a bundle or a root filesystem), refused while anything is mounted inside it.

    Raises:
        RuntimeError: a mount point lies inside ``path`` (removing would reach into the mounted filesystem).
    """
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.remove(path)
        return
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        mounted = [line.split()[4] for line in fh if line.split()[4].startswith(real + "/")]
    if mounted:
        raise RuntimeError(f"{mounted[0]} is still mounted: not removing {path}")
    shutil.rmtree(path)


def _table(root: str, path: str) -> list[list[str]]:
    try:
        with open(host_path(root, path), encoding="utf-8") as fh:
            return [line.rstrip("\n").split(":") for line in fh if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []
