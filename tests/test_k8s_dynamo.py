"""``-O flavor=dynamo``: a DynamoGraphDeployment checked against Dynamo's v1beta1 CRD schema (shipped),
and its commands against the modules and flags of Dynamo 1.6.1 (pinned below, with where each was read)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from compiler.targets import TargetError, k8s
from compiler.targets.output import write_output
from tests.goldens import assert_golden
from tests.test_k8s_manifests import (
    CRD_SCHEMAS,
    PIPELINES,
    ROOT,
    SCHEMAS,
    compile_plan,
    docs_of,
    validate_core,
    validate_crd,
    validate_pod_template,
)

DYNAMO = k8s.Options(flavor="dynamo")
#: Graphs with a node of your own (graph.custom): Dynamo's frontend calls its workers directly.
OWN_NODES = {"guarded_pd", "redacted_pd", "speech_to_text"}
#: Multimodal graphs: Dynamo's mocker has no encode mode and takes no media.
MEDIA = {"e_p_d", "e_pd", "ep_d", "epd", "speech_to_text"}
EXPRESSIBLE = [
    pytest.param(p.stem, m, id=f"{p.stem}-{'mock' if m else 'engine'}")
    for p in PIPELINES for m in (False, True)
    if p.stem not in OWN_NODES and not (m and p.stem in MEDIA)
]
REFUSED = [
    pytest.param(p.stem, m, id=f"{p.stem}-{'mock' if m else 'engine'}")
    for p in PIPELINES for m in (False, True)
    if p.stem in OWN_NODES or (m and p.stem in MEDIA)
]

# --- Dynamo 1.6.1, read in the ai-dynamo==1.6.1 wheel (PyPI) ---------------------------------------

#: Modules a DGD component may run, and the flags of Dynamo's own parser we use.
DYNAMO_FLAGS: dict[str, set[str]] = {
    # dynamo/frontend/frontend_args.py (--http-port), dynamo/common/configuration/groups/router_args.py.
    "dynamo.frontend": {"--http-port", "--router-mode"},
    # dynamo/vllm/backend_args.py DynamoVllmArgGroup; other flags go on to vLLM's own parser (args.py).
    "dynamo.vllm": {"--disaggregation-mode", "--enable-multimodal", "--route-to-encoder", "--embedding-transfer-mode"},
    # dynamo/sglang/backend_args.py; other flags go on to SGLang's ServerArgs.
    "dynamo.sglang": {"--disaggregation-mode", "--enable-multimodal", "--dedicated-mm-encoder"},
    # dynamo/trtllm/backend_args.py DynamoTrtllmArgGroup: everything is Dynamo's.
    "dynamo.trtllm": {"--model", "--served-model-name", "--tensor-parallel-size", "--pipeline-parallel-size",
                      "--max-seq-len", "--kv-block-size", "--extra-engine-args", "--override-engine-args",
                      "--disaggregation-mode", "--enable-multimodal", "--encode-endpoint"},
    # dynamo/mocker/args.py.
    "dynamo.mocker": {"--model-path", "--model-name", "--disaggregation-mode"},
}
#: Choices of the flags that have them (same files; sglang's --disaggregation-mode also SGLang's own).
CHOICES: dict[tuple[str, str], set[str]] = {
    ("dynamo.frontend", "--router-mode"): {"round-robin", "random", "power-of-two", "kv", "direct", "least-loaded",
                                           "device-aware-weighted"},
    ("dynamo.vllm", "--disaggregation-mode"): {"agg", "pd", "prefill", "decode", "encode"},
    ("dynamo.sglang", "--disaggregation-mode"): {"agg", "pd", "prefill", "decode", "encode", "null"},
    ("dynamo.trtllm", "--disaggregation-mode"): {"agg", "pd", "prefill", "decode", "encode"},
    ("dynamo.mocker", "--disaggregation-mode"): {"agg", "prefill", "decode"},
}
#: Flags 1.6.1 removed (dynamo/vllm/backend_args.py _REMOVED_MULTIMODAL_ENV_VARS) or renamed.
GONE = {"--multimodal-encode-worker", "--multimodal-worker", "--multimodal-processor", "--multimodal-decode-worker",
        "--is-prefill-worker", "--is-decode-worker", "--mm-encoder-only", "--ec-transfer-config", "--encoder-only",
        "--language-only", "--encoder-urls"}
#: Engine flags that only the Dynamo form uses (vLLM 0.32 EngineArgs.enable_mm_embeds).
ENGINE_ONLY_IN_DYNAMO = {"dynamo.vllm": {"--enable-mm-embeds"}}
#: Runtime images of ai-dynamo 1.6.1 (dynamo/profiler/templates/dgd/*/*.yaml).
RUNTIMES = {"nvcr.io/nvidia/ai-dynamo/vllm-runtime:1.6.1", "nvcr.io/nvidia/ai-dynamo/sglang-runtime:1.6.1",
            "nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:1.6.1"}


def _dgd(stem: str, mock: bool = False) -> tuple[Any, dict[str, Any], dict[str, str]]:
    the_plan = compile_plan(ROOT / "pipelines" / f"{stem}.py", mock)
    files = k8s.render(the_plan, DYNAMO)
    return the_plan, yaml.safe_load(files["dynamographdeployment.yaml"]), files


def validate_dgd(doc: dict[str, Any]) -> None:
    validate_crd(doc)
    for comp in doc["spec"]["components"]:
        validate_pod_template(comp["podTemplate"], comp["name"])


def _flags(args: list[str]) -> list[tuple[str, str | None]]:
    """(flag, the value after it or None) for every ``--flag`` in args."""
    out = []
    for i, a in enumerate(args):
        if a.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else None
            out.append((a, nxt))
    return out


@pytest.mark.parametrize("stem,mock", EXPRESSIBLE)
def test_dgd_is_valid_and_matches_the_graph(request: pytest.FixtureRequest, stem: str, mock: bool) -> None:
    the_plan, doc, files = _dgd(stem, mock)
    assert_golden(request, f"{stem}/k8s-dynamo{'-mock' if mock else ''}", files)
    assert set(yaml.safe_load(files["kustomization.yaml"])["resources"]) == set(files) - {"kustomization.yaml"}
    assert doc["apiVersion"] == "nvidia.com/v1beta1" and doc["kind"] == "DynamoGraphDeployment"
    validate_dgd(doc)
    for extra in docs_of({k: v for k, v in files.items() if k != "dynamographdeployment.yaml"}):
        validate_core(extra)
    comps = {c["name"]: c for c in doc["spec"]["components"]}
    # Every node is a component but the processor, whose job Dynamo's frontend and workers do.
    assert set(comps) == {s.node for s in the_plan.services if s.role != "processor"}
    gpus = 0
    for name, c in comps.items():
        replicas = the_plan.of_node(name)
        assert c["replicas"] == len(replicas)
        s = replicas[0]
        assert c["type"] == ("frontend" if s.role == "frontend" else s.dynamo.component)
        main = c["podTemplate"]["spec"]["containers"][0]
        assert main["name"] == "main"  # the container Dynamo's operator fills in
        assert main["image"] in RUNTIMES
        per_pod = int(main.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
        gpus += c["replicas"] * c.get("multinode", {}).get("nodeCount", 1) * per_pod
        assert not any("${" in a or "$(SG_" in a for a in main["args"]), main["args"]
    assert gpus == sum(s.gpus * s.hosts for s in the_plan.services)


@pytest.mark.parametrize("stem,mock", EXPRESSIBLE)
def test_commands_name_real_dynamo_modules_and_flags(stem: str, mock: bool) -> None:
    the_plan, doc, _ = _dgd(stem, mock)
    for c in doc["spec"]["components"]:
        main = c["podTemplate"]["spec"]["containers"][0]
        assert main["command"][:2] == ["python3", "-m"] and main["command"][2] in DYNAMO_FLAGS, main["command"]
        module = main["command"][2]
        # Engine flags a Dynamo worker hands on to its engine are those of our own engine command,
        # which tests/test_engine_flags.py checks against the engine's parser.
        engine_flags = {a for s in the_plan.of_node(c["name"]) for a in s.argv if a.startswith("--")}
        passes_on = module in ("dynamo.vllm", "dynamo.sglang")
        for flag, value in _flags(main["args"]):
            assert flag not in GONE, f"{c['name']}: {flag} is not in Dynamo 1.6.1"
            known = DYNAMO_FLAGS[module] | ENGINE_ONLY_IN_DYNAMO.get(module, set())
            assert flag in known or (passes_on and flag in engine_flags), f"{c['name']}: {module} has no {flag}"
            if (module, flag) in CHOICES:
                assert value in CHOICES[(module, flag)], f"{c['name']}: {flag} {value}"


def test_multimodal_graphs_map_like_dynamos_own() -> None:
    """E/P/D: an encode worker, a prefill that routes to it and takes embeddings, a multimodal decode."""
    _, doc, _ = _dgd("e_p_d")
    args = {c["name"]: c["podTemplate"]["spec"]["containers"][0]["args"] for c in doc["spec"]["components"]}
    types = {c["name"]: c["type"] for c in doc["spec"]["components"]}
    assert "processor" not in args
    enc = args["encoder"]
    assert enc[enc.index("--disaggregation-mode") + 1] == "encode" and "--enable-multimodal" in enc
    assert types["encoder"] == "worker"
    pre = args["prefill"]
    assert {"--route-to-encoder", "--enable-multimodal", "--enable-mm-embeds"} <= set(pre)
    assert pre[pre.index("--disaggregation-mode") + 1] == "prefill" and types["prefill"] == "prefill"
    dec = args["decode"]
    assert dec[dec.index("--disaggregation-mode") + 1] == "decode" and "--enable-multimodal" in dec
    # E/PD: one aggregated worker that routes to the encoder; EPD: one multimodal worker.
    _, doc, _ = _dgd("e_pd")
    pd = next(c for c in doc["spec"]["components"] if c["name"] == "prefill-decode")
    pd_args = pd["podTemplate"]["spec"]["containers"][0]["args"]
    assert "--route-to-encoder" in pd_args and "--disaggregation-mode" not in pd_args and pd["type"] == "worker"
    _, doc, _ = _dgd("epd")
    w = next(c for c in doc["spec"]["components"] if c["name"] == "worker")
    assert "--enable-multimodal" in w["podTemplate"]["spec"]["containers"][0]["args"]


def test_trtllm_options_travel_as_override_json() -> None:
    _, doc, _ = _dgd("trtllm_pd")
    args = {c["name"]: c["podTemplate"]["spec"]["containers"][0]["args"] for c in doc["spec"]["components"]}
    import json

    pre = json.loads(args["prefill"][args["prefill"].index("--override-engine-args") + 1])
    assert pre["cache_transceiver_config"]["backend"] == "NIXL" and pre["disable_overlap_scheduler"] is True
    dec = json.loads(args["decode"][args["decode"].index("--override-engine-args") + 1])
    assert "disable_overlap_scheduler" not in dec and dec["cache_transceiver_config"]["max_tokens_in_buffer"] == 8192
    assert doc["spec"]["backendFramework"] == "trtllm"


def test_frontend_waits_on_no_service_of_ours() -> None:
    """Our per-replica Services do not exist under Dynamo's operator: no init container may wait on them."""
    for stem, mock in [("pd", False), ("kv_routed", True), ("e_p_d", False)]:
        _, doc, files = _dgd(stem, mock)
        assert "initContainers" not in files["dynamographdeployment.yaml"]
        assert "wait-for-dependencies" not in files["dynamographdeployment.yaml"]


