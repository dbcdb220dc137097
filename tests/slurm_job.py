"""A compiled graph submitted to a real Slurm with sbatch, for the e2e_slurm and e2e_multihost tests.

    job = Job(plan, tmp_path / "job0", slurm.Options(...))    # compiles and sbatches from that folder
    url = job.wait_ready()                                      # ".../v1" once the frontend answers
    job.status()["services"]["decode-1"]["restarts"]            # the batch script's status.json
    job.kill("decode-1")                                        # SIGKILL of the service's process
    job.cancel()

``env`` selects the cluster (the multi-host bed's ``SLURM_CONF``; default: this environment's).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

import pytest

from compiler.load import load_spec
from compiler.plan import PlanOptions, plan
from compiler.targets import slurm
from compiler.targets.output import write_output
from graph.plan import Plan
from tests.e2e import free_port_block, http_json

ROOT = pathlib.Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 90
UP_STATES = {"idle", "mixed", "allocated", "completing"}
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}


def skip_reason(env: dict[str, str] | None = None) -> str | None:
    """Why no job can run on the cluster ``env`` selects, or None."""
    for tool in ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "curl"):
        if shutil.which(tool) is None:
            return f"`{tool}` not on PATH; start a local Slurm with scripts/slurm-local.sh"
    try:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=10, env=env)
    except subprocess.TimeoutExpired:
        return "sinfo timed out; slurmctld is not answering (run scripts/slurm-local.sh)"
    if states.returncode != 0 or not UP_STATES & set(states.stdout.split()):
        return f"no Slurm node is up ({(states.stdout + states.stderr).strip() or 'sinfo: empty'}); run scripts/slurm-local.sh"
    return None


def mock_plan(pipeline: str, *sets: str) -> Plan:
    """The mock graph, with free ports, our processes run by this interpreter."""
    base = free_port_block(100)
    spec = load_spec(str(ROOT / "pipelines" / pipeline), mock=True, sets=list(sets), port=base)[0]
    return plan(spec, PlanOptions(python=sys.executable, base_port=base + 1))


def cluster_name(env: dict[str, str] | None) -> str:
    """The ClusterName of the cluster ``env`` selects ("" if scontrol does not say)."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=10, env=env)
    match = re.search(r"^ClusterName\s*=\s*(\S+)", out.stdout, re.M)
    return match.group(1) if match else ""


def job_processes(job_id: str, cluster: str, run_dir: pathlib.Path) -> dict[int, str]:
    """Live processes of a job (pid -> command line): its cluster's SLURM_JOB_ID in their environment, which
    every descendant of its steps inherits whatever it renamed itself to, or its run folder in argv."""
    found = {}
    marker, folder = f"SLURM_JOB_ID={job_id}".encode(), str(run_dir).encode()
    cluster_marker = f"SLURM_CLUSTER_NAME={cluster}".encode()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in env and cluster_marker in env or folder in cmd:
            found[int(entry.name)] = cmd.replace(b"\0", b" ").decode(errors="replace")
    return found


