"""A Slurm job that heals, on a real Slurm: a killed step is restarted in place while the frontend
routes around it, `graph status` shows it, and only the restart limit (or the frontend's end, or
scancel) ends the job.

Needs the local Slurm of scripts/slurm-local.sh; skips with the reason when it is absent or down.
Each test submits its own mock job with free ports, puts a streaming load on it where it says so
(tests/load.py), and cancels the job.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.e2e import http_json
from tests.load import run_load_with_fault
from tests.slurm_job import Job, jobs_in, skip_reason

pytestmark = pytest.mark.e2e_slurm

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = "meta-llama/Llama-3.1-8B-Instruct"

_SKIP = skip_reason()
if _SKIP:
    print(f"test_e2e_slurm_healing skipped: {_SKIP}")
    pytestmark = [pytestmark, pytest.mark.skip(reason=_SKIP)]


@pytest.fixture
def submit_job(tmp_path: pathlib.Path):
    with jobs_in(tmp_path, check_nothing_left=True, health_interval_s=0.2) as submit:
        yield submit


def graph_status(job: Job, *args: str) -> subprocess.CompletedProcess[str]:
    """`graph status JOB ARGS...` as a user runs it (80 columns)."""
    env = {**os.environ, "COLUMNS": "80", "XDG_STATE_HOME": str(job.workdir / "state")}
    return subprocess.run([sys.executable, "-m", "compiler.cli", "status", job.id, *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env)


def status_json(job: Job) -> dict:
    shown = graph_status(job, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def received(job: Job, service: str) -> list:
    """What the (current process of a) mock engine was sent."""
    status, data = http_json("GET", job.service_url(service) + "/mock/requests", timeout=5)
    assert status == 200, data
    return data if isinstance(data, list) else data.get("requests", [])


def load(job: Job, at_s: float, fault, seconds: float = 10, clients: int = 4):
    """``clients`` streaming clients for ``seconds``; ``fault()`` at ``at_s``."""
    return asyncio.run(run_load_with_fault(job.url + "/chat/completions", MODEL, clients, seconds, at_s, fault,
                                           stream=True))


def test_a_killed_decode_replica_is_restarted_in_place_and_no_request_fails(submit_job) -> None:
    job = submit_job("pd.py", "decode.replicas=2")
    job.wait_ready()
    before = status_json(job)["services"]["decode-1"]
    tally = load(job, 3, lambda: f"decode-1 (pid {job.kill('decode-1')})")
    print(f"\nkilled decode-1 of 2 under 4 streams x 10 s on Slurm: {tally.report()}")
    assert tally.failed == 0, tally.report()
    assert tally.served >= 20, tally.report()
    log = job.log()
    assert re.search(r"^servegraph: decode-1 on \S+ ended after \d+ s: killed \(SIGKILL\); restart 1 in 1 s "
                     r"\(1 of 5 in a row\)$", log, re.M), log
    assert re.search(r"^servegraph: decode-1 healthy again on \S+ \(restart 1, \d+ s after it started\)$", log, re.M), log
    after = job.wait_for(lambda: (s := status_json(job)["services"]["decode-1"])["healthy"] and s, "decode-1 healthy")
    assert after["restarts"] == 1 and after["state"] == "healthy" and after["last_exit"] == "killed (SIGKILL)", after
    assert after["step"] != before["step"] and after["processes"] != before["processes"], (before, after)
    assert job.status()["state"] == "serving" and job.state() == "RUNNING"
    # the new process serves again: the frontend sent it requests after its restart
    assert received(job, "decode-1"), "the restarted decode-1 got no request"
    # the table a person reads: every service with host, step, pid, restarts, health, within 80 columns
    shown = graph_status(job)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), shown.stdout
    row = next(line for line in lines if line.lstrip().startswith("decode-1 "))
    host, pid = after["processes"][0].split(":")
    assert re.search(rf"decode-1\s+{re.escape(after['step'])}\s+{host}:{pid}\s+healthy\s+1\s+killed \(SIGKILL\)\s+ok",
                     row), shown.stdout
    assert "health as seen from this host" in shown.stdout, shown.stdout


def test_the_only_prefill_killed_decode_serves_alone_until_it_is_back(submit_job) -> None:
    job = submit_job("pd.py")
    job.wait_ready()
    tally = load(job, 3, lambda: f"prefill-0 (pid {job.kill('prefill-0')})")
    print(f"\nkilled the only prefill under 4 streams x 10 s on Slurm: {tally.report()}")
    assert tally.failed == 0, tally.report()
    assert "servegraph: prefill-0 healthy again" in job.log(), job.log()
    # back in the rotation: the restarted prefill is sent prefills again
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello " * 40}], "max_tokens": 4}
    job.wait_for(lambda: http_json("POST", job.url + "/chat/completions", body)[0] == 200 and received(job, "prefill-0"),
                 "the restarted prefill-0 takes prefills again", 15)


def _ask(url: str, stream: bool) -> tuple[int, str | None, float]:
    """(status, Retry-After, seconds) of one request."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                       "stream": stream}).encode()
    req = urllib.request.Request(url + "/chat/completions", data=body, headers={"Content-Type": "application/json"})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return resp.status, None, time.monotonic() - start
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After"), time.monotonic() - start


def test_the_only_decode_killed_requests_fail_fast_with_503_and_retry_after_then_succeed(submit_job) -> None:
    job = submit_job("pd.py", restart_backoff_s=3)
    url = job.wait_ready()
    job.kill("decode-0")
    killed = time.monotonic()
    answers = []
    while time.monotonic() - killed < 30:
        answers.append((time.monotonic() - killed, *_ask(url, stream=len(answers) % 2 == 1)))
        if answers[-1][1] == 200:
            break
        time.sleep(0.2)
    print("\nthe only decode killed, restart after 3 s: " + ", ".join(f"{t:.1f}s:{s}" for t, s, _, _ in answers))
    down = [a for a in answers if a[1] != 200]
    assert answers[-1][1] == 200, f"never served again: {answers}\n{job.log()}"
    assert len(down) >= 5 and down[-1][0] >= 2.5, f"expected 503s for the 3 s backoff: {answers}"
    for t, status, retry_after, took in down:
        assert status == 503 and retry_after is not None and 1 <= int(retry_after) <= 5, answers
        assert took < 1.0, f"a 503 took {took:.2f} s: {answers}"
    assert answers[-1][0] < 3 + 10, f"served again only {answers[-1][0]:.1f} s after the kill"
    assert "servegraph: decode-0 healthy again" in job.log()


def test_a_service_that_keeps_dying_ends_the_job_at_the_restart_limit(submit_job) -> None:
    job = submit_job("agg.py", restart_limit=1)
    job.wait_ready()
    job.kill("worker-1")
    job.wait_for(lambda: "worker-1 healthy again" in job.log(), "worker-1 restarted")
    job.kill("worker-1")
    job.wait_for(lambda: not job.state(), "the job ended", 60)
    log = job.log()
    assert re.search(r"^servegraph: worker-1 on \S+ ended: killed \(SIGKILL\), after 1 restarts in a row; restart "
                     r"limit reached \(-O restart_limit=1\); stopping the graph \(see \S+/logs/worker-1.log\)$",
                     log, re.M), log
    assert "servegraph: all steps stopped (exit 1)" in log, log
    final = job.status()
    assert final["state"] == "ended" and "restart limit reached" in final["message"], final
    assert final["services"]["worker-1"]["state"] == "failed", final
    shown = graph_status(job)
    assert shown.returncode == 0 and "failed" in shown.stdout and "restart limit reached" in shown.stdout, \
        shown.stdout + shown.stderr
