"""Schemathesis against the frontend's own OpenAPI document, on a real `graph run pipelines/pd.py --mock`.

Every check schemathesis has, positive and negative cases: no 5xx, statuses, content types and
bodies (streamed events included) as documented, every request the document allows accepted and
every one it forbids refused. The seed is fixed so that CI runs the same cases each time
(``SG_FUZZ_SEED`` picks another, ``SG_FUZZ_EXAMPLES`` more cases per operation).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from tests.e2e import ROOT, RunningGraph, start_graph

pytestmark = pytest.mark.e2e_mock
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra: pip install -e '.[test]'")

MIN_CASES = 800


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> RunningGraph:
    # A small context keeps the longest answers the document allows short; speedup keeps them quick.
    knobs = "{speedup: 1000, max_model_len: 1024}"
    running = start_graph("pipelines/pd.py", tmp_path_factory.mktemp("fuzz") / "work", "--mock",
                          "--set", f"prefill.mock={knobs}", "--set", f"decode.mock={knobs}")
    yield running
    running.stop()


@pytest.mark.timeout(900)
def test_schemathesis_finds_nothing(graph: RunningGraph, tmp_path: pathlib.Path) -> None:
    seed = os.environ.get("SG_FUZZ_SEED", "3")
    examples = os.environ.get("SG_FUZZ_EXAMPLES", "150")
    cli = pathlib.Path(sys.executable).with_name("schemathesis")
    cmd = [str(cli), "run", f"http://127.0.0.1:{graph.port}/openapi.json", "--checks", "all", "--mode", "all",
           "--max-examples", examples, "--seed", seed, "--workers", "1", "--request-timeout", "60",
           "--report", "json", "--report-dir", str(tmp_path)]
    # One worker: Hypothesis describes strategies with ast.parse, which is not thread-safe on 3.11.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=840)
    took = time.monotonic() - start
    reports = sorted(tmp_path.glob("*.json"))
    assert reports, f"schemathesis wrote no report:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    report = json.loads(reports[-1].read_text())
    cases = report["test_cases"]
    print(f"\nschemathesis {report['schemathesis_version']}: {cases['generated']} cases, "
          f"{cases['with_failures']} failing, {cases['errored']} errored, in {took:.0f} s (seed {seed})")
    warnings = {name: found for name, found in report["warnings"].items() if found}
    found = done.stdout.partition("= FAILURES =")[2] or done.stdout.partition("= ERRORS =")[2] or done.stdout
    assert done.returncode == 0 and not report["failures"] and not report["errors"], found[:12000]
    assert not warnings, f"schemathesis warned (schema validation mismatch and the like): {warnings}"
    assert cases["generated"] >= MIN_CASES and cases["with_failures"] == 0 and cases["errored"] == 0, cases
    frontend_log = (graph.workdir / "logs" / "frontend-0.log").read_text(errors="replace")
    assert "Traceback" not in frontend_log, frontend_log[-4000:]
