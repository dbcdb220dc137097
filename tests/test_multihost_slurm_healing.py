"""A graph's Slurm job across the hosts of the multi-host bed heals: a replica killed on another host
is restarted there, and a lost host takes only its own services, the other hosts serving on.

Needs the bed up (CI runs `scripts/multihost.sh up` first); skips with the reason otherwise. The
mock P/D graph is placed as GPU engines would be (one GPU each, -O mock_gpus): frontend and
prefill on the first host, decode-0 on the second, decode-1 on the third.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from compiler.targets import slurm
from tests import multihost
from tests.e2e import http_json
from tests.load import run_load_with_fault
from tests.slurm_job import Job, mock_plan

pytestmark = pytest.mark.e2e_multihost

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = "meta-llama/Llama-3.1-8B-Instruct"

_SKIP = multihost.skip_reason()
HOSTS: list[multihost.Host] = [] if _SKIP else multihost.hosts()
if not _SKIP and len(HOSTS) < 3:
    _SKIP = f"the bed has {len(HOSTS)} hosts, these tests need 3: run scripts/multihost.sh up"
if _SKIP:
    print(f"test_multihost_slurm_healing skipped: {_SKIP}")
    pytestmark = [pytestmark, pytest.mark.skip(reason=_SKIP)]
SLURM_ENV = {} if _SKIP else multihost.slurm_env()


@pytest.fixture
def pd_job(tmp_path: pathlib.Path):
    options = slurm.Options(gpus_per_node=1, mock_gpus={"prefill": 1, "decode": 1}, health_interval_s=0.2)
    job = Job(mock_plan("pd.py", "decode.replicas=2"), tmp_path / "job", options, env=SLURM_ENV)
    yield job
    if job.state():
        job.cancel()
    job.assert_nothing_left()


def test_the_batch_log_names_each_services_host_and_a_killed_replica_is_restarted_on_its_host(pd_job: Job) -> None:
    job = pd_job
    job.wait_ready(timeout=180)
    h1, h2, h3 = (h.name for h in HOSTS[:3])
    log = job.log()
    for line in (f"servegraph: host {h1} (node 0) runs prefill-0, frontend-0",
                 f"servegraph: host {h2} (node 1) runs decode-0", f"servegraph: host {h3} (node 2) runs decode-1"):
        assert line in log, log
    assert job.url == f"http://{h1}:{job.plan.service('frontend-0').http_port}/v1"
    old = job.kill("decode-0")
    job.wait_for(lambda: "decode-0 healthy again" in job.log(), "decode-0 restarted", 30)
    assert re.search(rf"^servegraph: decode-0 on {h2} ended after \d+ s: killed \(SIGKILL\); restart 1 ", job.log(), re.M)
    processes = job.status()["services"]["decode-0"]["processes"]
    assert len(processes) == 1 and processes[0].startswith(f"{h2}:") and processes[0] != f"{h2}:{old}", processes
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
    assert all(http_json("POST", job.url + "/chat/completions", body)[0] == 200 for _ in range(4))
    # health as the job's first node sees it (for a submit host that cannot reach the compute nodes)
    seen = graph_status(job, "--from-job", "--json")
    assert seen["health_from"] == f"inside the job ({h1}, through srun)", seen
    assert all(s["healthy"] for s in seen["services"].values()), seen
    assert seen["services"]["decode-0"]["restarts"] == 1, seen


def graph_status(job: Job, *args: str) -> dict:
    env = {**os.environ, **SLURM_ENV, "COLUMNS": "80"}
    shown = subprocess.run([sys.executable, "-m", "compiler.cli", "status", job.id, *args], capture_output=True,
                           text=True, timeout=60, cwd=ROOT, env=env)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_a_lost_host_leaves_the_other_hosts_serving_and_the_job_running(pd_job: Job) -> None:
    job = pd_job
    job.wait_ready(timeout=180)
    lost = HOSTS[2].name
    job.wait_alone_on(lost)

    def lose() -> str:
        subprocess.run([str(multihost.SCRIPT), "lose", lost], check=True, capture_output=True, timeout=30)
        return f"host {lost}"

    try:
        tally = asyncio.run(run_load_with_fault(job.url + "/chat/completions", MODEL, 4, 12, 3, lose, stream=True))
        print(f"\nlost {lost} (decode-1) under 4 streams x 12 s on Slurm: {tally.report()}")
        assert tally.failed == 0, tally.report()
        assert tally.served >= 20, tally.report()
    finally:
        # `up` brings the host back and sets its node DOWN first, as Slurm does for a host that
        # rebooted: the job's step there ends, and Slurm takes the node out of the job
        up = subprocess.run([str(multihost.SCRIPT), "up"], capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
    job.wait_for(lambda: job.status()["services"]["decode-1"]["state"] == "lost", "decode-1 reported lost", 60)
    assert job.state() == "RUNNING", job.log()
    assert re.search(rf"^servegraph: decode-1 lost with node {lost} \(Slurm took it out of the job\); not restarted",
                     job.log(), re.M), job.log()
    status = job.status()
    assert status["state"] == "serving" and status["lost_nodes"] == [lost], status
    assert {s["state"] for n, s in status["services"].items() if n != "decode-1"} == {"healthy"}, status
    body = {"model": MODEL, "messages": [{"role": "user", "content": "still there?"}], "max_tokens": 4}
    assert all(http_json("POST", job.url + "/chat/completions", body)[0] == 200 for _ in range(4))
    seen = graph_status(job, "--json")
    assert seen["services"]["decode-1"]["state"] == "lost" and seen["services"]["decode-1"]["healthy"] is None, seen
    assert seen["services"]["decode-0"]["healthy"] is True and seen["slurm_state"] == "RUNNING", seen
