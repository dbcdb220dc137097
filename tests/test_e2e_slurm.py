"""Compiled sbatch scripts on a real Slurm: mock graphs answer the openai client, each step sees only its
GPUs, scancel leaves no process, `graph submit`/`graph cancel` follow and stop a job, a too-big job is
refused with Slurm's reason.

Needs the local Slurm of scripts/slurm-local.sh (8 fake GPUs); skips with the reason when it is absent
or down. Each test submits its own job with free ports and cancels it.
"""

from __future__ import annotations

import base64
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import openai
import pytest
from PIL import Image

from compiler.cli.common import Overrides
from graph.plan import Plan
from compiler.plan import PlanOptions, plan
from compiler.targets import slurm
from compiler.targets.output import write_output
from compiler.load import load_spec
from tests.e2e import free_port_block, http_json

pytestmark = pytest.mark.e2e_slurm

ROOT = pathlib.Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 90
UP_STATES = {"idle", "mixed", "allocated", "completing"}
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}


def _skip_reason() -> str | None:
    for tool in ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "curl"):
        if shutil.which(tool) is None:
            return f"`{tool}` not on PATH; start a local Slurm with scripts/slurm-local.sh"
    try:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo timed out; slurmctld is not answering (run scripts/slurm-local.sh)"
    if states.returncode != 0 or not UP_STATES & set(states.stdout.split()):
        return f"no Slurm node is up ({(states.stdout + states.stderr).strip() or 'sinfo: empty'}); run scripts/slurm-local.sh"
    return None


_SKIP = _skip_reason()
if _SKIP:
    print(f"test_e2e_slurm skipped: {_SKIP}")
    pytestmark = [pytestmark, pytest.mark.skip(reason=_SKIP)]


class Job:
    """A compiled graph submitted with sbatch from ``workdir``."""

    def __init__(self, the_plan: Plan, workdir: pathlib.Path, options: slurm.Options) -> None:
        self.plan = the_plan
        self.workdir = workdir
        out = workdir / "out"
        write_output(slurm.render(the_plan, options), str(out))
        self.script = out / slurm.script_name(the_plan, options)
        self.submitted = time.monotonic()
        result = subprocess.run(["sbatch", "--parsable", str(self.script)], cwd=workdir,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"sbatch refused {self.script}: {result.stderr}"
        self.id = result.stdout.strip().split(";")[0]
        name = self.script.name.removesuffix(".sbatch")
        self.batch_log = workdir / f"{name}-{self.id}.out"
        self.run_dir = workdir / f"{name}-{self.id}"
        self.url = ""
        self.ready_after_s = 0.0

    def log(self, service: str | None = None) -> str:
        path = self.run_dir / "logs" / f"{service}.log" if service else self.batch_log
        return path.read_text(errors="replace") if path.exists() else f"({path} absent)"

    def state(self) -> str:
        q = subprocess.run(["squeue", "-h", "-j", self.id, "-o", "%T"], capture_output=True, text=True, timeout=10)
        return q.stdout.strip()

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

    def visible_gpus(self, service: str) -> list[int]:
        """The GPU ids the step wrapper logged for ``service``."""
        match = re.search(r"^sg-step: \S+ host=\S+ rank=\d+ CUDA_VISIBLE_DEVICES=(\S*)$", self.log(service), re.M)
        assert match, f"{service} logged no CUDA_VISIBLE_DEVICES:\n{self.log(service)}"
        return [int(i) for i in match.group(1).split(",") if i]

    def processes(self) -> dict[int, str]:
        """Live processes of this job: its SLURM_JOB_ID in their environment or its run folder in argv."""
        found = {}
        marker, folder = f"SLURM_JOB_ID={self.id}".encode(), str(self.run_dir).encode()
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
            if marker in env or folder in cmd:
                found[int(entry.name)] = cmd.replace(b"\0", b" ").decode(errors="replace")
        return found

    def cancel(self) -> None:
        subprocess.run(["scancel", self.id], timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.state():
            time.sleep(0.3)


def _plan(pipeline: str, *sets: str) -> Plan:
    """The mock graph, with free ports, our processes run by this interpreter."""
    base = free_port_block(100)
    spec = load_spec(str(ROOT / "pipelines" / pipeline), mock=True, sets=list(sets), port=base)[0]
    return plan(spec, PlanOptions(python=sys.executable, base_port=base + 1))


@pytest.fixture
def submit_job(tmp_path: pathlib.Path):
    jobs: list[Job] = []

    def _submit(pipeline: str, **options: object) -> Job:
        job = Job(_plan(pipeline), tmp_path / f"job{len(jobs)}", slurm.Options(**options))  # type: ignore[arg-type]
        jobs.append(job)
        return job

    yield _submit
    for job in jobs:
        if job.state():
            job.cancel()


def _assert_scancel_leaves_nothing(job: Job) -> None:
    before = job.processes()
    assert any("nodes.frontend" in c for c in before.values()), f"no frontend process found for job {job.id}: {before}"
    job.cancel()
    assert not job.state(), f"job {job.id} still queued after scancel"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and job.processes():
        time.sleep(0.3)
    assert not job.processes(), f"processes of job {job.id} survived scancel: {job.processes()}"
    assert "servegraph: all steps stopped" in job.log(), job.log()


def _image(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_pd_mock_answers_openai_with_isolated_gpus_and_scancel_leaves_nothing(submit_job) -> None:
    job = submit_job("pd.py", mock_gpus={"prefill": 1, "decode": 2})
    url = job.wait_ready()
    print(f"\nmock text P/D on Slurm: sbatch -> frontend answering in {job.ready_after_s:.2f} s (job {job.id})")
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
    model = job.plan.service("prefill-0").model
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello there"}],
                                           max_tokens=6)
    assert reply.model == model and reply.choices[0].message.content
    assert reply.usage.completion_tokens == 6 and reply.choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello there"}],
                                                 max_tokens=6, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content, "streamed text differs from the unstreamed answer"
    # Both engines took part: prefill got the remote-decode request, decode the KV handle.
    for service in ("prefill-0", "decode-0"):
        status, seen = http_json("GET", f"http://{url.split('//')[1].split(':')[0]}:"
                                 f"{job.plan.service(service).http_port}/mock/requests")
        assert status == 200 and seen, f"{service} received nothing: {seen}"
    # Each step saw only its GPUs: 1 and 2 distinct ids, disjoint; the frontend none.
    prefill, decode = job.visible_gpus("prefill-0"), job.visible_gpus("decode-0")
    assert len(prefill) == 1 and len(set(decode)) == 2, (prefill, decode)
    assert not set(prefill) & set(decode), f"prefill {prefill} and decode {decode} share a GPU"
    assert job.visible_gpus("frontend-0") == []
    _assert_scancel_leaves_nothing(job)


def test_e_p_d_mock_answers_image_and_text_requests(submit_job) -> None:
    job = submit_job("e_p_d.py")
    url = job.wait_ready()
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
    model = job.plan.service("prefill-0").model
    answers = set()
    for color in ((255, 0, 0), (0, 0, 255)):
        content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": _image(color)}}]
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                               max_tokens=8)
        answers.add(reply.choices[0].message.content)
    assert len(answers) == 2 and all(answers), f"two images should give two answers: {answers}"
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=4, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    host = url.split("//")[1].split(":")[0]
    encoded = sum(len(http_json("GET", f"http://{host}:{job.plan.service(s).http_port}/mock/requests")[1])
                  for s in ("encoder-0", "encoder-1"))
    assert encoded == 2, f"each image should go through an encoder once, saw {encoded}"
    for s in job.plan.services:
        assert job.visible_gpus(s.name) == [], f"{s.name} of a mock graph sees GPUs"
    _assert_scancel_leaves_nothing(job)


def test_submit_follows_until_ready_and_cancel_last_stops_it(tmp_path: pathlib.Path, monkeypatch, capsys) -> None:
    from compiler.cli.slurm_cmd import cancel, submit

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    base = free_port_block(20)
    with pytest.raises(SystemExit) as done:
        submit(str(ROOT / "pipelines/agg.py"), Overrides(mock=True), str(tmp_path / "out"), ["health_interval_s=0.2"],
               "gpu", wait=False, port=base, base_port=base + 1)
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    job_id = re.search(r"job (\d+)", out).group(1)
    assert re.search(rf"ready http://\S+:{base}/v1", out), out
    status, _ = http_json("GET", f"http://127.0.0.1:{base}/v1/models")
    assert status == 200
    with pytest.raises(SystemExit) as stopped:
        cancel(None)
    assert stopped.value.code == 0
    assert f"job {job_id} cancelled" in capsys.readouterr().out
    q = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True)
    assert not q.stdout.strip()


