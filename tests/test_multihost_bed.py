"""The multi-host bed (scripts/multihost.sh) is several hosts for real: Slurm places a job's steps on
each, with each host's own GPUs; TCP and our tensor edge (NIXL over UCX TCP) cross from one host to
another over the bridge; a lost host leaves a --no-kill job running on the others.

Needs the bed up (CI runs `scripts/multihost.sh up` first); skips with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing as mp
import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests import multihost
from tests.edge_peer import block_pool, digest, pattern, read_message

pytestmark = pytest.mark.e2e_multihost

JOB_TIMEOUT_S = 60
GPUS_PER_HOST = 4
# sbatch exports these from the job's GPU request; srun would read them back as its own
INHERITED_GPU_ENV = "SLURM_GPUS SLURM_GPUS_PER_NODE SLURM_GPUS_PER_TASK SLURM_TRES_PER_TASK"

MIN_HOSTS = 3

_SKIP = multihost.skip_reason()
HOSTS: list[multihost.Host] = [] if _SKIP else multihost.hosts()
if not _SKIP and len(HOSTS) < MIN_HOSTS:
    _SKIP = f"the bed has {len(HOSTS)} hosts, these tests need {MIN_HOSTS}: run scripts/multihost.sh up"
if _SKIP:
    print(f"test_multihost_bed skipped: {_SKIP}")
    pytestmark = [pytestmark, pytest.mark.skip(reason=_SKIP)]
SLURM_ENV = {} if _SKIP else multihost.slurm_env()  # SLURM_CONF of the bed's cluster


# -- Slurm helpers ---------------------------------------------------------------------------------


def _sbatch(workdir: pathlib.Path, script: str, *flags: str) -> str:
    """Submits a bash script body to the bed's cluster; returns the job id."""
    path = workdir / f"job{len(list(workdir.glob('job*.sh')))}.sh"
    path.write_text("#!/bin/bash\nset -eu\n" + script)
    out = subprocess.run(
        ["sbatch", "--parsable", "--mem-per-cpu=256M", "--time=5", f"--chdir={workdir}",
         f"--output={path.with_suffix('.out')}", *flags, str(path)],
        capture_output=True, text=True, timeout=30, env=SLURM_ENV,
    )
    assert out.returncode == 0, f"sbatch refused {path}: {out.stderr}"
    return out.stdout.strip().split(";")[0]


def _squeue(job: str, fmt: str) -> str:
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", fmt], capture_output=True, text=True,
                          timeout=10, env=SLURM_ENV)
    return done.stdout.strip()


def _scancel(job: str) -> None:
    subprocess.run(["scancel", job], timeout=10, env=SLURM_ENV)


