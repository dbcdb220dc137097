"""The local Slurm cluster (scripts/slurm-local.sh) isolates its 8 fake GPUs correctly.

Real sbatch/srun/scancel against the running cluster; skips with a reason when Slurm is
absent or down. Start it with `sudo scripts/slurm-local.sh`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e_slurm

JOB_TIMEOUT_S = 60
NUM_GPUS = 8
UP_STATES = {"idle", "mixed", "allocated", "completing"}
# sbatch exports these from the job's GPU request; srun reads them back as its own
# request, so a step asking for 1 GPU inherits the job's whole GPU count unless unset.
INHERITED_GPU_ENV = "SLURM_GPUS SLURM_GPUS_PER_NODE SLURM_GPUS_PER_TASK SLURM_TRES_PER_TASK"


def _cluster_skip_reason() -> str | None:
    """Why the Slurm tests cannot run here, or None when the cluster is usable."""
    for tool in ("sbatch", "srun", "squeue", "scancel", "sinfo"):
        if shutil.which(tool) is None:
            return f"`{tool}` not on PATH; install and start it with scripts/slurm-local.sh"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=5
        )
    except subprocess.TimeoutExpired:
        return "sinfo timed out; slurmctld is not answering (run scripts/slurm-local.sh)"
    if states.returncode != 0 or not UP_STATES & set(states.stdout.split()):
        return (
            "no Slurm node is up (sinfo: "
            f"{(states.stdout + states.stderr).strip() or 'empty'}); run scripts/slurm-local.sh"
        )
    return None


_SKIP_REASON = _cluster_skip_reason()
if _SKIP_REASON:
    print(f"test_slurm_cluster skipped: {_SKIP_REASON}")
    pytestmark = [pytestmark, pytest.mark.skip(reason=_SKIP_REASON)]


def _sbatch(workdir: Path, script: str, *flags: str) -> str:
    """Submits a bash script body from workdir; returns the job id.

    Memory is asked per CPU: with a per-node --mem, a step without its own --mem takes
    the whole job's memory and concurrent steps serialize.
    """
    path = workdir / f"job{len(list(workdir.glob('job*.sh')))}.sh"
    path.write_text("#!/bin/bash\nset -eu\n" + script)
    out = subprocess.run(
        ["sbatch", "--parsable", "--mem-per-cpu=256M", f"--chdir={workdir}",
         f"--output={path.with_suffix('.out')}", *flags, str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return out.stdout.strip().split(";")[0]


def _wait_gone(job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Waits until the job has left the queue, else cancels it and fails."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queued = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=10
        )
        if not queued.stdout.strip():
            return
        time.sleep(0.3)
    subprocess.run(["scancel", job_id], timeout=10)
    pytest.fail(f"Slurm job {job_id} still queued/running after {timeout_s}s; cancelled it")


def _wait_file(path: Path, timeout_s: float = JOB_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.2)
    pytest.fail(f"{path} not written by the job within {timeout_s}s")


def _gpu_ids(text: str) -> list[int]:
    """Parses the `CVD=<ids>` line a job printed into GPU indices."""
    match = re.search(r"^CVD=([0-9,]*)$", text, re.M)
    assert match, f"job printed no CVD= line; output was:\n{text}"
    ids = [int(i) for i in match.group(1).split(",") if i]
    assert all(0 <= i < NUM_GPUS for i in ids), f"GPU ids out of range: {ids}"
    return ids


def test_two_gpus_per_node_job_sees_two_gpus(tmp_path: Path) -> None:
    job = _sbatch(tmp_path, 'echo "CVD=$CUDA_VISIBLE_DEVICES"\n', "--gpus-per-node=2")
    _wait_gone(job)
    ids = _gpu_ids((tmp_path / "job0.out").read_text())
    assert len(set(ids)) == 2, f"--gpus-per-node=2 gave CUDA_VISIBLE_DEVICES={ids}"


def test_concurrent_four_gpu_jobs_get_disjoint_gpus(tmp_path: Path) -> None:
    # Each job waits for the other's marker, which proves both ran at the same time.
    body = (
        'echo "CVD=$CUDA_VISIBLE_DEVICES" > ids.$1\n'
        "for _ in $(seq 100); do [ -e ids.$2 ] && break; sleep 0.3; done\n"
        "[ -e ids.$2 ] && echo overlapped >> ids.$1 || echo alone >> ids.$1\n"
    )
    jobs = []
    for me, other in (("a", "b"), ("b", "a")):
        script = f"set -- {me} {other}\n" + body
        jobs.append(_sbatch(tmp_path, script, "--gpus=4", "-n1"))
    for job in jobs:
        _wait_gone(job)
    a, b = ((tmp_path / f"ids.{x}").read_text() for x in "ab")
    assert "overlapped" in a and "overlapped" in b, f"jobs did not run concurrently:\n{a}\n{b}"
    ids_a, ids_b = _gpu_ids(a), _gpu_ids(b)
    assert len(set(ids_a)) == 4 and len(set(ids_b)) == 4, (ids_a, ids_b)
    assert not set(ids_a) & set(ids_b), f"concurrent jobs share GPUs: {ids_a} and {ids_b}"


def test_more_gpus_than_node_has_is_refused_at_submit(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sbatch", f"--chdir={tmp_path}", f"--gpus={NUM_GPUS + 1}", "--wrap", "true"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0, f"a {NUM_GPUS + 1}-GPU job was accepted: {result.stdout}"
    assert "Requested node configuration is not available" in result.stderr, result.stderr


def test_srun_steps_in_one_allocation_get_their_own_gpu(tmp_path: Path) -> None:
    step = (
        'srun --exact -n1 --gpus=1 bash -c \'echo "CVD=$CUDA_VISIBLE_DEVICES" > step.$1; '
        'for _ in $(seq 100); do [ -e step.$2 ] && break; sleep 0.3; done; '
        '[ -e step.$2 ] && echo overlapped >> step.$1\''
    )
    script = (
        f"unset {INHERITED_GPU_ENV}\n"
        f"{step} _ a b &\n{step} _ b a &\nwait\n"
    )
    job = _sbatch(tmp_path, script, "-n2", "--gpus-per-node=2")
    _wait_gone(job)
    a, b = ((tmp_path / f"step.{x}").read_text() for x in "ab")
    assert "overlapped" in a and "overlapped" in b, f"steps did not run concurrently:\n{a}\n{b}"
    ids_a, ids_b = _gpu_ids(a), _gpu_ids(b)
    assert len(ids_a) == 1 and len(ids_b) == 1, f"each step should see 1 GPU: {ids_a}, {ids_b}"
    assert ids_a != ids_b, f"both steps got GPU {ids_a}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    # A zombie waiting for its reaper is already dead for our purposes.
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


def test_scancel_kills_batch_and_step_processes(tmp_path: Path) -> None:
    script = (
        f"unset {INHERITED_GPU_ENV}\n"
        "sleep 600 & echo $! > pid.batch\n"
        "srun --exact -n1 --gpus=1 bash -c 'sleep 600 & echo $! > pid.s0; wait' &\n"
        "srun --exact -n1 --gpus=1 bash -c 'echo $$ > pid.s1; exec sleep 600' &\n"
        "wait\n"
    )
    job = _sbatch(tmp_path, script, "-n2", "--gpus-per-node=2")
    try:
        pids = {n: int(_wait_file(tmp_path / f"pid.{n}")) for n in ("batch", "s0", "s1")}
    except BaseException:
        subprocess.run(["scancel", job], timeout=10)
        raise
    assert all(_alive(p) for p in pids.values()), f"job processes not running: {pids}"
    subprocess.run(["scancel", job], timeout=10, check=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.2)
    survivors = {n: p for n, p in pids.items() if _alive(p)}
    assert not survivors, f"processes survived scancel {job}: {survivors}"
    _wait_gone(job)
