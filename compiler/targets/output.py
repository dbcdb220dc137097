"""Write a target's files atomically: all of them or none, never a half-written folder."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from typing import Any

import yaml

#: Files whose name ends in one of these are made executable.
_EXECUTABLE_SUFFIXES = (".sh", ".sbatch")


def write_output(files: dict[str, str], out_dir: str) -> None:
    """Replace ``out_dir`` with exactly ``files``.

    The files are written into a sibling temporary folder which then takes
    ``out_dir``'s place, so a failure leaves the previous output as it was.
    """
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=parent)
    try:
        for rel, content in sorted(files.items()):
            path = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(content)
            mode = 0o755 if rel.endswith(_EXECUTABLE_SUFFIXES) else 0o644
            os.chmod(path, mode)
        os.chmod(tmp, 0o755)
        old = None
        if os.path.exists(out_dir):
            old = out_dir + ".old-" + os.path.basename(tmp)
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
