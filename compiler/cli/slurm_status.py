"""`graph status [JOB]`: a graph's Slurm job, each service's host, step, pid, restarts, last exit
and health.

Where it comes from: the batch script keeps ``<run dir>/status.json`` (written in one rename on
every change, compiler/targets/slurm_runtime.py); the run folder is named in the batch log's first
line, and the batch log is found through ``scontrol`` (or the last ``graph submit``). Slurm adds the
job's state and each service's current step id (``squeue --steps``: steps are named after their
service).

Health is probed from this host: each service's health URL, all at once, 2 s each. When the
frontend does not answer from here while the job says it serves (a login node that cannot reach
the compute nodes), the probes are made once more from inside the job, by one ``srun --jobid
--overlap`` running curl on the job's first node, and the output says which view it shows.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from ..targets.slurm_runtime import STATUS_FILE
from .common import console, fail
from .slurm_cmd import LIVE_STATES, job_state, load_last, run_tool, shown_state

#: Seconds one health probe may take.
PROBE_S = 2.0
_RUN_DIR_LINE = re.compile(r"^servegraph: job \S+ on \S+; configs and logs in (.+)$", re.M)


@dataclass
class Health:
    """What a service's health URL answered."""

    ok: bool
    detail: str  # "ok", "HTTP 503", "refused", "no answer", ...
    reachable: bool  # an HTTP answer came back (any status)


@dataclass
class JobStatus:
    """Everything ``graph status`` shows."""

    job: str
    slurm_state: str
    reason: str
    status: dict[str, Any] | None
    batch_log: str | None
    steps: dict[str, str] = field(default_factory=dict)
    health: dict[str, Health] = field(default_factory=dict)
    health_from: str = ""

    def as_json(self) -> dict[str, Any]:
        """The machine-readable form (``--json``): status.json with Slurm's view and health folded in."""
        status = dict(self.status or {})
        services = {}
        for name, s in (status.get("services") or {}).items():
            h = self.health.get(name)
            services[name] = {**s, "step": self.steps.get(name),
                              "healthy": h.ok if h else None, "health_check": h.detail if h else None}
        status.update(job=self.job, slurm_state=self.slurm_state, reason=self.reason, batch_log=self.batch_log,
                      services=services, health_from=self.health_from or None)
        return status


def status(job: str | None, json_out: bool, from_job: bool = False) -> None:
    """Print a graph job's state (``job``: an id, or None/"last" for the last ``graph submit``).

    Raises:
        SystemExit: 0 once printed; 1 when nothing is known of the job (no batch log or status file).
    """
    job_id, batch_log = _find_job(job)
    state, reason = job_state(job_id)
    log = batch_log or _batch_log_from_slurm(job_id)
    run_dir = _run_dir(log) if log else None
    data = _read_status(run_dir) if run_dir else None
    if data is None and state not in LIVE_STATES:
        if log is None:
            why = "Slurm no longer knows it and it is not the last `graph submit` here"
        elif run_dir is None:
            why = f"its batch log {log} names no run folder (is it a servegraph job?)"
        else:
            why = f"there is no {os.path.join(run_dir, STATUS_FILE)}"
        fail(f"job {job_id} is {state} and no status of it is found: {why}", 1)
    result = JobStatus(job_id, state, reason, data, log)
    if state == "RUNNING" and data is not None:
        result.steps = _steps(job_id)
        result.health, result.health_from = probe_all(job_id, data, from_job)
    if json_out:
        print(json.dumps(result.as_json(), indent=2, sort_keys=True))
    else:
        _print(result)
    raise SystemExit(0)


# --- where the job is ----------------------------------------------------------------


def _find_job(job: str | None) -> tuple[str, str | None]:
    if job in (None, "last", "--last"):
        last = load_last()
        if last is None:
            fail("no job given and `graph submit` has not started one here; give a job id (squeue lists them)", 1)
        return last.job_id, last.batch_log
    if not re.fullmatch(r"\d+(_\d+)?", job):
        fail(f"'{job}' is not a Slurm job id; give a number such as 1234, or nothing for the last `graph submit`", 2)
    last = load_last()
    return job, last.batch_log if last is not None and last.job_id == job else None


def _batch_log_from_slurm(job_id: str) -> str | None:
    """The job's StdOut path as scontrol tells it (while Slurm still remembers the job)."""
    out = run_tool(["scontrol", "-o", "show", "job", job_id])
    match = re.search(r"\bStdOut=(\S+)", out.stdout) if out.returncode == 0 else None
    return match.group(1) if match else None


def _run_dir(batch_log: str) -> str | None:
    """The run folder the batch script named in its first line."""
    try:
        with open(batch_log, encoding="utf-8", errors="replace") as fh:
            match = _RUN_DIR_LINE.search(fh.read(64 * 1024))
    except OSError:
        return None
    return match.group(1).strip() if match else None


