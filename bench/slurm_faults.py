"""Requests failed on Slurm when a decode replica, the only prefill, or a whole host dies under load.

For each fault a fresh job of ``pipelines/pd.py --mock`` with two decode replicas runs on the
multi-host bed (scripts/multihost.sh): the frontend and the prefill on the first host, decode-0
on the second, decode-1 on the third (``-O mock_gpus`` places them as GPU engines would be).
``--clients`` streaming clients send requests for ``--duration`` seconds (tests/load.py); at
``--at`` seconds the fault happens:

* ``decode``: decode-1's process is SIGKILLed (the batch script restarts its step);
* ``prefill``: the prefill's process is SIGKILLed (decode computes prompts alone meanwhile);
* ``host``: the third host is lost (``multihost.sh lose``: its link goes down, every process in
  it is SIGKILLed, slurmd included).

Reported per fault: requests served and failed (with what the failed clients saw), and the time
from the fault until the replica is healthy again (the batch script's status.json) and until it
serves again (the restarted mock engine has been sent a request). A lost host's replica is not
restarted (slurm_keep.py says why): its row gives when Slurm took the node out of the job
instead (SlurmdTimeout; the bed waits up to ``--lost-wait`` seconds for it, then repairs itself
with ``multihost.sh up``, which sets the node DOWN).

Usage: python bench/slurm_faults.py [--faults decode,prefill,host] [--clients 8] [--duration 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler.targets import slurm  # noqa: E402
from tests import multihost  # noqa: E402
from tests.e2e import http_json, metric_sum, metrics  # noqa: E402
from tests.load import Tally, run_load_with_fault  # noqa: E402
from tests.slurm_job import Job, mock_plan  # noqa: E402

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
FAULTS = {"decode": "decode-1", "prefill": "prefill-0", "host": "decode-1"}


@dataclass
class Watch:
    """When the faulted replica came back, seen from outside (seconds after the fault)."""

    healthy_s: float | None = None
    serves_s: float | None = None
    lost_s: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    fault: str
    tally: Tally
    watch: Watch
    migrations: float = 0.0
    fallbacks: float = 0.0
    job_state: str = ""


def watch_replica(job: Job, service: str, killed_pid: int | None, start: float, until: float, watch: Watch) -> None:
    """Poll status.json and the replica until it serves again, or its host is reported lost."""
    while time.monotonic() < until:
        s = job.status().get("services", {}).get(service, {})
        if s.get("state") == "lost" and watch.lost_s is None:
            watch.lost_s = time.monotonic() - start
            return
        fresh = s.get("processes") and not any(p.endswith(f":{killed_pid}") for p in s["processes"])
        if watch.healthy_s is None and s.get("state") == "healthy" and fresh and s.get("restarts", 0) > 0:
            watch.healthy_s = time.monotonic() - start
        if watch.healthy_s is not None:
            try:
                status, data = http_json("GET", job.service_url(service) + "/mock/requests", timeout=2)
            except OSError:
                status, data = 0, []
            if status == 200 and data:
                watch.serves_s = time.monotonic() - start
                return
        time.sleep(0.05)


def run_fault(fault: str, args: argparse.Namespace, env: dict[str, str], work: pathlib.Path,
              hosts: list[multihost.Host]) -> Result:
    service = FAULTS[fault]
    # one GPU a host per engine: each on its own host, as GPU engines would be, and room for other jobs
    options = slurm.Options(gpus_per_node=1, mock_gpus={"prefill": 1, "decode": 1}, health_interval_s=0.2)
    job = Job(mock_plan("pd.py", "decode.replicas=2"), work / fault, options, env=env)
    watch = Watch()
    try:
        url = job.wait_ready(timeout=300)
        placed = {n: s["hosts"] for n, s in job.status()["services"].items()}
        assert placed["decode-1"] == [hosts[2].name], f"decode-1 should be on {hosts[2].name}: {placed}"
        body = {"model": MODEL, "messages": [{"role": "user", "content": "warm up"}], "max_tokens": 4}
        for _ in range(4):
            http_json("POST", url + "/chat/completions", body)
        watcher: list[threading.Thread] = []

        def do_fault() -> str:
            if fault == "host":
                pid = None
                job.wait_alone_on(hosts[2].name)
                subprocess.run([str(multihost.SCRIPT), "lose", hosts[2].name], check=True, capture_output=True,
                               timeout=30)
                what = f"host {hosts[2].name} lost (decode-1)"
            else:
                pid = job.kill(service)
                what = f"{service} SIGKILLed (pid {pid})"
            start = time.monotonic()
            until = start + (args.lost_wait if fault == "host" else args.duration + 30)
            t = threading.Thread(target=watch_replica, args=(job, service, pid, start, until, watch), daemon=True)
            t.start()
            watcher.append(t)
            return what

        tally = asyncio.run(run_load_with_fault(url + "/chat/completions", MODEL, args.clients, args.duration,
                                                args.at, do_fault, stream=True))
        values = metrics(url.removesuffix("/v1"))
        result = Result(fault, tally, watch, metric_sum(values, "servegraph_stream_migrations_total"),
                        metric_sum(values, "servegraph_disagg_skipped_total"))
        for t in watcher:
            t.join()
        result.job_state = job.state() or "gone"
        if fault == "host":
            watch.notes.append(f"job {result.job_state} on {job.status().get('nodes')} "
                               f"(lost: {job.status().get('lost_nodes')})")
        return result
    finally:
        job.cancel()
        if fault == "host":
            up = subprocess.run([str(multihost.SCRIPT), "up"], capture_output=True, text=True, timeout=180)
            if up.returncode != 0:
                print(f"multihost.sh up failed:\n{up.stdout}{up.stderr}", file=sys.stderr)


def _s(x: float | None) -> str:
    return f"{x:.1f} s" if x is not None else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faults", default="decode,prefill,host", help="comma-separated: decode, prefill, host")
    ap.add_argument("--clients", type=int, default=8, help="concurrent streaming clients")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--at", type=float, default=5.0, help="seconds into the load when the fault happens")
    ap.add_argument("--lost-wait", type=float, default=90.0,
                    help="host fault: seconds to wait for Slurm to take the node out of the job")
    args = ap.parse_args()
    reason = multihost.skip_reason()
    if reason:
        sys.exit(f"slurm_faults: {reason}")
    hosts = multihost.hosts()
    if len(hosts) < 3:
        sys.exit("slurm_faults: the bed needs 3 hosts: MULTIHOST_HOSTS=3 scripts/multihost.sh up")
    env = multihost.slurm_env()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-slurm-faults-"))
    results = [run_fault(f.strip(), args, env, work, hosts) for f in args.faults.split(",") if f.strip()]
    print(f"\nbatch logs, service logs and status.json of each job: {work}")
    print(f"\n# pipelines/pd.py --mock, decode x2, on Slurm across {len(hosts)} namespace hosts; "
          f"{args.clients} streaming clients x {args.duration:g} s, the fault at {args.at:g} s")
    print("| fault | served | failed | healthy again | serves again | streams migrated | decode alone |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        what = {"decode": "one decode replica (of 2) killed", "prefill": "the only prefill killed",
                "host": f"host {hosts[2].name} lost (decode-1)"}[r.fault]
        again = _s(r.watch.serves_s) if r.fault != "host" else f"not restarted; lost after {_s(r.watch.lost_s)}"
        print(f"| {what} | {r.tally.served} | {r.tally.failed} | {_s(r.watch.healthy_s)} | {again} | "
              f"{r.migrations:g} | {r.fallbacks:g} |")
    for r in results:
        if r.tally.failed or r.watch.notes:
            print(f"\n{r.fault}: {r.tally.report()}")
            for note in r.watch.notes:
                print(f"  {note}")
    print(json.dumps({r.fault: {"served": r.tally.served, "failed": r.tally.failed, "healthy_s": r.watch.healthy_s,
                                "serves_s": r.watch.serves_s, "lost_s": r.watch.lost_s} for r in results}))


if __name__ == "__main__":
    main()