def test_kv_routing_becomes_dynamo_kv_router() -> None:
    _, doc, _ = _dgd("kv_routed")
    fe = next(c for c in doc["spec"]["components"] if c["type"] == "frontend")
    args = fe["podTemplate"]["spec"]["containers"][0]["args"]
    assert args[args.index("--router-mode") + 1] == "kv"


def test_multinode_leaves_rank_wiring_to_the_operator() -> None:
    _, doc, _ = _dgd("multinode_pd")
    dec = next(c for c in doc["spec"]["components"] if c["name"] == "decode")
    assert dec["multinode"] == {"nodeCount": 2}
    container = dec["podTemplate"]["spec"]["containers"][0]
    args = container["args"]
    assert "--node-rank" not in args and "--master-addr" not in args and "--disaggregation-mode" in args
    # nor our follower command and per-host address: the operator starts and wires every host
    assert "--headless" not in args and "serve" not in args
    assert "VLLM_HOST_IP" not in {e["name"] for e in container.get("env", [])}


def test_per_replica_env_is_left_out() -> None:
    _, doc, _ = _dgd("pd")
    for c in doc["spec"]["components"]:
        env = {e["name"] for e in c["podTemplate"]["spec"]["containers"][0].get("env", [])}
        assert "VLLM_NIXL_SIDE_CHANNEL_HOST" not in env


