"""Graphs submitted to the multi-host bed's Slurm with `graph submit`, for the e2e_multihost tests and benches.

    with GraphJob("pipelines/pd.py", workdir, "--mock", "-O", "network=tcp", ...) as job:
        job.hosts["decode-0"]            # ["sg-h2"]: where each service's step runs (from its log)
        job.url                          # http://sg-h1:PORT/v1
        job.metrics("decode-0")          # its /metrics, on its own host
    # the job is cancelled and gone from the queue
    job.assert_nothing_left()            # and no process of it lives on, on any host

The Plan is compiled in this process exactly as `graph submit` compiles it (same options, ports and
interpreter), so the test knows every service's ports without reading the generated script.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time
from typing import Any

from compiler.cli import common
from compiler.cli.slurm_cmd import compiled_for_slurm
from compiler.targets import slurm
from graph.plan import Plan
from tests import multihost
from tests.e2e import ROOT, free_port_block, http_json, metrics
from tests.slurm_job import cluster_name, job_processes

#: `graph submit` returns once the frontend answers; real engines on 2 shared cores start in 45-65 s each.
SUBMIT_TIMEOUT_S = float(os.environ.get("SERVEGRAPH_MULTIHOST_SUBMIT_TIMEOUT", "600"))
_STEP_LINE = re.compile(r"sg-step: (\S+) host=(\S+) rank=(\d+)")


class GraphJob:
    """A graph submitted with `graph submit --no-wait` on the bed's Slurm; cancelled on exit.

    Args:
        pipeline: the pipeline file, relative to the repository.
        workdir: folder to submit from (the job's run folder and batch log land there).
        args: `graph submit` flags: --mock, --set, --device, --model, -O KEY=VALUE ...
        env: extra environment for `graph submit` (the job's steps inherit it).
    """

    def __init__(self, pipeline: str, workdir: pathlib.Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.pipeline, self.workdir, self.args = pipeline, workdir, list(args)
        self.env = multihost.slurm_env(PYTHONUNBUFFERED="1", **(env or {}))
        self.port = free_port_block(1)
        self.base_port = free_port_block(40)
        self.plan = self._compile()
        self.job_id = ""
        self.url = ""
        self.output = ""

    def _compile(self) -> Plan:
        """The Plan `graph submit` builds from the same flags."""
        overrides = common.Overrides(port=self.port)
        opts: list[str] = []
        device = "gpu"
        it = iter(self.args)
        for arg in it:
            if arg == "--mock":
                overrides.mock = True
            elif arg == "--set":
                overrides.sets.append(next(it))
            elif arg == "--model":
                overrides.model = next(it)
            elif arg in ("-O", "--opt"):
                opts.append(next(it))
            elif arg == "--device":
                device = next(it)
            else:
                raise ValueError(f"GraphJob does not know the flag {arg!r}")
        return compiled_for_slurm(str(ROOT / self.pipeline), overrides, opts, device, self.port, self.base_port).plan

    def __enter__(self) -> GraphJob:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "compiler.cli", "submit", str(ROOT / self.pipeline), "--no-wait",
               "-o", str(self.workdir / "out"), "--port", str(self.port), "--base-port", str(self.base_port),
               *self.args]
        try:
            done = subprocess.run(cmd, cwd=self.workdir, env=self.env, capture_output=True, text=True,
                                  timeout=SUBMIT_TIMEOUT_S)
            self.output = done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            self.output = f"{exc.stdout or ''}{exc.stderr or ''}\n(graph submit timed out after {SUBMIT_TIMEOUT_S}s)"
            done = None
        found = re.search(r"job (\d+)", self.output)
        self.job_id = found.group(1) if found else ""
        ready = re.search(r"ready (http://\S+/v1)", self.output)
        if done is None or done.returncode != 0 or not ready:
            text = f"graph submit failed:\n{self.output}\n{self.log()}"
            self.cancel()
            raise AssertionError(text)
        self.url = ready.group(1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        """scancel the job and wait until it has left the queue."""
        if not self.job_id:
            return
        subprocess.run(["scancel", self.job_id], env=self.env, capture_output=True, timeout=30)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            q = subprocess.run(["squeue", "-h", "-j", self.job_id, "-o", "%T"], env=self.env, capture_output=True,
                               text=True, timeout=30)
            if not q.stdout.strip():
                return
            time.sleep(0.5)
        raise AssertionError(f"job {self.job_id} still in the queue 90 s after scancel")

    def processes(self) -> dict[int, str]:
        """Live processes of the job (pid -> command line), on every host: the bed's hosts share one /proc."""
        return job_processes(self.job_id, cluster_name(self.env), self.run_dir) if self.job_id else {}

    def assert_nothing_left(self, timeout: float = 30) -> None:
        """No process of the job outlives it (call after the job has left the queue)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.5)
        left = self.processes()
        assert not left, f"processes of job {self.job_id} outlived it: {left}"

    @property
    def run_dir(self) -> pathlib.Path:
        return self.workdir / f"{self.plan.graph}-{self.job_id}"

    @property
    def script(self) -> str:
        """The sbatch script `graph submit` wrote."""
        return (self.workdir / "out" / slurm.script_name(self.plan)).read_text()

    def log(self, service: str | None = None) -> str:
        """A service's log, or the batch log."""
        batch_log = self.workdir / f"{self.plan.graph}-{self.job_id}.out"
        path = self.run_dir / "logs" / f"{service}.log" if service else batch_log
        return path.read_text(errors="replace") if path.exists() else f"({path} absent)"

    @property
    def hosts(self) -> dict[str, list[str]]:
        """Service -> the hosts its step runs on, by rank (each step's wrapper logs its host and rank)."""
        out: dict[str, list[str]] = {}
        for s in self.plan.services:
            ranks = {int(r): h for name, h, r in _STEP_LINE.findall(self.log(s.name)) if name == s.name}
            out[s.name] = [ranks[r] for r in sorted(ranks)]
        return out

    def service_url(self, service: str) -> str:
        """http://HOST:PORT of a service, on the host it runs on (its leader's for a multi-host one)."""
        return f"http://{self.hosts[service][0]}:{self.plan.service(service).http_port}"

    def metrics(self, service: str) -> dict[str, float]:
        return metrics(self.service_url(service))

    def get(self, service: str, path: str) -> Any:
        status, data = http_json("GET", self.service_url(service) + path, timeout=30)
        assert status == 200, f"{service} {path}: HTTP {status} {data}"
        return data
