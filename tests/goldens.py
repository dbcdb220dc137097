"""Compare generated files with the committed goldens under tests/golden/ (opt-in update)."""

from __future__ import annotations

import os
import pathlib

import pytest

GOLDEN_ROOT = pathlib.Path(__file__).resolve().parent / "golden"


def updating(request: pytest.FixtureRequest) -> bool:
    """``pytest --update-goldens`` or SERVEGRAPH_UPDATE_GOLDENS=1."""
    try:
        flag = bool(request.config.getoption("--update-goldens"))
    except ValueError:
        flag = False
    return flag or os.environ.get("SERVEGRAPH_UPDATE_GOLDENS") == "1"


def assert_golden(request: pytest.FixtureRequest, rel_dir: str, files: dict[str, str]) -> None:
    """Every file equals its golden and no golden is missing or extra."""
    folder = GOLDEN_ROOT / rel_dir
    if updating(request):
        if folder.exists():
            for old in sorted(folder.rglob("*"), reverse=True):
                old.unlink() if old.is_file() else old.rmdir()
        for name, content in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        return
    if not folder.exists():
        pytest.fail(f"no goldens in {folder}; run pytest --update-goldens once and review the files")
    expected = {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*") if p.is_file()}
    assert sorted(files) == sorted(expected), f"file list differs from goldens in {folder}"
    for name, content in files.items():
        assert content == expected[name], f"{rel_dir}/{name} differs from its golden (pytest --update-goldens to accept)"
