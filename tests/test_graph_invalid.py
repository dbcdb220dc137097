"""Every broken pipeline in tests/invalid/ fails `graph validate` with its own message.

Each file says what it must produce, in its docstring:

* ``codes:`` the exact problem codes (``--json``), or ``load-error`` when the file
  cannot be loaded at all;
* ``expect:`` text that must appear in the human output (one per line);
* ``args:`` extra command-line arguments (optional);

and marks with ``# expect-at: CODE`` the line each problem must point at.
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
from typer.testing import CliRunner

from compiler.cli import app

ROOT = pathlib.Path(__file__).resolve().parent.parent
INVALID = sorted((ROOT / "tests" / "invalid").glob("*.py"))


@dataclass
class Case:
    """What one broken pipeline must produce."""

    path: str
    codes: list[str]
    expect: list[str]
    args: list[str]
    at: list[tuple[str, int]] = field(default_factory=list)


def _case(path: pathlib.Path) -> Case:
    # Read as text, not with ast: some cases are not even valid Python.
    text = path.read_text()
    meta = {key: [m.strip() for m in re.findall(rf"^{key}:(.*)$", text, re.M)] for key in ("codes", "expect", "args")}
    at = [(m.group(1), n) for n, line in enumerate(text.splitlines(), 1) if (m := re.search(r"# expect-at: (\S+)", line))]
    return Case(
        path=str(path.relative_to(ROOT)),
        codes=meta["codes"][0].split() if meta["codes"] else [],
        expect=meta["expect"],
        args=shlex.split(meta["args"][0]) if meta["args"] else [],
        at=at,
    )


def _flat(text: str) -> str:
    """Whitespace collapsed, so a terminal's line wrapping cannot break a match."""
    return " ".join(text.split())


def _validate(case: Case, *extra: str):
    return CliRunner().invoke(app, ["validate", case.path, *case.args, *extra])


def test_enough_cases() -> None:
    """The issue asks for at least 20 broken pipelines, each declaring what it must produce."""
    cases = [_case(p) for p in INVALID]
    assert len(cases) >= 20
    for case in cases:
        assert case.codes and case.expect, f"{case.path} lacks codes: or expect:"
    rules = {c for case in cases for c in case.codes}
    assert len(rules) >= 20, sorted(rules)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_pipeline_is_reported(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    case = _case(path)
    result = _validate(case)
    output = _flat(result.output)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for text in case.expect:
        assert _flat(text) in output, f"missing {text!r} in:\n{result.output}"
    for code, line in case.at:
        marker = f"{case.path}:{line}:" if code == "load-error" else f"{case.path}:{line} [{code}]"
        assert marker in output, f"no {code} at line {line} in:\n{result.output}"


@pytest.mark.parametrize("path", [p for p in INVALID if "load-error" not in _case(p).codes], ids=lambda p: p.stem)
def test_invalid_pipeline_json(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exactly the expected problems, no noisy extras, each at its line."""
    monkeypatch.chdir(ROOT)
    case = _case(path)
    result = _validate(case, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert sorted(e["code"] for e in report["errors"]) == sorted(case.codes)
    located = {(e["code"], e["where"]["line"]) for e in report["errors"] if e["where"]}
    for code, line in case.at:
        assert (code, line) in located, report["errors"]
    for e in report["errors"]:
        assert e["message"] and e["hint"], e
        if e["where"]:
            assert e["where"]["file"] == case.path


def test_real_command_reports_without_traceback() -> None:
    """The installed console script, end to end, on a file that raises."""
    case = _case(ROOT / "tests" / "invalid" / "pipeline_raises.py")
    graph = pathlib.Path(sys.executable).with_name("graph")
    proc = subprocess.run([str(graph), "validate", case.path], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "ZeroDivisionError" in proc.stderr