def test_submit_of_a_job_too_big_for_the_partition_shows_slurms_reason(tmp_path: pathlib.Path, monkeypatch,
                                                                        capsys) -> None:
    from compiler.cli.slurm_cmd import submit

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with pytest.raises(SystemExit) as refused:
        submit(str(ROOT / "pipelines/pd.py"), Overrides(mock=True), str(tmp_path / "out"),
               ["gpus_per_node=16", "mock_gpus={decode: 9}"], "gpu", wait=False)
    err = capsys.readouterr().err
    assert refused.value.code == 1
    assert "Slurm refused the job" in err and "Requested node configuration is not available" in err, err
    assert "--gpus-per-node=9" in err and "gpus_per_node" in err, err
    assert "Traceback" not in err


def test_submit_reports_a_service_that_fails_to_start(tmp_path: pathlib.Path, monkeypatch, capsys) -> None:
    import socket

    from compiler.cli.slurm_cmd import submit

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    base = free_port_block(20)
    with socket.socket() as squatter:  # worker-0's port is taken: the mock engine cannot listen
        squatter.bind(("0.0.0.0", base + 1))
        squatter.listen()
        with pytest.raises(SystemExit) as failed:
            submit(str(ROOT / "pipelines/agg.py"), Overrides(mock=True), str(tmp_path / "out"),
                   ["health_interval_s=0.2"], "gpu", wait=False, port=base, base_port=base + 1)
    captured = capsys.readouterr()
    err = captured.err
    assert failed.value.code == 1, captured.out + err
    assert re.search(r"job \d+ ended \(FAILED", err), err
    assert "worker-0 exited before it became healthy" in err and "already in use" in err, err
    assert "servegraph: all steps stopped (exit 1)" in err, err


def test_submit_wait_then_ctrl_c_cancels_the_job(tmp_path: pathlib.Path) -> None:
    import signal

    base = free_port_block(20)
    code = (
        "import sys; from compiler.cli.slurm_cmd import submit; from compiler.cli.common import Overrides; "
        f"submit({str(ROOT / 'pipelines/agg.py')!r}, Overrides(mock=True), 'out', ['health_interval_s=0.2'], "
        f"'gpu', wait=True, port={base}, base_port={base + 1})"
    )
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    log = tmp_path / "submit.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and "following the job" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert "following the job" in text, text
        job_id = re.search(r"job (\d+)", text).group(1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"job {job_id} cancelled" in log.read_text()
    assert not subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip()
