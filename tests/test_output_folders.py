"""Output folders: servegraph writes only into folders that are absent, empty or its own, replaces only
the files it wrote, and never deletes or overwrites a file it did not write (compile, submit, run)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from compiler.cli import app
from compiler.targets.output import MARKER, OutputFolderError, is_servegraph_folder, write_output

ROOT = pathlib.Path(__file__).resolve().parent.parent
PD = str(ROOT / "pipelines" / "pd.py")


def _compile(out: pathlib.Path, *args: str, target: str = "local") -> object:
    return CliRunner().invoke(app, ["compile", PD, "--target", target, "-o", str(out), "--mock", *args])


def test_a_folder_with_other_work_is_refused_and_left_as_it_was(tmp_path: pathlib.Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "run.csv").write_text("1,2")
    result = _compile(tmp_path)
    assert result.exit_code == 1
    assert "is not empty and servegraph did not write it" in result.output
    assert "data, thesis.tex" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "thesis.tex"]
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_force_writes_beside_other_work_and_touches_none_of_it(tmp_path: pathlib.Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = _compile(tmp_path, "--force")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "launch.sh").exists() and is_servegraph_folder(str(tmp_path))
    assert "left alone (not servegraph's): notes.txt" in result.output


def test_force_never_overwrites_a_file_servegraph_did_not_write(tmp_path: pathlib.Path) -> None:
    (tmp_path / "launch.sh").write_text("#!/bin/sh\necho my own launcher\n")
    result = _compile(tmp_path, "--force")
    assert result.exit_code == 1
    assert "launch.sh, which servegraph did not write there" in " ".join(result.output.split())
    assert "my own launcher" in (tmp_path / "launch.sh").read_text()


def test_readme_sequence_keeps_every_target(tmp_path: pathlib.Path) -> None:
    """`-o out/`, then `-o out/k8s` and `-o out/slurm`, then `-o out/` again: the subfolders stay."""
    out = tmp_path / "out"
    assert _compile(out).exit_code == 0
    assert _compile(out / "k8s", target="k8s").exit_code == 0
    assert _compile(out / "slurm", target="slurm").exit_code == 0
    (out / "my-notes.md").write_text("keep")
    again = _compile(out)
    assert again.exit_code == 0, again.output
    assert (out / "k8s" / "kustomization.yaml").exists() and any((out / "slurm").glob("*.sbatch"))
    assert (out / "my-notes.md").read_text() == "keep"


def test_files_servegraph_no_longer_produces_are_removed_and_only_those(tmp_path: pathlib.Path) -> None:
    write_output({"a.txt": "1", "sub/b.txt": "2", "c.txt": "3"}, str(tmp_path))
    (tmp_path / "sub" / "mine.txt").write_text("user")
    report = write_output({"a.txt": "1"}, str(tmp_path))
    assert sorted(report.removed) == ["c.txt", "sub/b.txt"]
    assert not (tmp_path / "c.txt").exists() and not (tmp_path / "sub" / "b.txt").exists()
    assert (tmp_path / "sub" / "mine.txt").read_text() == "user", "a folder with the user's file must stay"
    assert json.loads((tmp_path / MARKER).read_text())["files"].keys() == {"a.txt"}


def test_a_file_changed_since_servegraph_wrote_it_needs_force(tmp_path: pathlib.Path) -> None:
    assert _compile(tmp_path).exit_code == 0
    (tmp_path / "launch.sh").write_text((tmp_path / "launch.sh").read_text() + "# my tweak\n")
    refused = _compile(tmp_path)
    assert refused.exit_code == 1 and "changed since servegraph wrote it" in refused.output
    assert "# my tweak" in (tmp_path / "launch.sh").read_text()
    forced = _compile(tmp_path, "--force")
    assert forced.exit_code == 0 and "# my tweak" not in (tmp_path / "launch.sh").read_text()


def test_a_failed_write_leaves_the_previous_output(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up while the second file is written: both files keep their old content, no temporaries."""
    write_output({"a.txt": "old", "b.txt": "old"}, str(tmp_path))
    real_fdopen, opened = os.fdopen, []

    def fdopen_that_fails_second(fd: int, *args: object, **kw: object):
        opened.append(fd)
        if len(opened) == 2:
            os.close(fd)
            raise OSError(28, "No space left on device")
        return real_fdopen(fd, *args, **kw)

    monkeypatch.setattr(os, "fdopen", fdopen_that_fails_second)
    with pytest.raises(OSError, match="No space left"):
        write_output({"a.txt": "new", "b.txt": "new"}, str(tmp_path))
    monkeypatch.undo()
    assert (tmp_path / "a.txt").read_text() == "old" and (tmp_path / "b.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER, "a.txt", "b.txt"], "temporary files were left"


def test_a_file_where_the_folder_should_be_is_refused(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(OutputFolderError, match="is a file"):
        write_output({"a.txt": "1"}, str(target))


def test_kubectl_reads_no_marker_as_a_manifest(tmp_path: pathlib.Path) -> None:
    """`kubectl apply -f DIR` takes .json/.yaml/.yml files: the marker has none of those suffixes."""
    assert not MARKER.endswith((".json", ".yaml", ".yml"))
    result = _compile(tmp_path, target="k8s")
    assert result.exit_code == 0
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed here; `graph doctor` says how to get it")
    kustomize = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True)
    assert kustomize.returncode == 0, kustomize.stderr