def _read_status(run_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(run_dir, STATUS_FILE), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _steps(job_id: str) -> dict[str, str]:
    """Service name -> its current step id (steps carry their service's name)."""
    out = run_tool(["squeue", "-h", "-s", "-j", job_id, "-o", "%i|%j"])
    steps = {}
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        step, _, name = line.strip().partition("|")
        if name and not step.endswith((".batch", ".extern")):
            steps[name] = step
    return steps


# --- health ----------------------------------------------------------------------------


def probe_all(job_id: str, data: dict[str, Any], from_job: bool = False) -> tuple[dict[str, Health], str]:
    """Each service's health (lost ones are not probed), and where it was seen from."""
    services = {n: s for n, s in (data.get("services") or {}).items() if s.get("state") != "lost" and s.get("health")}
    urls = {n: s["health"] for n, s in services.items()}
    here = socket.gethostname()
    if not from_job:
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(urls)))) as pool:
            found = dict(zip(urls, pool.map(probe, urls.values())))
        frontend = next((n for n, s in services.items() if s.get("role") == "frontend"), None)
        blind = frontend is not None and not found[frontend].reachable and data.get("state") == "serving" \
            and services[frontend].get("state") == "healthy"
        if not blind:
            return found, f"this host ({here})"
    node = data.get("batch_host") or (data.get("nodes") or [None])[0]
    inside = _probe_from_job(job_id, node, urls) if node else None
    if inside is None:
        reason = "the frontend does not answer from here and srun into the job failed"
        return {n: Health(False, "unknown", False) for n in urls}, f"nowhere ({reason})"
    return inside, f"inside the job ({node}, through srun)"


def probe(url: str) -> Health:
    """GET ``url`` once, :data:`PROBE_S` at most."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_S) as resp:
            return Health(200 <= resp.status < 300, "ok" if 200 <= resp.status < 300 else f"HTTP {resp.status}", True)
    except urllib.error.HTTPError as exc:
        return Health(False, f"HTTP {exc.code}", True)
    except urllib.error.URLError as exc:
        return Health(False, _why(exc.reason), False)
    except (OSError, ValueError) as exc:
        return Health(False, _why(exc), False)


def _why(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "refused"
    if isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason):
        return "no answer"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    return str(getattr(reason, "strerror", None) or reason)[:40]


def _probe_from_job(job_id: str, node: str, urls: dict[str, str]) -> dict[str, Health] | None:
    """curl every URL from ``node``, inside the job's allocation; None when srun cannot get in."""
    script = ('for u in "$@"; do (c=$(curl -s -o /dev/null -w "%{http_code}" --max-time '
              f'{PROBE_S:g} "$u" || true); echo "${{c:-000}} $u") & done; wait')
    out = run_tool(["srun", f"--jobid={job_id}", "--overlap", "--gres=none", "--mem=0", "-N1", "-n1",
                    f"--nodelist={node}", "--quiet", "bash", "-c", script, "probe", *urls.values()], timeout=60)
    if out.returncode != 0:
        return None
    codes = {}
    for line in out.stdout.splitlines():
        code, _, url = line.strip().partition(" ")
        codes[url] = code
    found = {}
    for name, url in urls.items():
        code = codes.get(url, "000")
        ok = code.startswith("2")
        found[name] = Health(ok, "ok" if ok else ("no answer" if code == "000" else f"HTTP {code}"), code != "000")
    return found


# --- output ----------------------------------------------------------------------------


def _print(r: JobStatus) -> None:
    data = r.status
    shown = shown_state(r.slurm_state, r.reason)
    if data is None:
        console.print(f"job {r.job}: {shown}; no status yet (the batch script writes it once it runs)")
        return
    message = f": {escape(str(data['message']))}" if data.get("message") else ""
    console.print(f"job {r.job} {shown}: graph [bold]{escape(str(data.get('graph')))}[/] "
                  f"{escape(str(data.get('state')))}{message}", soft_wrap=False)
    nodes = " ".join(data.get("nodes") or [])
    lost = data.get("lost_nodes") or []
    console.print(f"  url {data.get('url')}", soft_wrap=False)
    console.print(f"  hosts {nodes}" + (f" (lost: {' '.join(lost)})" if lost else "")
                  + f"; restart limit {data.get('restart_limit')} in a row", soft_wrap=False)
    console.print(f"  run folder {escape(str(data.get('run_dir')))}", soft_wrap=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in ("service", "step", "host:pid", "state", "restarts", "last exit", "health"):
        table.add_column(column, overflow="fold", min_width=16 if column == "last exit" else None)
    for name, s in (data.get("services") or {}).items():
        h = r.health.get(name)
        health = "-" if h is None else f"[green]{h.detail}[/]" if h.ok else f"[red]{escape(h.detail)}[/]"
        where = "\n".join(s.get("processes") or s.get("hosts") or [])
        table.add_row(name, r.steps.get(name, "-"), where, _state(str(s.get("state"))), str(s.get("restarts", 0)),
                      escape(s.get("last_exit") or "-"), health)
    console.print(table)
    if r.health_from:
        console.print(f"  health as seen from {escape(r.health_from)}; state is the batch script's view "
                      f"(updated {_ago(data.get('updated'))})", soft_wrap=False)
    elif r.slurm_state not in LIVE_STATES:
        console.print(f"  the job has ended; this is its last status (written {_ago(data.get('updated'))})",
                      soft_wrap=False)


def _state(state: str) -> str:
    color = {"healthy": "green", "restarting": "yellow", "starting": "yellow", "stopping": "yellow",
             "lost": "red", "failed": "red"}.get(state)
    return f"[{color}]{state}[/]" if color else state


def _ago(epoch: object) -> str:
    if not isinstance(epoch, (int, float)) or epoch <= 0:
        return "at an unknown time"
    seconds = max(0, int(time.time() - epoch))
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"

