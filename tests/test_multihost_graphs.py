"""Mock graphs placed across the hosts of the multi-host bed, for real: `graph submit` on the bed's Slurm
puts services on different hosts, and only what the compiler emits wires them (host names, ports,
``-O network=tcp`` for UCX).

* P/D: prefill on one host, decode on another; the KV the decode checks came over our tensor edge
  (NIXL over UCX TCP) and crossed the bridge: at least as many bytes came in on the decode host's eth0.
* E/P/D over three hosts as the compiler places them: embeddings and KV both cross hosts.
* A decode replica spanning two hosts: its leader serves once the rank on the other host joined it.

Needs the bed up (CI runs `scripts/multihost.sh up`) and NIXL; skips with the reason otherwise.
"""

from __future__ import annotations

import pathlib

import pytest

from tests import multihost
from tests.e2e import metric_sum
from tests.multihost_jobs import GraphJob
from tests.vllm_fixtures import image_messages, make_image

pytestmark = [pytest.mark.e2e_multihost, pytest.mark.timeout(900)]

_SKIP = multihost.skip_reason()
if _SKIP is None:
    import importlib.util

    if importlib.util.find_spec("nixl") is None:
        _SKIP = "NIXL is not installed in this Python; scripts/setup-vllm.sh .venv installs it"
    elif len(multihost.hosts()) < 3:
        _SKIP = "the bed has fewer than 3 hosts: run scripts/multihost.sh up"
if _SKIP:
    print(f"test_multihost_graphs skipped: {_SKIP}")
    pytestmark.append(pytest.mark.skip(reason=_SKIP))

TEXT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
MM_MODEL = "llava-hf/llava-1.5-7b-hf"
#: One host per engine: each mock engine asks for one (fake) GPU and a node has one.
ONE_PER_HOST = ["-O", "gpus_per_node=1", "-O", "network=tcp", "-O", "time=00:15:00"]
#: Long prompts: ~190 KV blocks of 2 KiB each per request.
PROMPTS = [" ".join(f"word{i * 7 + j}" for j in range(3000)) for i in range(4)]


def _rx(host: str) -> int:
    return multihost.eth0_rx_bytes(host)


def _completions(url: str, prompts: list[str], model: str = TEXT_MODEL) -> list[str]:
    import openai

    client = openai.OpenAI(base_url=url, api_key="none", timeout=60)
    return [client.completions.create(model=model, prompt=p, max_tokens=4).choices[0].text for p in prompts]


def _no_fallbacks(job: GraphJob) -> None:
    """Every request went the disaggregated way: the frontend served none from a later stage alone."""
    assert metric_sum(job.metrics("frontend-0"), "servegraph_disagg_skipped_total") == 0


def test_pd_kv_crosses_hosts_over_nixl_tcp(tmp_path: pathlib.Path) -> None:
    args = ["--mock", "--set", "decode.tp=1", "--set", "decode.gpus=1",
            "-O", "mock_gpus={prefill: 1, decode: 1}", *ONE_PER_HOST]
    with GraphJob("pipelines/pd.py", tmp_path, *args) as job:
        hosts = job.hosts
        assert hosts["prefill-0"] != hosts["decode-0"], hosts
        # what the compiler emitted: both ends of the KV edge take UCX over TCP only
        kv = next(e for e in job.plan.edges if e.type == "KV")
        assert kv.settings is not None and kv.settings.env == {"UCX_TLS": "tcp,self"}
        for service in ("prefill-0", "decode-0"):
            assert job.plan.service(service).env["UCX_TLS"] == "tcp,self"
        decode_host = hosts["decode-0"][0]
        before, rx_before = job.metrics("decode-0"), _rx(decode_host)
        answers = _completions(job.url, PROMPTS)
        crossed = _rx(decode_host) - rx_before
        got = metric_sum(job.metrics("decode-0"), "mock_kv_bytes_received_total") - \
            metric_sum(before, "mock_kv_bytes_received_total")
        assert all(answers), answers
        assert got >= len(PROMPTS) * 100 * 2048, f"the decode received {got} KV bytes for {len(PROMPTS)} long prompts"
        assert crossed >= got, (f"{got} KV bytes arrived but only {crossed} came in on {decode_host}'s eth0: "
                                "UCX took a same-machine path (shared memory?), not the network")
        _no_fallbacks(job)