def _wait_gone(job: str, timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Waits until the job has left the queue, else cancels it and fails."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _squeue(job, "%T"):
            return
        time.sleep(0.3)
    _scancel(job)
    pytest.fail(f"job {job} still in the queue after {timeout_s}s; cancelled it")


def _wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = JOB_TIMEOUT_S) -> Any:
    """Polls ``predicate`` until it returns something true, which it returns; fails after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"{what}: not within {timeout_s}s")


def _lines(path: pathlib.Path, prefix: str) -> list[list[str]]:
    return [line.split()[1:] for line in path.read_text().splitlines() if line.startswith(prefix + " ")]


# -- Slurm across the hosts --------------------------------------------------------------------------


STEP = """\
names="$(scontrol show hostnames "$SLURM_JOB_NODELIST")"
resolved="$(for h in $names; do getent hosts "$h" | awk '{print $2 "=" $1}'; done | tr '\\n' ' ')"
echo "STEP $(hostname) $SLURMD_NODENAME $(ip -4 -o addr show eth0 | awk '{print $4}') $CUDA_VISIBLE_DEVICES $resolved"
"""


def test_a_job_on_every_host_runs_one_step_on_each_with_its_address_and_gpus(tmp_path: pathlib.Path) -> None:
    """Each step reports where it runs: its hostname, its address, what every name of the job's
    node list resolves to there, and its GPUs."""
    (tmp_path / "step.sh").write_text(STEP)
    script = (
        f"unset {INHERITED_GPU_ENV}\n"
        'echo "BATCH $(hostname) $(scontrol show hostnames "$SLURM_JOB_NODELIST" | tr "\\n" " ")"\n'
        "srun --ntasks-per-node=1 bash step.sh\n"
    )
    job = _sbatch(tmp_path, script, f"--nodes={len(HOSTS)}", "--ntasks-per-node=1",
                  f"--gpus-per-node={GPUS_PER_HOST}")
    _wait_gone(job)
    out = tmp_path / "job0.out"
    text = out.read_text()
    batch = _lines(out, "BATCH")
    assert batch and batch[0][0] == HOSTS[0].name, f"batch script not on {HOSTS[0].name}:\n{text}"
    assert sorted(batch[0][1:]) == sorted(h.name for h in HOSTS), f"SLURM_JOB_NODELIST:\n{text}"
    steps = {fields[0]: fields[1:] for fields in _lines(out, "STEP")}
    assert len(steps) == len(_lines(out, "STEP")) and set(steps) == {h.name for h in HOSTS}, (
        f"steps did not run one on each host:\n{text}"
    )
    addrs = {h.name: h.addr for h in HOSTS}
    for host, (node, cidr, cvd, *resolved) in steps.items():
        assert node == host, f"slurmd of node {node} runs in host {host}"
        assert cidr == f"{addrs[host]}/24", f"{host} has address {cidr}, not {addrs[host]}"
        assert sorted(int(g) for g in cvd.split(",")) == list(range(GPUS_PER_HOST)), f"{host}: CVD={cvd}"
        # every name of the node list resolves, from this host, to the address its host has
        assert dict(r.split("=") for r in resolved) == addrs, f"names resolved in {host}: {resolved}"


def test_each_host_has_its_own_four_gpus(tmp_path: pathlib.Path) -> None:
    """Two jobs over all hosts at once: 3 GPUs per node for one, 1 for the other, which fits only
    if every node has 4 of its own; the second gets the GPU the first left on each node."""
    n = len(HOSTS)
    # each step records its GPUs, then waits for the other job's marker (both running at once)
    body = (
        f"unset {INHERITED_GPU_ENV}\n"
        "srun --ntasks-per-node=1 bash -c '"
        'echo "$(hostname) $CUDA_VISIBLE_DEVICES" > gpus.$0.$(hostname); '
        "for _ in $(seq 150); do ls gpus.$1.* >/dev/null 2>&1 && break; sleep 0.2; done; "
        "ls gpus.$1.* >/dev/null 2>&1 && touch overlap.$0.$(hostname)' "
    )
    jobs = [
        _sbatch(tmp_path, body + "a b\n", f"--nodes={n}", "--ntasks-per-node=1", "--gpus-per-node=3"),
        _sbatch(tmp_path, body + "b a\n", f"--nodes={n}", "--ntasks-per-node=1", "--gpus-per-node=1"),
    ]
    for job in jobs:
        _wait_gone(job)
    for host in HOSTS:
        a = (tmp_path / f"gpus.a.{host.name}").read_text().split()
        b = (tmp_path / f"gpus.b.{host.name}").read_text().split()
        assert (tmp_path / f"overlap.a.{host.name}").exists(), f"jobs did not run at once on {host.name}"
        ids_a, ids_b = {int(g) for g in a[1].split(",")}, {int(g) for g in b[1].split(",")}
        assert len(ids_a) == 3 and len(ids_b) == 1 and not ids_a & ids_b, (host, ids_a, ids_b)
        assert ids_a | ids_b == set(range(GPUS_PER_HOST)), f"{host.name}: GPUs {ids_a} + {ids_b}"


def test_more_gpus_than_a_host_has_is_refused(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        ["sbatch", f"--chdir={tmp_path}", f"--gpus-per-node={GPUS_PER_HOST + 1}", "--wrap", "true"],
        capture_output=True, text=True, timeout=30, env=SLURM_ENV,
    )
    assert result.returncode != 0, f"a {GPUS_PER_HOST + 1}-GPU node was granted: {result.stdout}"
    assert "Requested node configuration is not available" in result.stderr, result.stderr


# -- the network -------------------------------------------------------------------------------------

SERVER = """
import socket, sys
srv = socket.create_server(("0.0.0.0", 0))
print(srv.getsockname()[1], flush=True)
conn, peer = srv.accept()
conn.sendall(f"{socket.gethostname()} {peer[0]}\\n".encode())
conn.close()
"""
CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    print(socket.gethostname(), s.recv(200).decode().strip())
"""


