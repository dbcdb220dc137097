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
import subprocess
import sys
import time

import openai
import pytest
from PIL import Image

from compiler.cli.common import Overrides
from tests.e2e import free_port_block, http_json
from tests.slurm_job import READY_TIMEOUT_S, Job, jobs_in, skip_reason

pytestmark = pytest.mark.e2e_slurm

ROOT = pathlib.Path(__file__).resolve().parent.parent

_SKIP = skip_reason()
if _SKIP:
    print(f"test_e2e_slurm skipped: {_SKIP}")
    pytestmark = [pytestmark, pytest.mark.skip(reason=_SKIP)]


@pytest.fixture
def submit_job(tmp_path: pathlib.Path):
    with jobs_in(tmp_path) as submit:
        yield submit


def _assert_scancel_leaves_nothing(job: Job) -> None:
    before = job.processes()
    assert any("nodes.frontend" in c for c in before.values()), f"no frontend process found for job {job.id}: {before}"
    job.cancel()
    assert not job.state(), f"job {job.id} still queued after scancel"
    job.assert_nothing_left()
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


def test_a_node_of_your_own_runs_from_the_code_the_script_carries(submit_job) -> None:
    """pipelines/redacted_pd.py: the redactor's code travels in the sbatch script (a heredoc beside its
    config) and rewrites streamed and whole answers alike; the step is our process, run by its code."""
    job = submit_job("redacted_pd.py", r"redact.pattern=\b[a-m]\w*", "redact.mask=XX", "redact.hold=8")
    url = job.wait_ready()
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
    model = job.plan.service("prefill-0").model
    messages = [{"role": "user", "content": "tell me something"}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=24).choices[0].message.content
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=24, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "XX" in whole and streamed == whole, (whole, streamed)
    assert not re.search(r"\b[a-m]\w*", whole.replace("XX", "")), whole
    assert any("nodes.custom" in c for c in job.processes().values())
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
    # again: Slurm still remembers the job, which has ended; scancel itself would say nothing of it
    with pytest.raises(SystemExit) as again:
        cancel(job_id)
    assert again.value.code == 0
    assert re.search(rf"job {job_id} has already ended \(CANCELLED\); nothing to cancel", capsys.readouterr().out)
    with pytest.raises(SystemExit) as unknown:  # an id Slurm never gave: an error, not "cancelled"
        cancel("987654321")
    assert unknown.value.code == 1
    out, err = capsys.readouterr()
    assert "cancelled" not in out and "no job 987654321 to cancel" in err, out + err


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


def test_submit_shows_hosts_and_restarts_as_they_happen_and_ctrl_c_cancels_the_job(tmp_path: pathlib.Path) -> None:
    """`graph submit` (following) prints which host runs which service once the job starts, and each
    restart of a service while it follows; Ctrl-C cancels the job."""
    import json
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
        host = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True).stdout.strip()
        assert f"| servegraph: host {host} (node 0) runs worker-0, worker-1, frontend-0" in text, text
        assert text.index("runs worker-0") < text.index("ready http://"), text
        status = json.loads((tmp_path / f"llama-agg-{job_id}" / "status.json").read_text())
        os.kill(int(status["services"]["worker-1"]["processes"][0].split(":")[1]), signal.SIGKILL)
        while time.monotonic() < deadline and "worker-1 healthy again" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert re.search(r"\| servegraph: worker-1 on \S+ ended after \d+ s: killed \(SIGKILL\); restart 1 in 1 s "
                         r"\(1 of 5 in a row\)", text), text
        assert re.search(r"\| servegraph: worker-1 healthy again on \S+ \(restart 1, ", text), text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"job {job_id} cancelled" in log.read_text()
    assert not subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip()