def test_budgets_select_the_components_pods() -> None:
    _, doc, files = _dgd("e_p_d")
    budgets = {b["metadata"]["name"]: b for b in docs_of(files) if b["kind"] == "PodDisruptionBudget"}
    multi = {c["name"] for c in doc["spec"]["components"] if c["replicas"] >= 2}
    assert multi == {"encoder", "decode"} and {b.removeprefix("llava-e-p-d-") for b in budgets} == multi
    for c in doc["spec"]["components"]:
        labels = c["podTemplate"]["metadata"]["labels"]
        hits = [b for b in budgets.values() if all(labels.get(k) == v for k, v in
                                                   b["spec"]["selector"]["matchLabels"].items())]
        assert len(hits) == (1 if c["name"] in multi else 0)


@pytest.mark.parametrize("stem,mock", REFUSED)
def test_what_dynamo_cannot_run_is_refused_naming_node_and_why(stem: str, mock: bool) -> None:
    with pytest.raises(TargetError) as info:
        _dgd(stem, mock)
    err = info.value
    assert err.node in {s.node for s in compile_plan(ROOT / "pipelines" / f"{stem}.py", mock).services}
    assert f"node '{err.node}'" in str(err) and "flavor=plain" in err.hint
    # The reason: Dynamo's mocker (no encode mode, no media), or no place for a node of your own.
    assert "dynamo.mocker" in str(err) or "Dynamo's mocker" in str(err) or "request path" in str(err), str(err)