class Job:
    """A compiled graph submitted with sbatch from ``workdir``."""

    def __init__(self, the_plan: Plan, workdir: pathlib.Path, options: slurm.Options,
                 env: dict[str, str] | None = None) -> None:
        self.plan = the_plan
        self.workdir = workdir
        self.env = env
        out = workdir / "out"
        write_output(slurm.render(the_plan, options), str(out))
        self.script = out / slurm.script_name(the_plan, options)
        self.submitted = time.monotonic()
        result = subprocess.run(["sbatch", "--parsable", str(self.script)], cwd=workdir,
                                capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 0, f"sbatch refused {self.script}: {result.stderr}"
        self.id = result.stdout.strip().split(";")[0]
        self.cluster = cluster_name(env)
        name = self.script.name.removesuffix(".sbatch")
        self.batch_log = workdir / f"{name}-{self.id}.out"
        self.run_dir = workdir / f"{name}-{self.id}"
        self.url = ""
        self.ready_after_s = 0.0

    def log(self, service: str | None = None) -> str:
        path = self.run_dir / "logs" / f"{service}.log" if service else self.batch_log
        return path.read_text(errors="replace") if path.exists() else f"({path} absent)"

    def state(self) -> str:
        q = subprocess.run(["squeue", "-h", "-j", self.id, "-o", "%T"], capture_output=True, text=True,
                           timeout=10, env=self.env)
        return q.stdout.strip()

    def status(self) -> dict[str, Any]:
        """The batch script's status.json ({} before it wrote one)."""
        try:
            return json.loads((self.run_dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def service_url(self, service: str) -> str:
        """http://HOST:PORT of a service, its host as the job placed it."""
        host = self.status()["services"][service]["hosts"][0]
        return f"http://{host}:{self.plan.service(service).http_port}"

    def pid(self, service: str) -> int:
        """The service's process (on its host; hosts share this machine's pid namespace)."""
        processes = self.status()["services"][service]["processes"]
        assert processes, f"{service} has no process in status.json: {self.status()}"
        return int(processes[0].split(":")[1])

    def kill(self, service: str) -> int:
        """SIGKILL the service's process, as a crash would; returns its pid."""
        pid = self.pid(service)
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> str:
        """Until the frontend answers /v1/models; returns the URL ending in /v1."""
        deadline = time.monotonic() + timeout
        port = self.plan.service(self.plan.frontend).http_port
        while time.monotonic() < deadline:
            match = re.search(r"^servegraph: ready at (\S+)$", self.log(), re.M)
            if match:
                status, _ = http_json("GET", match.group(1) + "/models", timeout=3)
                if status == 200:
                    self.url, self.ready_after_s = match.group(1), time.monotonic() - self.submitted
                    return self.url
            elif self.state() not in LIVE_STATES:
                pytest.fail(f"job {self.id} ended before ready ({self.state() or 'gone'}):\n{self.log()}")
            time.sleep(0.1)
        self.cancel()
        pytest.fail(f"job {self.id}: frontend (port {port}) not ready in {timeout} s:\n{self.log()}")

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        """Polls ``predicate`` until it returns something true (returned); fails with the batch log after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        pytest.fail(f"job {self.id}: {what}: not within {timeout} s\nbatch log:\n{self.log()}\n"
                    f"status: {json.dumps(self.status(), indent=1)}")

    def visible_gpus(self, service: str) -> list[int]:
        """The GPU ids the step wrapper logged for ``service``."""
        match = re.search(r"^sg-step: \S+ host=\S+ rank=\d+ pid=\d+ CUDA_VISIBLE_DEVICES=(\S*)$", self.log(service), re.M)
        assert match, f"{service} logged no CUDA_VISIBLE_DEVICES:\n{self.log(service)}"
        return [int(i) for i in match.group(1).split(",") if i]

    def processes(self) -> dict[int, str]:
        """Live processes of this job: its cluster's SLURM_JOB_ID in their environment or its run folder in argv."""
        return job_processes(self.id, self.cluster, self.run_dir)

    def wait_alone_on(self, host: str, timeout: float = 120) -> None:
        """Until no other job has a step on ``host`` (before losing it: the bed is shared)."""
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(["squeue", "-h", "-s", "-w", host, "-o", "%i"], capture_output=True, text=True,
                                 timeout=10, env=self.env)
            others = sorted({step.split(".")[0] for step in out.stdout.split()} - {self.id})
            if not others:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"jobs {', '.join(others)} still run on {host} after {timeout:g} s; not losing it under them")
            time.sleep(1)

    def cancel(self) -> None:
        subprocess.run(["scancel", self.id], timeout=30, env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.state():
            time.sleep(0.3)

    def assert_nothing_left(self, timeout: float = 20) -> None:
        """No process of the job survives it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.3)
        assert not self.processes(), f"processes of job {self.id} survived it: {self.processes()}"


@contextlib.contextmanager
def jobs_in(folder: pathlib.Path, check_nothing_left: bool = False,
            **defaults: object) -> Iterator[Callable[..., "Job"]]:
    """``submit(pipeline, *sets, **options)`` for one test: each job in a folder of its own under ``folder``
    (options over ``defaults``); every job still queued is cancelled at the end."""
    jobs: list[Job] = []

    def submit(pipeline: str, *sets: str, **options: object) -> Job:
        job = Job(mock_plan(pipeline, *sets), folder / f"job{len(jobs)}",
                  slurm.Options(**{**defaults, **options}))  # type: ignore[arg-type]
        jobs.append(job)
        return job

    try:
        yield submit
    finally:
        for job in jobs:
            if job.state():
                job.cancel()
            if check_nothing_left:
                job.assert_nothing_left()
