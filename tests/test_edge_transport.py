"""What a tensor edge is, as the compiler lowers it: NIXL with UCX settings for the network the target
names (-O network), files in a folder (vLLM's encoder cache) that a cross-host placement must share,
or the engine's own transfer; and what `graph inspect --edges`, `graph compile` and `graph validate`
say about each."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from compiler.cli import app
from compiler.plan import PlanOptions, plan
from compiler.load import load_spec

SMALL_E_P_D = ["--set", "prefill.tp=1", "--set", "prefill.gpus=1", "--set", "decode.tp=1", "--set", "decode.gpus=1",
               "--set", "decode.replicas=1", "--set", "encoder.replicas=1"]


def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _edges(*args: str) -> dict[tuple[str, str], dict]:
    code, out = _run("inspect", *args, "--edges", "--json")
    assert code == 0, out
    return {(e["src"], e["dst"]): e for e in json.loads(out)["edges"]}


@pytest.mark.parametrize("device,cpu_tls,gpu_tls", [("cpu", "tcp,self", None), ("gpu", None, "cuda_copy,tcp,self")])
def test_network_tcp_reaches_both_ends_of_every_nixl_edge(device: str, cpu_tls: str | None,
                                                           gpu_tls: str | None) -> None:
    """-O network=tcp: no shared memory (hosts sharing a kernel would use it) and no RDMA, on both ends."""
    edges = _edges("pipelines/pd.py", "-t", "slurm", "-O", "network=tcp", "--device", device)
    kv = edges[("prefill", "decode")]["settings"]
    assert kv["network"] == "tcp" and kv["env"]["UCX_TLS"] == (cpu_tls or gpu_tls)
    assert any("network tcp" in r and "no shared memory" in r for r in kv["reasons"])
    spec = load_spec("pipelines/pd.py")[0]
    p = plan(spec, PlanOptions(device=device, network="tcp"))
    for service in ("prefill-0", "decode-0"):
        assert p.service(service).env["UCX_TLS"] == kv["env"]["UCX_TLS"]


def test_network_auto_keeps_rdma_first_and_one_host_keeps_shared_memory() -> None:
    assert _edges("pipelines/pd.py", "--device", "cpu")[("prefill", "decode")]["settings"]["env"] == {
        "UCX_TLS": "rc,tcp,sm,self"}
    assert _edges("pipelines/pd.py", "-t", "local", "--device", "cpu")[("prefill", "decode")]["settings"]["env"] == {
        "UCX_TLS": "tcp,sm,self"}


def test_unknown_network_is_refused_with_the_choices() -> None:
    code, out = _run("inspect", "pipelines/pd.py", "--edges", "-t", "slurm", "-O", "network=ib")
    assert code == 2 and "network 'ib' is unknown" in out and "network=tcp" in out


def test_inspect_says_vllm_embeddings_are_files_not_nixl() -> None:
    code, out = _run("inspect", "pipelines/e_p_d.py", "--edges")
    assert code == 0, out
    line = next(x for x in out.splitlines() if x.startswith("encoder → prefill"))
    assert "files in a folder, not NIXL: /tmp/servegraph-ec/llava-e-p-d" in line
    assert "ECExampleConnector" in out and "NIXL WRITE" not in out.split("prefill → decode")[0]
    # the mock moves embeddings over our NIXL edge
    mock = _edges("pipelines/e_p_d.py", "--mock")[("encoder", "prefill")]
    assert mock["transport"] == "nixl" and mock["settings"]["direction"] == "WRITE"


def test_compile_notes_an_edge_that_is_not_nixl(tmp_path) -> None:
    code, out = _run("compile", "pipelines/e_pd.py", "-t", "local", "-o", str(tmp_path / "out"))
    assert code == 0, out
    assert ("note: encoder → prefill-decode Embeddings move as files through /tmp/servegraph-ec/llava-e-pd "
            "(one host's folder), not over NIXL") in out


def test_slurm_refuses_files_across_nodes_and_names_the_option() -> None:
    code, out = _run("validate", "pipelines/e_p_d.py", "-t", "slurm", "-O", "gpus_per_node=1", *SMALL_E_P_D)
    assert code == 1
    assert "[target-slurm] node 'prefill'" in out and "encoder-0 runs on node 0 and prefill-0 on node 1" in out
    assert "-O shared_cache_dir=PATH" in out
    # on one node, or with a shared folder, it compiles; the folder moves to the shared one
    assert _run("validate", "pipelines/e_p_d.py", "-t", "slurm", "-O", "gpus_per_node=4", *SMALL_E_P_D)[0] == 0
    args = ("pipelines/e_p_d.py", "-t", "slurm", "-O", "gpus_per_node=1", "-O", "shared_cache_dir=/shared/ec",
            *SMALL_E_P_D)
    assert _run("validate", *args)[0] == 0
    files = _edges(*args)[("encoder", "prefill")]["settings"]
    assert files["folder"] == "/shared/ec/llava-e-p-d" and files["folder_shared"] is True
    code, out = _run("inspect", *args, "--plan")
    assert '"shared_storage_path":"/shared/ec/llava-e-p-d"' in out


def test_k8s_plans_a_files_edge_into_the_shared_claim() -> None:
    """Pods may land on different nodes: the k8s target mounts one shared claim at shared_cache_path at
    both ends of a files edge (its own, or -O shared_cache_pvc), so the folder is planned there."""
    files = _edges("pipelines/e_pd.py", "-t", "k8s", "-O", "shared_cache_path=/ec")[("encoder", "prefill-decode")]
    assert files["settings"]["folder"] == "/ec/llava-e-pd" and files["settings"]["folder_shared"] is True


def test_graph_targets_documents_the_options() -> None:
    code, out = _run("targets")
    assert code == 0
    for option in ("-O network=", "-O shared_cache_dir="):
        assert option in out