def _chat_image(url: str, seed: int) -> str:
    import openai

    client = openai.OpenAI(base_url=url, api_key="none", timeout=60)
    messages = image_messages(make_image(seed), "What is in this picture?")
    return client.chat.completions.create(model=MM_MODEL, messages=messages, max_tokens=4).choices[0].message.content


def test_e_p_d_embeddings_and_kv_cross_three_hosts(tmp_path: pathlib.Path) -> None:
    mm = "{mm_tokens: 2048}"  # 256 KiB of embeddings per image; every engine must agree on it
    args = ["--mock", *(a for n in ("encoder", "prefill", "decode") for a in ("--set", f"{n}.mock={mm}")),
            "--set", "encoder.replicas=1", "--set", "decode.replicas=1",
            *(a for n in ("prefill", "decode") for a in ("--set", f"{n}.tp=1", "--set", f"{n}.gpus=1")),
            "-O", "mock_gpus={encoder: 1, prefill: 1, decode: 1}", *ONE_PER_HOST]
    with GraphJob("pipelines/e_p_d.py", tmp_path, *args) as job:
        hosts = job.hosts
        engines = [hosts[s][0] for s in ("encoder-0", "prefill-0", "decode-0")]
        assert len(set(engines)) == 3, hosts
        assert {e.transport for e in job.plan.edges if e.type in ("KV", "Embeddings")} == {"nixl"}
        prefill_host, decode_host = engines[1], engines[2]
        before = {s: job.metrics(s) for s in ("prefill-0", "decode-0")}
        rx = {h: _rx(h) for h in (prefill_host, decode_host)}
        answers = [_chat_image(job.url, seed) for seed in range(4)]
        assert all(answers), answers
        ec = metric_sum(job.metrics("prefill-0"), "mock_ec_bytes_received_total") - \
            metric_sum(before["prefill-0"], "mock_ec_bytes_received_total")
        kv = metric_sum(job.metrics("decode-0"), "mock_kv_bytes_received_total") - \
            metric_sum(before["decode-0"], "mock_kv_bytes_received_total")
        assert ec >= 4 * 2048 * 64 * 2, f"the prefill received {ec} embedding bytes for 4 images"
        assert kv > 0, "no KV bytes reached the decode"
        assert _rx(prefill_host) - rx[prefill_host] >= ec, f"embeddings did not cross into {prefill_host}"
        assert _rx(decode_host) - rx[decode_host] >= kv, f"KV did not cross into {decode_host}"
        _no_fallbacks(job)


def test_a_replica_spanning_two_hosts_serves_once_both_ranks_are_up(tmp_path: pathlib.Path) -> None:
    """pipelines/multinode_pd.py made small: decode is one replica over two hosts (tp across nodes). Its
    leader waits for the rank on the other host, which the compiler and the slurm target wire by
    SG_LEADER_HOST, SG_NODE_RANK and the replica's dist port."""
    args = ["--mock", "--set", "prefill.replicas=1", "--set", "prefill.tp=1", "--set", "prefill.gpus=1",
            "--set", "decode.tp=2", "--set", "decode.gpus=1", "--set", "decode.nodes=2",
            "-O", "mock_gpus={prefill: 1, decode: 1}", *ONE_PER_HOST]
    with GraphJob("pipelines/multinode_pd.py", tmp_path, *args) as job:
        decode = job.plan.service("decode-0")
        assert decode.hosts == 2 and "--nnodes" in decode.argv
        hosts = job.hosts
        assert len(hosts["decode-0"]) == 2 and len(set(hosts["decode-0"])) == 2, hosts
        assert hosts["prefill-0"][0] not in hosts["decode-0"], hosts
        nodes = job.get("decode-0", "/mock/nodes")
        assert nodes["leader"]["host"] == hosts["decode-0"][0]
        assert nodes["joined"] == [{"rank": 1, "host": hosts["decode-0"][1]}], nodes
        assert all(_completions(job.url, PROMPTS[:2], model=decode.model or ""))
        _no_fallbacks(job)