def test_schema_catches_a_wrong_component_type() -> None:
    _, doc, _ = _dgd("pd")
    doc["spec"]["components"][0]["type"] = "router"
    with pytest.raises(AssertionError, match="router"):
        validate_dgd(doc)


def test_shipped_schemas_are_where_the_tests_look() -> None:
    assert sorted(p.name for p in pathlib.Path(SCHEMAS).glob("*.json")) == sorted(CRD_SCHEMAS.values())


def test_enable_mm_embeds_is_a_vllm_flag() -> None:
    """The one engine flag only the Dynamo form passes (vLLM's EngineArgs field), checked where vLLM is here."""
    arg_utils = pytest.importorskip("vllm.engine.arg_utils", reason="vLLM is not installed here")
    import dataclasses

    assert "enable_mm_embeds" in {f.name for f in dataclasses.fields(arg_utils.EngineArgs)}


@pytest.mark.parametrize("stem,mock", EXPRESSIBLE)
def test_kubectl_kustomize_builds(tmp_path: pathlib.Path, stem: str, mock: bool) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; `kubectl kustomize` not checked")
    _, _, files = _dgd(stem, mock)
    write_output(files, str(tmp_path / "out"))
    res = subprocess.run([kubectl, "kustomize", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert len([d for d in yaml.safe_load_all(res.stdout) if d]) == len(docs_of(files))
