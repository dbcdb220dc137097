"""`graph submit` and `graph cancel`: compile for Slurm, sbatch, follow the job, cancel it.

The sbatch script is the authority on start-up (it waits for health with the
Plan's timeouts and exits if a service fails), so following a job needs no
timeout of its own: a job waits in the queue as long as the cluster makes it,
and once it runs it either prints ``servegraph: ready at URL`` or ends.
Following shows the batch log's own lines as they come (which host runs which
service, each service healthy, every restart and lost node); ``graph status``
(slurm_status.py) shows the job's state at any time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from rich.markup import escape

from graph.plan import Plan

from ..plan import PlanOptions
from ..targets import slurm
from ..targets.slurm_script import READY_PREFIX
from . import common
from .common import Overrides, console, err_console, fail
from .compile_cmd import print_kept, write_files
from .target_options import parse_target_options

POLL_S = 1.0
#: Job states in which the job may still serve (or start to).
LIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")
#: Seconds a cancelled job may take to leave the queue before we stop waiting.
CANCEL_WAIT_S = 60.0
_LAST_JOB_FILE = "slurm-last-job.json"


@dataclass(frozen=True)
class Submitted:
    """A submitted graph job."""

    job_id: str
    graph: str
    script: str
    batch_log: str


def submit(pipeline: str, overrides: Overrides, out: str, opts: list[str], device: str, wait: bool,
           *, port: int | None = None, base_port: int = 8100, force: bool = False) -> None:
    """Compile ``pipeline`` for Slurm into ``out``, sbatch it and follow the job until the frontend answers.

    Args:
        pipeline: the pipeline file.
        overrides: --mock/--model/--set/--graph from the command line.
        out: folder for the sbatch script (only files servegraph wrote there are replaced).
        opts: slurm target options, ``KEY=VALUE`` (see ``graph targets``).
        device: gpu, or cpu to run engines on CPU.
        wait: after the URL is printed, keep following the job until it ends (Ctrl-C cancels it);
            without it, return once the frontend answers and leave the job running.
        port: the frontend's port (default: the graph's).
        base_port: first port of the other services.
        force: write into a folder servegraph did not write (see ``write_output``).

    Raises:
        SystemExit: 0 when ready (or, with ``wait``, when the job ended after being ready),
            1 when sbatch refused the job or the job ended before the frontend answered,
            130 after Ctrl-C (the job is cancelled).
    """
    _require_slurm()
    result = compiled_for_slurm(pipeline, overrides, opts, device, port, base_port)
    the_plan, options = result.plan, result.options
    print_kept(write_files(result.files, out, force))
    script = os.path.join(os.path.abspath(out), slurm.script_name(the_plan, options))
    # Ctrl-C must cancel the job even when SIGINT came in ignored (started with `&` from a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    job = _sbatch(script, the_plan)
    console.print(f"[bold]graph submit[/] {pipeline}: job [bold]{job.job_id}[/] (graph '{the_plan.graph}', "
                  f"{len(the_plan.services)} services); script {script}", soft_wrap=True)
    console.print(f"  batch log {job.batch_log}; cancel with `graph cancel {job.job_id}`", soft_wrap=True)
    log = BatchLog(job.batch_log)
    try:
        url = follow_until_ready(job, log)
        console.print(f"[green]ready[/] {url}/v1  ({time.monotonic() - started:.1f} s after sbatch); "
                      f"`graph status {job.job_id}` shows services, hosts, restarts and health", soft_wrap=True)
        if not wait:
            raise SystemExit(0)
        console.print("following the job; Ctrl-C cancels it")
        state = follow_until_end(job.job_id, log)
        console.print(f"job {job.job_id} ended: {state}")
        raise SystemExit(0 if state.startswith("COMPLETED") else 1)
    except KeyboardInterrupt:
        err_console.print(f"\ncancelling job {job.job_id} ...")
        _scancel(job.job_id)
        raise SystemExit(130) from None


def cancel(job: str | None) -> None:
    """``scancel`` a job and wait until it has left the queue.

    Args:
        job: a job id, or None / ``--last`` / ``last`` for the job the last ``graph submit`` started.

    Raises:
        SystemExit: 1 when no job is known or scancel refuses, 0 once the job is gone.
    """
    _require_slurm()
    if job in (None, "--last", "last"):
        last = load_last()
        if last is None:
            fail("no job to cancel: `graph submit` has not started one here; give a job id (squeue lists them)", 1)
        job = last.job_id
        console.print(f"cancelling job {job} (graph '{last.graph}', the last `graph submit`)")
    if not re.fullmatch(r"\d+(_\d+)?", job):
        fail(f"'{job}' is not a Slurm job id; give a number such as 1234 or --last", 2)
    queued = run_tool(["squeue", "-h", "-j", job, "-o", "%T"])
    if queued.returncode != 0 or not queued.stdout.strip():
        # scancel exits 0 for a job id Slurm does not know (22.05), so say here what there was to cancel
        state, reason = job_state(job)
        if state == "UNKNOWN":
            fail(f"no job {job} to cancel: it is not in Slurm's queue and neither scontrol nor sacct knows it (an "
                 "ended job is forgotten after a few minutes without accounting); squeue lists the queued ones", 1)
        console.print(f"job {job} has already ended ({state}); nothing to cancel")
        raise SystemExit(0)
    _scancel(job)
    raise SystemExit(0)


class BatchLog:
    """The batch log, read as it grows: each call to :meth:`show_new` prints the lines added since."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0

    def show_new(self) -> None:
        """Print the complete lines written since the last call (indented, as they are)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            console.print(f"  | {line}", markup=False, highlight=False, soft_wrap=True)


def follow_until_ready(job: Submitted, log: BatchLog) -> str:
    """Print the job's state changes and its batch log until its frontend answers; returns the URL
    (without /v1).

    Raises:
        SystemExit(1): the job ended first (its state, reason and the batch log's tail are printed).
    """
    last = ""
    while True:
        state, reason = job_state(job.job_id)
        shown = shown_state(state, reason)
        if shown != last:
            console.print(f"  job {job.job_id}: {shown}")
            last = shown
        log.show_new()
        if state not in LIVE_STATES:
            err_console.print(f"[bold red]error:[/] job {job.job_id} ended ({shown}) before the frontend answered", soft_wrap=True)
            _print_tail(job.batch_log, err=True)
            raise SystemExit(1)
        url = _ready_url(job.batch_log)
        if url and _answers(url + "/health"):
            return url
        time.sleep(POLL_S)


def follow_until_end(job_id: str, log: BatchLog) -> str:
    """Print the batch log as it grows (restarts, lost nodes) until the job leaves the queue; returns
    its final state."""
    while True:
        log.show_new()
        state, reason = job_state(job_id)
        if state not in LIVE_STATES:
            log.show_new()
            return shown_state(state, reason)
        time.sleep(POLL_S)


def shown_state(state: str, reason: str) -> str:
    """A job's state for a line of output: "STATE (reason)", or STATE alone when Slurm gives no reason."""
    return f"{state} ({reason})" if reason and reason != "None" else state


def job_state(job_id: str) -> tuple[str, str]:
    """(state, reason) from squeue while queued, else from scontrol or sacct; ("UNKNOWN", why) if none knows."""
    q = run_tool(["squeue", "-h", "-j", job_id, "-o", "%T|%r"])
    if q.returncode == 0 and q.stdout.strip():
        state, _, reason = q.stdout.strip().splitlines()[0].partition("|")
        return state, reason
    s = run_tool(["scontrol", "-o", "show", "job", job_id])
    if s.returncode == 0 and "JobState=" in s.stdout:
        fields = dict(re.findall(r"(\w+)=(\S*)", s.stdout))
        return fields.get("JobState", "UNKNOWN"), fields.get("Reason", "")
    a = run_tool(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode"])
    if a.returncode == 0 and a.stdout.strip():
        state, _, code = a.stdout.strip().splitlines()[0].partition("|")
        return state.split()[0], f"exit code {code}"
    return "UNKNOWN", "the job left the queue and neither scontrol nor sacct knows it"


# --- helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmCompiled:
    """A pipeline compiled for ``graph submit``."""

    plan: Plan
    options: slurm.Options
    files: dict[str, str]


def compiled_for_slurm(pipeline: str, overrides: Overrides, opts: list[str], device: str,
                       port: int | None = None, base_port: int = 8100) -> SlurmCompiled:
    """The sbatch script to submit, every check made (the GPU budget of the options too); problems
    printed and exit 1.

    Our processes run under this interpreter (the job inherits this shell's
    environment) unless ``container_image`` puts them in a container.
    """
    if device not in ("gpu", "cpu"):
        fail(f"--device must be gpu or cpu, not '{device}'")
    target = slurm.SlurmTarget()
    options = parse_target_options(target, opts)
    overrides = Overrides(**{**overrides.__dict__, "port": port if port is not None else overrides.port})
    python = "python" if options.container_image else sys.executable
    result = common.compiled(pipeline, overrides, target, options,
                             PlanOptions(device=device, base_port=base_port, python=python))
    return SlurmCompiled(result.plan, options, result.files)


def _require_slurm() -> None:
    missing = [t for t in ("sbatch", "squeue", "scancel", "scontrol") if shutil.which(t) is None]
    if missing:
        fail(f"{', '.join(missing)} not found: `graph submit` runs on a Slurm login node "
             "(or `graph compile --target slurm -o out/` and copy out/ there)", 1)


def _sbatch(script: str, the_plan: Plan) -> Submitted:
    result = run_tool(["sbatch", "--parsable", script], timeout=120)
    if result.returncode != 0:
        # Printed unwrapped: Slurm's reason must stay greppable on one line.
        err_console.print(f"[bold red]error:[/] {escape(explain_sbatch_error(result.stderr or result.stdout, script))}",
                          soft_wrap=True, highlight=False)
        raise SystemExit(1)
    job_id = result.stdout.strip().splitlines()[-1].split(";")[0]
    name = os.path.basename(script).removesuffix(".sbatch")
    job = Submitted(job_id=job_id, graph=the_plan.graph, script=script,
                    batch_log=os.path.join(os.getcwd(), f"{name}-{job_id}.out"))
    _save_last(job)
    return job


def explain_sbatch_error(stderr: str, script: str) -> str:
    """Slurm's reason for refusing a job, as a message with what the job asked for and a fix."""
    reason = "; ".join(line.removeprefix("sbatch: error: ").strip() for line in stderr.strip().splitlines()) or "no reason given"
    asked = []
    try:
        with open(script, encoding="utf-8") as fh:
            asked = [m.group(1) for m in re.finditer(r"^#SBATCH (--(?:nodes|cpus-per-task|gpus-per-node|partition|"
                                                     r"account|qos|time|mem-per-cpu)=\S+)", fh.read(), re.M)]
    except OSError:
        pass
    message = f"Slurm refused the job: {reason}"
    if asked:
        message += f"\n  the job asks for: {' '.join(asked)}"
    low = reason.lower()
    if "node configuration is not available" in low:
        message += ("\n  fix: the partition has no nodes this big; compile with your partition's size, "
                    "-O gpus_per_node=N -O max_nodes=M, to have the graph checked and packed for it, "
                    "or lower replicas/tp/gpus")
    elif "account" in low or "association" in low:
        message += "\n  fix: name your account with -O account=NAME (`sacctmgr show assoc user=$USER`)"
    elif "partition" in low:
        message += "\n  fix: name an existing partition with -O partition=NAME (`sinfo -s` lists them)"
    elif "time limit" in low:
        message += "\n  fix: ask for less time with -O time=HH:MM:SS"
    return message


def _scancel(job_id: str) -> None:
    result = run_tool(["scancel", job_id])
    if result.returncode != 0:
        fail(f"scancel {job_id} failed: {result.stderr.strip() or result.stdout.strip()}", 1)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while time.monotonic() < deadline:
        q = run_tool(["squeue", "-h", "-j", job_id, "-o", "%T"])
        if q.returncode != 0 or not q.stdout.strip():
            console.print(f"job {job_id} cancelled; every step stopped")
            return
        time.sleep(POLL_S / 2)
    err_console.print(f"[yellow]warning:[/] job {job_id} still in the queue {CANCEL_WAIT_S:.0f} s after scancel "
                      f"(squeue -j {job_id})")


def _ready_url(batch_log: str) -> str | None:
    try:
        with open(batch_log, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(READY_PREFIX):
                    return line[len(READY_PREFIX):].strip().removesuffix("/v1")
    except OSError:
        return None
    return None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _print_tail(path: str, lines: int = 20, err: bool = False) -> None:
    out = err_console if err else console
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            tail = fh.read().splitlines()[-lines:]
    except OSError:
        out.print(f"  (no batch log at {path})")
        return
    out.print(f"  last lines of {path}:")
    for line in tail:
        out.print(f"    {line}", markup=False, highlight=False, soft_wrap=True)


def run_tool(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``cmd``'s output; one that cannot start or runs past ``timeout`` reads as a failure (exit 1)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(cmd, 1, "", str(exc))


def _state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "servegraph")


def _save_last(job: Submitted) -> None:
    """Remember the job for `graph cancel --last` (written atomically)."""
    folder = _state_dir()
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".last-")
    with os.fdopen(fd, "w") as fh:
        json.dump(job.__dict__, fh)
    os.replace(tmp, os.path.join(folder, _LAST_JOB_FILE))


def load_last() -> Submitted | None:
    """The job the last `graph submit` here started, if any."""
    try:
        with open(os.path.join(_state_dir(), _LAST_JOB_FILE), encoding="utf-8") as fh:
            return Submitted(**json.load(fh))
    except (OSError, ValueError, TypeError):
        return None