def test_a_server_in_one_host_answers_a_client_in_another_by_name() -> None:
    server_host, client_host = HOSTS[0], HOSTS[1]
    with multihost.Procs() as procs:
        server = procs.start(server_host.name, [sys.executable, "-c", SERVER])
        port = server.stdout.readline().strip()
        assert port.isdigit(), f"server in {server_host.name} printed {port!r}"
        client = multihost.run_in(client_host.name, [sys.executable, "-c", CLIENT, server_host.name, port])
        assert client.returncode == 0, client.stderr
        # the client runs in its host, reaches the server's host by name, and the server sees the
        # client's own address: no NAT, no shared loopback
        assert client.stdout.split() == [client_host.name, server_host.name, client_host.addr]


def test_nothing_outside_the_bridge_is_reachable_from_a_host() -> None:
    route = multihost.run_in(HOSTS[0].name, ["ip", "route", "get", "1.1.1.1"])
    assert route.returncode != 0 and "unreachable" in route.stderr, route.stdout + route.stderr
    assert "default" not in multihost.run_in(HOSTS[0].name, ["ip", "route"]).stdout


def _report_from_host(host: str, server: tuple[str, int], out: Any) -> None:
    """Spawned child: enter ``host``, then say where it is, what the server answers and which
    interfaces its /sys lists."""
    multihost.enter_host(host)
    with socket.create_connection(server, timeout=10) as conn:
        reply = conn.recv(200).decode().strip()
    out.put((socket.gethostname(), reply, sorted(os.listdir("/sys/class/net"))))


def test_a_child_process_moves_into_another_host_and_keeps_its_pipe_to_the_parent() -> None:
    """enter_host (what bench/nixl_edge.py's sender would use): the child's network, hostname and
    /sys are the host's, its multiprocessing queue to the parent still works, the parent is unmoved."""
    server_host, child_host = HOSTS[0], HOSTS[1]
    parent_name = socket.gethostname()
    ctx = mp.get_context("spawn")
    with multihost.Procs() as procs:
        server = procs.start(server_host.name, [sys.executable, "-c", SERVER])
        port = int(server.stdout.readline())
        out = ctx.Queue()
        child = ctx.Process(target=_report_from_host, args=(child_host.name, (server_host.name, port), out))
        child.start()
        try:
            name, reply, interfaces = out.get(timeout=60)
        finally:
            child.join(30)
            if child.is_alive():
                child.kill()
    assert child.exitcode == 0
    assert name == child_host.name and reply.split() == [server_host.name, child_host.addr], (name, reply)
    assert interfaces == ["eth0", "lo"], f"the child's /sys is not its host's: {interfaces}"
    assert socket.gethostname() == parent_name


# -- our tensor edge across hosts --------------------------------------------------------------------

# (nbytes, dtype): small, 4 MiB, 64 MiB; a mixed multi-array transfer; KV blocks of a pool
ARRAY_CASES = [(1 << 10, "float16"), (4 << 20, "float32"), (64 << 20, "int8")]
MIXED = [(1000, "float32"), (77, "int8"), (4 << 20, "float16")]
BLOCK_IDS = [list(range(0, 512, 2)), list(range(100, 400)), [5, 6, 7, 300, 9, 511]]


