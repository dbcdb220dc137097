"""`graph run`: the Plan it supervises, its workdir, and its errors (before any engine is needed)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.cli.common import Overrides
from compiler.cli.run_cmd import prepare
from compiler.targets.output import write_output
from tests.e2e import ROOT, free_port_block, http_json, process_tree
from tests.fakes.harness import alive_in, wait_for

PD = str(ROOT / "pipelines" / "pd.py")


def graph_run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "compiler.cli", "run", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def test_port_moves_the_frontend_and_base_port_the_others() -> None:
    plan = prepare(PD, Overrides(mock=True), "cpu", 18555, 19100)
    fe = plan.service(plan.frontend)
    assert fe.http_port == 18555 and fe.health.port == 18555
    assert fe.config is not None and fe.config["port"] == 18555
    others = [s for s in plan.services if s.name != plan.frontend]
    assert others and all(19100 <= s.http_port < 19200 for s in others)
    assert all(s.argv[0] == sys.executable for s in plan.services), "our nodes must run on this interpreter"


def test_base_port_moves_every_port_but_the_frontend() -> None:
    moved = prepare(PD, Overrides(mock=True), "cpu", None, 30000)
    ports = sorted(p for s in moved.services if s.name != moved.frontend for p in s.ports.values())
    assert ports and all(30000 <= p < 30040 for p in ports), ports


def test_port_inside_the_base_range_is_kept_clear_of_the_others() -> None:
    plan = prepare(PD, Overrides(mock=True), "cpu", 19100, 19100)
    ports = [p for s in plan.services for p in s.ports.values()]
    assert plan.service(plan.frontend).http_port == 19100
    assert len(ports) == len(set(ports))


def test_taken_frontend_port_is_a_clear_error_with_the_fix() -> None:
    port, base = free_port_block(1), free_port_block(10)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        done = graph_run(PD, "--mock", "--port", str(port), "--base-port", str(base))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert f"frontend-0 needs port {port} (http): already in use by pid {os.getpid()}" in out
    assert re.search(r"fix: --port \d+ moves the frontend", out)
    assert "Traceback" not in out
    temp = re.search(r"files in (\S+)", out)
    assert temp and not Path(temp.group(1)).exists(), "the temporary workdir must be removed on exit"


def test_taken_service_port_suggests_base_port() -> None:
    port, base = free_port_block(1), free_port_block(10)
    taken = prepare(PD, Overrides(mock=True), "gpu", port, base).service("decode-0").http_port
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", taken))
        squatter.listen()
        done = graph_run(PD, "--mock", "--port", str(port), "--base-port", str(base))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert f"decode-0 needs port {taken} (http): already in use" in out
    assert f"moves the other services' ports (now from {base})" in out


def test_workdir_that_is_not_a_previous_run_is_refused(tmp_path: Path) -> None:
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    done = graph_run(PD, "--mock", "--workdir", str(tmp_path))
    assert done.returncode == 2
    assert "is not empty and servegraph did not write it" in done.stderr
    assert keep.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_workdir_of_a_running_graph_is_refused(tmp_path: Path) -> None:
    write_output({"plan.json": "{}"}, str(tmp_path))
    (tmp_path / "state.json").write_text(json.dumps({"phase": "running", "supervisor_pid": os.getpid()}))
    done = graph_run(PD, "--mock", "--workdir", str(tmp_path))
    assert done.returncode == 2
    assert f"is in use by a running `graph run` (pid {os.getpid()})" in done.stderr
    assert (tmp_path / "state.json").exists()


def test_bad_base_port_is_refused() -> None:
    done = graph_run(PD, "--mock", "--base-port", "80")
    assert done.returncode == 2
    assert "Invalid value for '--base-port': 80 is not in the range 1024<=x<=65000" in done.stderr


def _mock_runtime_missing() -> str | None:
    for module in ("nodes.mock.__main__", "nodes.frontend.__main__"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} does not exist yet"
        except ImportError as exc:
            return f"{module}: {exc}"
    return None


@pytest.mark.e2e_mock
@pytest.mark.timeout(120)
def test_graph_run_pd_mock_serves_then_stops_clean(tmp_path: Path) -> None:
    missing = _mock_runtime_missing()
    if missing:
        pytest.skip(f"needs the mock engine and frontend: {missing}")
    port, base = free_port_block(1), free_port_block(20)
    work = tmp_path / "work"
    log = tmp_path / "graph-run.out"
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", "run", PD, "--mock", "--port", str(port),
                                 "--base-port", str(base), "--workdir", str(work)], cwd=ROOT, stdout=fh,
                                stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(log.read_text())
            # The supervisor prints its banner, then records phase=running: wait for both.
            return "ready:" in log.read_text() and json.loads((work / "state.json").read_text())["phase"] == "running"

        wait_for(ready, 90, "graph run to be ready")
        ready_s = time.monotonic() - t0
        print(f"graph run pipelines/pd.py --mock: ready in {ready_s:.2f} s")
        out = log.read_text()
        assert f"http://127.0.0.1:{port}/v1" in out
        assert "curl http://127.0.0.1:" in out and "meta-llama/Llama-3.1-8B-Instruct" in out
        state = json.loads((work / "state.json").read_text())
        assert state["phase"] == "running"
        assert sorted(state["services"]) == ["decode-0", "frontend-0", "prefill-0"]
        assert all(s["healthy"] and s["pid"] for s in state["services"].values())
        status, models = http_json("GET", f"http://127.0.0.1:{port}/v1/models")
        assert status == 200, models
        for name in state["services"]:
            assert (work / "logs" / f"{name}.log").stat().st_size > 0
        tree = process_tree(proc.pid) - {proc.pid}
        t1 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        wait_for(lambda: not alive_in(tree, set(tree)), 10 - (time.monotonic() - t1), "every child gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
