"""The supervisor running real processes (tests/fakes/fake_service.py) from hand-made Plans.

Each test runs ``python -m nodes.supervisor DIR`` as a subprocess, as `graph run`
would, and looks at what really happens: ports answering, pids in /proc,
process groups and sessions gone after a signal.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fakes.harness import (
    SupervisorProcess,
    alive_in,
    descendants,
    fake,
    free_ports,
    health,
    make_plan,
    proc_stat,
    wait_for,
)

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux (/proc, process groups)"),
]


@pytest.fixture
def supervise(tmp_path: Path):
    """Start a supervisor on a Plan; always cleaned up, even when the test fails."""
    started: list[SupervisorProcess] = []

    def start(plan, *flags: str) -> SupervisorProcess:
        sp = SupervisorProcess.for_plan(plan, tmp_path, *flags)
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.close()


def _tree_and_sessions(sp: SupervisorProcess) -> tuple[set[int], set[int]]:
    tree = descendants(sp.proc.pid)
    assert tree, f"no children under the supervisor:\n{sp.output}"
    sessions = {st[3] for st in (proc_stat(p) for p in tree) if st}
    return tree, sessions


def test_frontend_starts_only_after_its_dependencies_are_healthy(supervise) -> None:
    slow, fe = free_ports(2)
    plan = make_plan([
        fake("slow-0", slow, "--healthy-after", "1.0"),
        # exits with code 4 if slow-0 is not healthy when it starts
        fake("frontend-0", fe, "--require", f"http://127.0.0.1:{slow}/health", depends_on=("slow-0",), role="frontend"),
    ], "frontend-0")
    sp = supervise(plan)
    state = sp.wait_phase("running")
    out = sp.output
    assert out.index("healthy slow-0") < out.index("starting frontend-0")
    assert "is healthy" in (sp.workdir / "logs" / "frontend-0.log").read_text()
    assert state["services"]["frontend-0"]["healthy"] and state["services"]["slow-0"]["healthy"]
    assert health(fe) == 200
    assert f"http://127.0.0.1:{fe}/v1" in out
    assert sp.interrupt() == 0


def test_output_is_prefixed_and_logged_per_service(supervise) -> None:
    (port,) = free_ports(1)
    sp = supervise(make_plan([fake("frontend-0", port, "--say", "hello from the fake", role="frontend")], "frontend-0"))
    sp.wait_phase("running")
    wait_for(lambda: "hello from the fake" in sp.output, 5, "the echoed line")
    assert re.search(r"^frontend-0 \| hello from the fake$", sp.output, re.M)
    assert "hello from the fake" in (sp.workdir / "logs" / "frontend-0.log").read_text()
    assert sp.interrupt() == 0


def test_killed_service_is_restarted_and_healthy_again(supervise) -> None:
    worker, fe = free_ports(2)
    plan = make_plan([
        fake("worker-0", worker),
        fake("frontend-0", fe, depends_on=("worker-0",), role="frontend"),
    ], "frontend-0")
    sp = supervise(plan, "--backoff-initial", "0.2")
    old_pid = sp.wait_phase("running")["services"]["worker-0"]["pid"]
    os.kill(old_pid, signal.SIGKILL)

    def restarted():
        w = sp.state().get("services", {}).get("worker-0", {})
        return w if w.get("restarts") == 1 and w.get("healthy") and w.get("pid") not in (None, old_pid) else None

    w = wait_for(restarted, 15, "worker-0 restarted and healthy")
    assert health(worker) == 200
    assert proc_stat(w["pid"]) is not None
    assert w["last_exit"] == -signal.SIGKILL
    assert "worker-0 was killed by SIGKILL" in sp.output
    assert "worker-0 is healthy again (restart 1)" in sp.output
    assert sp.interrupt() == 0


def test_crash_loop_backs_off_exponentially_and_resets_after_a_healthy_spell(supervise) -> None:
    quick, steady, fe = free_ports(3)
    plan = make_plan([
        fake("quick-0", quick, "--crash-after", "0.2"),  # healthy 0.2 s: too short to reset the backoff
        fake("steady-0", steady, "--crash-after", "1.2"),  # healthy 1.2 s each time: resets it
        fake("frontend-0", fe, role="frontend"),
    ], "frontend-0")
    sp = supervise(plan, "--backoff-initial", "0.1", "--backoff-max", "0.4", "--backoff-reset", "0.6")
    sp.wait_phase("running")
    wait_for(lambda: len(re.findall(r"quick-0 .*; restart \d+ in", sp.output)) >= 5, 30, "5 restarts of quick-0")
    wait_for(lambda: len(re.findall(r"steady-0 .*; restart \d+ in", sp.output)) >= 2, 30, "2 restarts of steady-0")
    quick_delays = re.findall(r"quick-0 .*; restart \d+ in ([\d.]+) s", sp.output)[:5]
    steady_delays = re.findall(r"steady-0 .*; restart \d+ in ([\d.]+) s", sp.output)[:2]
    assert quick_delays == ["0.1", "0.2", "0.4", "0.4", "0.4"]
    assert steady_delays == ["0.1", "0.1"]
    assert health(fe) == 200  # the others kept serving
    assert sp.interrupt() == 0


def test_service_that_never_gets_healthy_fails_the_start_with_its_log_tail(supervise) -> None:
    good, bad, fe = free_ports(3)
    plan = make_plan([
        fake("good-0", good),
        fake("bad-0", bad, "--unhealthy", "--say", "marker: weights not found at /models/x", startup_timeout_s=1.5),
        fake("frontend-0", fe, depends_on=("good-0", "bad-0"), role="frontend"),
    ], "frontend-0")
    sp = supervise(plan)
    tree: set[int] = set()
    wait_for(lambda: tree.update(descendants(sp.proc.pid)) or sp.proc.poll() is not None, 20, "the supervisor to give up")
    out = sp.output
    assert sp.proc.returncode == 1, out
    assert "bad-0 failed to start: not healthy after 1.5 s" in out
    tail = out.split("bad-0 failed to start")[1]
    assert "marker: weights not found at /models/x" in tail
    assert "Traceback" not in out
    assert not (sp.workdir / "logs" / "frontend-0.log").exists() or "starting" not in (
        sp.workdir / "logs" / "frontend-0.log").read_text(), "the frontend must not start"
    assert health(good) is None
    assert not alive_in(tree, tree)


def test_service_that_exits_at_start_fails_fast(supervise) -> None:
    port, fe = free_ports(2)
    plan = make_plan([
        fake("broken-0", port, "--exit-code", "7", "--say", "config error: no such flag", startup_timeout_s=30),
        fake("frontend-0", fe, depends_on=("broken-0",), role="frontend"),
    ], "frontend-0")
    sp = supervise(plan)
    t0 = time.monotonic()
    assert sp.proc.wait(20) == 1
    assert time.monotonic() - t0 < 10, "must not wait for the 30 s start-up timeout"
    assert "broken-0 failed to start: exited with code 7 before it became healthy" in sp.output
    assert "config error: no such flag" in sp.output.split("failed to start")[1]


def test_sigint_removes_every_child_and_grandchild(supervise) -> None:
    a, b, fe = free_ports(3)
    plan = make_plan([
        fake("a-0", a, "--grandchild"),
        fake("b-0", b, "--grandchild"),
        fake("frontend-0", fe, "--grandchild", depends_on=("a-0", "b-0"), role="frontend"),
    ], "frontend-0")
    sp = supervise(plan)
    sp.wait_phase("running")
    wait_for(lambda: sp.output.count("grandchild pid") == 3, 5, "three grandchildren")
    tree, sessions = _tree_and_sessions(sp)
    assert len(tree) == 7  # 3 services + 3 grandchildren (which ignore SIGTERM) + the watchdog
    t0 = time.monotonic()
    assert sp.interrupt(signal.SIGINT) == 0
    wait_for(lambda: not alive_in(tree, sessions), 10 - (time.monotonic() - t0), "every process gone")
    assert time.monotonic() - t0 < 10
    assert sp.state()["phase"] == "stopped"
    for port in (a, b, fe):
        assert health(port) is None


def test_process_ignoring_sigterm_is_sigkilled(supervise) -> None:
    stubborn, fe = free_ports(2)
    plan = make_plan([
        fake("stubborn-0", stubborn, "--ignore-sigterm"),
        fake("frontend-0", fe, depends_on=("stubborn-0",), role="frontend"),
    ], "frontend-0")
    sp = supervise(plan, "--stop-timeout", "1")
    sp.wait_phase("running")
    tree, sessions = _tree_and_sessions(sp)
    t0 = time.monotonic()
    assert sp.interrupt(signal.SIGTERM) == 0
    took = time.monotonic() - t0
    assert 0.9 < took < 6, took
    assert "stubborn-0 did not exit within 1.0 s to stop after SIGTERM: SIGKILL" in sp.output
    assert not alive_in(tree, sessions)


def test_second_ctrl_c_kills_at_once(supervise) -> None:
    stubborn, fe = free_ports(2)
    plan = make_plan([
        fake("stubborn-0", stubborn, "--ignore-sigterm"),
        fake("frontend-0", fe, depends_on=("stubborn-0",), role="frontend"),
    ], "frontend-0")
    sp = supervise(plan, "--stop-timeout", "30")
    sp.wait_phase("running")
    tree, sessions = _tree_and_sessions(sp)
    t0 = time.monotonic()
    sp.proc.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping" in sp.output, 5, "the stop to begin")
    time.sleep(0.3)
    assert sp.interrupt(signal.SIGINT) == 0
    assert time.monotonic() - t0 < 8, "the second Ctrl-C must not wait for the 30 s stop timeout"
    assert not alive_in(tree, sessions)


def test_frontend_drains_in_flight_requests_before_the_rest_stop(supervise) -> None:
    backend, fe = free_ports(2)
    plan = make_plan([
        fake("backend-0", backend),
        fake("frontend-0", fe, depends_on=("backend-0",), role="frontend"),
    ], "frontend-0")
    sp = supervise(plan)
    sp.wait_phase("running")
    answer: dict[str, object] = {}

    def slow_request() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{fe}/slow?s=1.0", timeout=10) as resp:
            answer["status"], answer["body"] = resp.status, resp.read()

    client = threading.Thread(target=slow_request)
    client.start()
    wait_for(lambda: "/slow" in sp.output, 5, "the request to arrive")
    assert sp.interrupt(signal.SIGINT) == 0
    client.join(10)
    assert answer == {"status": 200, "body": b"slow done"}
    out = sp.output
    assert out.index("frontend-0 stopped") < out.index("backend-0 got SIGTERM"), "frontend first, then the rest"


def test_children_and_grandchildren_die_when_the_supervisor_is_sigkilled(supervise) -> None:
    a, fe = free_ports(2)
    plan = make_plan([fake("a-0", a, "--grandchild"), fake("frontend-0", fe, depends_on=("a-0",), role="frontend")],
                     "frontend-0")
    sp = supervise(plan)
    sp.wait_phase("running")
    wait_for(lambda: "grandchild pid" in sp.output, 5, "the grandchild")
    tree, sessions = _tree_and_sessions(sp)
    assert len(tree) >= 3  # 2 services + a grandchild that ignores SIGTERM (as vLLM's engine cores outlive their parent)
    sp.proc.kill()  # no chance to clean up: PR_SET_PDEATHSIG kills the children, the watchdog their sessions
    sp.proc.wait(5)
    wait_for(lambda: not alive_in(tree, sessions), 5, "children and grandchildren gone")


def test_port_in_use_is_a_clear_error_and_starts_nothing(supervise) -> None:
    worker, fe = free_ports(2)
    plan = make_plan([fake("worker-0", worker), fake("frontend-0", fe, depends_on=("worker-0",), role="frontend")],
                     "frontend-0")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", fe))
        squatter.listen()
        sp = supervise(plan)
        assert sp.proc.wait(20) == 1
    out = sp.output
    assert f"frontend-0 needs port {fe} (http): already in use by pid {os.getpid()}" in out
    assert "Traceback" not in out
    assert not (sp.workdir / "logs").exists(), "nothing may start"


def test_running_service_that_stops_answering_is_reported_not_killed(supervise) -> None:
    sick, fe = free_ports(2)
    plan = make_plan([
        fake("sick-0", sick, "--unhealthy-between", "1.0", "3.0"),
        fake("frontend-0", fe, depends_on=("sick-0",), role="frontend"),
    ], "frontend-0")
    sp = supervise(plan, "--liveness-interval", "0.2")
    pid = sp.wait_phase("running")["services"]["sick-0"]["pid"]
    wait_for(lambda: sp.state()["services"]["sick-0"]["status"] == "unhealthy", 10, "sick-0 reported unhealthy")
    assert "sick-0 is running but failed 3 health checks in a row (HTTP 503)" in sp.output
    wait_for(lambda: sp.state()["services"]["sick-0"]["healthy"], 10, "sick-0 healthy again")
    assert "sick-0 answers its health check again" in sp.output
    w = sp.state()["services"]["sick-0"]
    assert w["pid"] == pid and w["restarts"] == 0, "a slow-to-answer service must not be restarted"
    assert sp.interrupt() == 0


def test_restart_that_never_gets_healthy_is_retried_with_backoff(supervise, tmp_path: Path) -> None:
    flaky, fe = free_ports(2)
    once = tmp_path / "first-instance-ran"
    plan = make_plan([
        fake("flaky-0", flaky, "--crash-after", "0.2", "--healthy-once", str(once), startup_timeout_s=2.0),
        fake("frontend-0", fe, role="frontend"),
    ], "frontend-0")
    sp = supervise(plan, "--backoff-initial", "0.1", "--backoff-max", "0.4")
    sp.wait_phase("running")
    wait_for(lambda: sp.output.count("flaky-0 did not become healthy again: not healthy after 2 s") >= 2, 20,
             "two failed restarts")
    assert re.findall(r"flaky-0 .*; restart \d+ in ([\d.]+) s", sp.output)[:3] == ["0.1", "0.2", "0.4"]
    assert health(fe) == 200, "one service's crash loop must not touch the others"
    once.unlink()  # the next instance behaves again
    wait_for(lambda: "flaky-0 is healthy again" in sp.output, 20, "flaky-0 back")
    assert sp.interrupt() == 0