def test_tensor_edge_moves_arrays_between_hosts_over_nixl_ucx_tcp() -> None:
    """TensorReceiver in one host, TensorSender in another: every array arrives with its bytes,
    and at least as many bytes as were sent came in on the receiver's interface to the bridge."""
    if importlib.util.find_spec("nixl") is None:
        pytest.skip("NIXL is not installed in this Python; scripts/setup-vllm.sh .venv installs it")
    rx_host, tx_host = HOSTS[0], HOSTS[1]
    env = dict(os.environ, SERVEGRAPH_TRANSPORT="nixl", PYTHONPATH=str(multihost.ROOT), **multihost.UCX_ACROSS_HOSTS)
    cases = [{"arrays": [{"nbytes": nb, "dtype": dt, "seed": seed}]} for seed, (nb, dt) in enumerate(ARRAY_CASES)]
    cases.append({"arrays": [{"nbytes": nb, "dtype": dt, "seed": 50 + i} for i, (nb, dt) in enumerate(MIXED)]})
    cases += [{"blocks": ids} for ids in BLOCK_IDS]
    expected = [[pattern(a["nbytes"], a["dtype"], a["seed"]) for a in c["arrays"]] for c in cases if "arrays" in c]
    expected += [[block_pool()[ids]] for ids in BLOCK_IDS]
    sent_bytes = sum(a.nbytes for arrays in expected for a in arrays)
    rx_before = multihost.eth0_rx_bytes(rx_host.name)
    with multihost.Procs() as procs:
        rx = procs.start(rx_host.name, [sys.executable, "-m", "tests.edge_peer", "receive",
                                        "--capacity", str(80 << 20)], env=env, cwd=multihost.ROOT)
        hello = read_message(rx.stdout)
        assert hello, f"receiver in {rx_host.name} exited ({rx.wait(10)}) before its handle"
        assert (hello["backend"], hello["host"], hello["handle"]["host"]) == ("nixl", rx_host.name, rx_host.name)
        tx = procs.start(tx_host.name, [sys.executable, "-m", "tests.edge_peer", "send"], env=env,
                         cwd=multihost.ROOT)
        tx.stdin.write(json.dumps({"handle": hello["handle"], "cases": cases}) + "\n")
        tx.stdin.flush()
        started = read_message(tx.stdout)
        assert started == {"backend": "nixl", "host": tx_host.name}, started
        for case, want in zip(cases, expected):
            sent = read_message(tx.stdout)
            assert sent, f"sender in {tx_host.name} exited ({tx.wait(10)}) before sending {case}"
            rx.stdin.write(json.dumps({"xfer_id": sent["ticket"]["xfer_id"]}) + "\n")
            rx.stdin.flush()
            got = read_message(rx.stdout)
            assert got and got["xfer_id"] == sent["ticket"]["xfer_id"], got
            assert got["arrays"] == [digest(a) for a in want], f"bytes differ for {case}"
        assert tx.wait(30) == 0
        rx.stdin.close()
        assert rx.wait(30) == 0
    crossed = multihost.eth0_rx_bytes(rx_host.name) - rx_before
    assert crossed >= sent_bytes, (
        f"{sent_bytes} bytes arrived but only {crossed} came in on {rx_host.name}'s eth0: "
        "UCX took a same-machine path (shared memory?), not the network"
    )


# -- a lost host -------------------------------------------------------------------------------------


def test_a_lost_host_leaves_a_no_kill_job_running_on_the_others(tmp_path: pathlib.Path) -> None:
    """`multihost.sh lose` kills every process of the last host and cuts its link; `up` brings it
    back, setting its node DOWN first: the --no-kill job loses that node only, its steps on the
    other hosts keep running, and the bed is usable again."""
    lost = HOSTS[-1]
    n = len(HOSTS)
    # one step per host, as the compiler starts one per service: a step spanning the lost host
    # would end with it, on every host
    script = (
        'for h in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do\n'
        "  srun -N1 -n1 -w $h --exact bash -c 'while true; do date +%s.%N > beat.$(hostname); sleep 0.2; done' &\n"
        "done\n"
        "wait\n"
    )
    job = _sbatch(tmp_path, script, "--no-kill", f"--nodes={n}", "--ntasks-per-node=1")
    try:
        for host in HOSTS:
            _wait_for(lambda h=host: (tmp_path / f"beat.{h.name}").exists(), f"step on {host.name} started")
        subprocess.run([str(multihost.SCRIPT), "lose", lost.name], check=True, timeout=30)
        up = subprocess.run([str(multihost.SCRIPT), "up"], capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"{lost.name} lost its processes" in up.stderr, up.stderr
        nodes = _squeue(job, "%T %N")
        assert nodes.startswith("RUNNING") and lost.name not in _expand(nodes.split()[1]), nodes
        for host in HOSTS[:-1]:
            beat = tmp_path / f"beat.{host.name}"
            before = beat.read_text()
            _wait_for(lambda b=beat, s=before: b.read_text() != s, f"step on {host.name} still beating", 10)
        assert multihost.skip_reason() is None, "the bed is not usable after `up`"
    finally:
        _scancel(job)
        _wait_gone(job)


def _expand(nodelist: str) -> list[str]:
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                         timeout=10, env=SLURM_ENV)
    return out.stdout.split()
