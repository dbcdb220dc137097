"""Write a target's files into a folder without ever touching a file servegraph did not write.

A folder servegraph writes holds a marker, ``.servegraph-output`` (JSON), that
lists every file it wrote with the file's SHA-256. The next write into that
folder replaces exactly those files (and removes the ones no longer produced);
anything else in the folder — the user's notes, another target's output in a
subfolder — is left alone. A folder that is neither absent, empty nor marked is
refused, naming what is there. A file of ours that the user changed since is
refused too, unless ``force`` is given.

New files are written beside their final names first and renamed into place
only once all of them are written, so a failure while writing leaves the
previous output as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Any

import yaml

#: The marker that makes a folder servegraph's; it lists what servegraph wrote there.
MARKER = ".servegraph-output"  # JSON inside; no .json/.yaml suffix, so `kubectl apply -f DIR` skips it
#: Files whose name ends in one of these are made executable.
_EXECUTABLE_SUFFIXES = (".sh", ".sbatch")
#: How many foreign entries an error names before "and N more".
_SHOWN = 6


class OutputFolderError(Exception):
    """The folder holds something servegraph must not overwrite; the message says what and what to do."""


@dataclass
class WriteReport:
    """What :func:`write_output` did."""

    folder: str
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: Entries of the folder that servegraph did not write, left alone.
    kept: list[str] = field(default_factory=list)


def write_output(files: dict[str, str], out_dir: str, *, force: bool = False) -> WriteReport:
    """Write ``files`` (relative path -> content) into ``out_dir``.

    Args:
        files: the target's output.
        out_dir: the folder; created if absent.
        force: also write into a non-empty folder servegraph did not write (its
            files are kept, none may have one of our names), and overwrite or
            remove files of ours that were changed since servegraph wrote them.

    Returns:
        What was written, removed and kept.

    Raises:
        OutputFolderError: the folder is not servegraph's (without ``force``), a
            file of another owner has the name of one of ours, or a file of ours
            was changed (without ``force``).
    """
    folder = os.path.abspath(out_dir)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputFolderError(f"{out_dir} is a file, not a folder; name a folder for the output")
    for rel in files:
        _check_relative(rel)
    previous = _read_marker(folder)
    entries = sorted(e for e in (os.listdir(folder) if os.path.isdir(folder) else []) if e != MARKER)
    if previous is None and entries and not force:
        raise OutputFolderError(
            f"{out_dir} is not empty and servegraph did not write it (no {MARKER}): it holds "
            f"{_shown(entries)}. Name a new or empty folder, or add --force to write beside those "
            "(servegraph never deletes or overwrites a file it did not write)")
    ours = previous or {}
    _refuse_foreign_names(files, folder, ours, out_dir)
    stale = sorted(set(ours) - set(files))
    if not force:
        _refuse_changed(sorted(set(ours) & set(files)) + stale, folder, ours, out_dir)
    digests = {rel: _sha256(content.encode("utf-8")) for rel, content in files.items()}
    _write_all(folder, files)
    removed = [rel for rel in stale if _remove(folder, rel)]
    _write_marker(folder, digests)
    tops = {rel.split("/", 1)[0] for rel in files}
    kept = [e for e in entries if e not in tops and not any(rel.startswith(e + "/") or rel == e for rel in ours)]
    return WriteReport(folder=folder, written=sorted(files), removed=removed, kept=kept)


def is_servegraph_folder(path: str) -> bool:
    """True when ``path`` holds a readable marker (servegraph wrote it)."""
    return _read_marker(os.path.abspath(path)) is not None


def _check_relative(rel: str) -> None:
    parts = rel.split("/")
    if os.path.isabs(rel) or ".." in parts or rel == MARKER or not rel:
        raise ValueError(f"output file name {rel!r} must be a relative path inside the folder")


def _read_marker(folder: str) -> dict[str, str] | None:
    try:
        with open(os.path.join(folder, MARKER), encoding="utf-8") as fh:
            data = json.load(fh)
        listed = data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(listed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in listed.items()):
        return None
    return listed


def _refuse_foreign_names(files: dict[str, str], folder: str, ours: dict[str, str], out_dir: str) -> None:
    """A file (or folder) of another owner where one of ours goes is never replaced, even with --force."""
    clashes = sorted(rel for rel in files if rel not in ours and os.path.lexists(os.path.join(folder, rel)))
    if clashes:
        raise OutputFolderError(
            f"{out_dir} already holds {_shown(clashes)}, which servegraph did not write there, where its own "
            f"output goes. Move {'it' if len(clashes) == 1 else 'them'} away or name another folder")


def _refuse_changed(rels: list[str], folder: str, ours: dict[str, str], out_dir: str) -> None:
    changed = [rel for rel in rels if _changed(os.path.join(folder, rel), ours[rel])]
    if changed:
        raise OutputFolderError(
            f"{_shown([os.path.join(out_dir, r) for r in changed])} changed since servegraph wrote "
            f"{'it' if len(changed) == 1 else 'them'}; add --force to replace servegraph's files anyway, "
            "or copy your changes elsewhere first")


def _changed(path: str, digest: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return _sha256(fh.read()) != digest
    except FileNotFoundError:
        return False  # already gone: nothing to lose
    except OSError:
        return True


def _write_all(folder: str, files: dict[str, str]) -> None:
    """Every file to a temporary name beside its final one, then all renamed into place."""
    staged: list[tuple[str, str]] = []
    try:
        for rel, content in sorted(files.items()):
            final = os.path.join(folder, rel)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(final)}.", dir=os.path.dirname(final))
            staged.append((tmp, final))
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(content)
            os.chmod(tmp, 0o755 if rel.endswith(_EXECUTABLE_SUFFIXES) else 0o644)
    except BaseException:
        for tmp, _ in staged:
            _unlink(tmp)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)


def _remove(folder: str, rel: str) -> bool:
    """Remove a file of ours that is no longer produced, and folders it leaves empty."""
    path = os.path.join(folder, rel)
    if not _unlink(path):
        return False
    parent = os.path.dirname(path)
    while parent != folder and os.path.isdir(parent) and not os.listdir(parent):
        os.rmdir(parent)
        parent = os.path.dirname(parent)
    return True


def _write_marker(folder: str, digests: dict[str, str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f"{MARKER}.", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(to_json({"written_by": "servegraph", "files": digests}))
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(folder, MARKER))


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _shown(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def to_json(data: Any) -> str:
    """Deterministic JSON (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def to_yaml(data: Any) -> str:
    """Deterministic YAML (sorted keys, block style)."""
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False, width=120)


def to_yaml_docs(docs: list[Any]) -> str:
    """Several YAML documents in one file."""
    return "---\n".join(to_yaml(d) for d in docs)


def is_executable(path: str) -> bool:
    """True when the file has its owner-execute bit."""
    return bool(os.stat(path).st_mode & stat.S_IXUSR)
