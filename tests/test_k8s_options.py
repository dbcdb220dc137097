"""k8s target options: -O on the command line, platform["k8s"] in the pipeline, and their errors."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from compiler.cli import app
from compiler.targets.output import MARKER
from compiler.plan import PlanOptions, plan
from compiler.targets import k8s
from graph import Decode, Frontend, Graph, Prefill, ValidateOptions, load_graph, resolve, validate_spec
from tests.test_k8s_manifests import (
    ROOT,
    compile_plan,
    docs_of,
    semantic_problems,
    validate_all,
    validate_core,
    validate_crd,
    validate_lws,
)

PD = ROOT / "pipelines" / "pd.py"


def _pd_plan(**platform: Any):
    with Graph("opt-pd") as g:
        Frontend() >> Prefill(engine="vllm", model="m", platform={"k8s": platform} if platform else {}) >> Decode(
            engine="vllm", model="m", replicas=2)
    return plan(resolve(g), PlanOptions())


def _deployment(files: dict[str, str], service: str) -> dict[str, Any]:
    return next(d for d in docs_of(files) if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(service))


def _container(files: dict[str, str], service: str) -> dict[str, Any]:
    return _deployment(files, service)["spec"]["template"]["spec"]["containers"][0]


def test_cluster_options_reach_every_object() -> None:
    opts = k8s.Options(namespace="llm", hf_token_secret="hf", model_cache_pvc="models",
                       engine_images={"vllm": "reg/vllm:1"},
                       image_pull_policy="Always", image_pull_secret="regcred", service_monitor=True,
                       frontend_service_type="LoadBalancer", shared_cache_pvc="ec")
    the_plan = _pd_plan()
    files = k8s.render(the_plan, opts)
    validate_all(files)
    assert semantic_problems(the_plan, files) == []
    docs = docs_of(files)
    assert {d["metadata"].get("namespace") for d in docs} == {"llm"}
    assert "servicemonitor.yaml" in yaml.safe_load(files["kustomization.yaml"])["resources"]
    c = _container(files, "decode-1")
    assert c["image"] == "reg/vllm:1" and c["imagePullPolicy"] == "Always"
    token = next(e for e in c["env"] if e["name"] == "HF_TOKEN")
    assert token == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    # No files edge in a text P/D graph: the shared claim is mounted nowhere (tests/test_k8s_security.py).
    assert mounts == {"dshm": "/dev/shm", "model-cache": opts.model_cache_path, "tmp": "/tmp",
                      "home": "/home/servegraph"}
    assert {"name": "HF_HOME", "value": opts.model_cache_path} in c["env"]
    fe = _container(files, "frontend-0")
    assert "HF_TOKEN" not in {e["name"] for e in fe["env"]} and fe["image"] == opts.image
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("frontend-0"))
    assert svc["spec"]["type"] == "LoadBalancer"
    # No secret value is ever inline.
    assert "secretKeyRef" in files["nodes/decode.yaml"] and "kind: Secret" not in "".join(files.values())


def test_model_cache_on_a_host_path() -> None:
    files = k8s.render(_pd_plan(), k8s.Options(model_cache_host_path="/data/hf"))
    validate_all(files)
    spec = _deployment(files, "prefill-0")["spec"]["template"]["spec"]
    vol = next(v for v in spec["volumes"] if v["name"] == "model-cache")
    assert vol["hostPath"] == {"path": "/data/hf", "type": "DirectoryOrCreate"}
    with pytest.raises(ValueError, match="not both"):
        k8s.Options(model_cache_host_path="/a", model_cache_pvc="b")


def test_platform_settings_and_command_line_per_node() -> None:
    the_plan = _pd_plan(node_selector={"gpu": "a100"}, tolerations=[{"key": "gpu", "operator": "Exists"}],
                        resources={"requests": {"cpu": "8", "memory": "64Gi"}}, annotations={"team": "llm"})
    opts = k8s.Options(node_selectors={"decode": {"gpu": "h100"}, "prefill": {"gpu": "h200"}})
    files = k8s.render(the_plan, opts)
    validate_all(files)
    pre = _deployment(files, "prefill-0")["spec"]["template"]
    # The command line wins over the pipeline.
    assert pre["spec"]["nodeSelector"] == {"gpu": "h200"}
    assert pre["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pre["metadata"]["annotations"]["team"] == "llm"
    res = pre["spec"]["containers"][0]["resources"]
    assert res["requests"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}
    assert res["limits"] == {"nvidia.com/gpu": "1"}
    assert _deployment(files, "decode-0")["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "h100"}


def test_unknown_platform_key_names_node_and_key() -> None:
    with pytest.raises(ValueError, match=r"node 'prefill': platform\['k8s'\] key 'nodeSelector' is unknown"):
        k8s.render(_pd_plan(nodeSelector={"a": "b"}))


def test_badly_typed_platform_value_is_named() -> None:
    with pytest.raises(ValueError, match=r"node 'prefill': platform\['k8s'\]\['tolerations'\]"):
        k8s.render(_pd_plan(tolerations="all"))


def test_gpu_override_is_refused() -> None:
    with pytest.raises(ValueError, match="GPUs come from the graph"):
        k8s.render(_pd_plan(resources={"limits": {"nvidia.com/gpu": 4}}))


def test_command_line_map_naming_unknown_node() -> None:
    with pytest.raises(ValueError, match="'decoder', which is neither a node nor a role"):
        k8s.render(_pd_plan(), k8s.Options(tolerations={"decoder": []}))


def test_names_too_long_for_kubernetes() -> None:
    with pytest.raises(ValueError, match="-O prefix="):
        k8s.render(_pd_plan(), k8s.Options(prefix="x" * 60 + "-"))


def test_prefix_renames_services_and_their_addresses() -> None:
    files = k8s.render(_pd_plan(), k8s.Options(prefix="a-"))
    env = {e["name"]: e.get("value") for e in _container(files, "frontend-0")["env"]}
    assert env["SG_HOST_DECODE_1"] == "a-decode-1"
    assert {d["metadata"]["name"] for d in docs_of(files) if d["kind"] == "Service"} == {
        "a-frontend-0", "a-prefill-0", "a-decode-0", "a-decode-1"}


def test_gpu_budget_feeds_validation() -> None:
    spec = resolve(load_graph(str(PD)))  # prefill 1 GPU + decode tp=2: 3 GPUs
    budget = k8s.K8sTarget().gpu_budget(k8s.Options(gpus=2))
    errors = validate_spec(spec, ValidateOptions(gpu_budget=budget.total, gpus_per_host=budget.per_host))
    assert [e for e in errors if "GPU" in e.message], [e.message for e in errors]
    assert not validate_spec(spec, ValidateOptions(gpu_budget=64))


def test_cli_compiles_with_options(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["compile", str(PD), "--target", "k8s", "-o", str(out), "--mock",
                                   "-O", "namespace=prod", "-O", "node_selectors={decode: {pool: gpu}}"])
    assert res.exit_code == 0, res.output
    files = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file() and p.name != MARKER}
    validate_all(files)
    dec = next(d for d in docs_of(files) if d["kind"] == "Deployment" and "decode" in d["metadata"]["name"])
    assert dec["metadata"]["namespace"] == "prod"
    assert dec["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}


def test_cli_rejects_bad_option(tmp_path: pathlib.Path) -> None:
    res = CliRunner().invoke(app, ["compile", str(PD), "--target", "k8s", "-o", str(tmp_path / "o"),
                                   "-O", "image_pull_policy=Sometimes"])
    assert res.exit_code != 0 and not (tmp_path / "o").exists()


# The checks themselves must catch what they are there for.


def test_strict_schema_rejects_unknown_field() -> None:
    files = k8s.render(compile_plan(PD))
    dep = copy.deepcopy(_deployment(files, "decode-0"))
    dep["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(AssertionError, match="gpus"):
        validate_core(dep)


def test_service_monitor_schema_rejects_unknown_field() -> None:
    files = k8s.render(compile_plan(PD), k8s.Options(service_monitor=True))
    sm = copy.deepcopy(next(d for d in docs_of(files) if d["kind"] == "ServiceMonitor"))
    validate_crd(sm)
    sm["spec"]["endpoints"][0]["scrapePath"] = "/metrics"
    with pytest.raises(AssertionError, match="scrapePath"):
        validate_crd(sm)


def test_lws_schema_rejects_unknown_field() -> None:
    files = k8s.render(compile_plan(ROOT / "pipelines" / "multinode_pd.py"))
    lws = copy.deepcopy(next(d for d in docs_of(files) if d["kind"] == "LeaderWorkerSet"))
    validate_lws(lws)
    lws["spec"]["leaderWorkerTemplate"]["sizes"] = 2
    with pytest.raises(AssertionError, match="sizes"):
        validate_lws(lws)


def test_semantic_checks_catch_broken_wiring() -> None:
    the_plan = compile_plan(PD)
    files = k8s.render(the_plan)
    broken = dict(files)
    broken["nodes/decode.yaml"] = files["nodes/decode.yaml"].replace("targetPort: http", "targetPort: web", 1)
    broken["nodes/frontend.yaml"] = files["nodes/frontend.yaml"].replace(
        f"value: {the_plan.graph}-prefill-0", f"value: {the_plan.graph}-prefil-0")
    broken["nodes/prefill.yaml"] = files["nodes/prefill.yaml"].replace("nvidia.com/gpu: '1'", "nvidia.com/gpu: '2'", 1)
    problems = "\n".join(semantic_problems(the_plan, broken))
    assert "targets port web" in problems
    assert "SG_HOST_PREFILL_0" in problems and "names no Service" in problems
    assert "requests" in problems and "GPUs" in problems


def test_engine_images_are_pinned_and_overridden_by_engine_name(tmp_path: pathlib.Path) -> None:
    """Every image names a version (never :latest); -O image_<engine>= replaces one engine's."""
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["compile", str(PD), "--target", "k8s", "-o", str(out)])
    assert res.exit_code == 0, res.output
    files = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file() and p.name != MARKER}
    images = {c["image"] for d in docs_of(files) for c in _containers(d)}
    assert images and all(":" in i and not i.endswith(":latest") for i in images), images
    assert "vllm/vllm-openai:v0.32.0" in images
    res = CliRunner().invoke(app, ["compile", str(PD), "--target", "k8s", "-o", str(out), "-O", "image_vllm=my/vllm:x",
                                   "-O", "image=reg/servegraph:9"])
    assert res.exit_code == 0, res.output
    files = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file() and p.name != MARKER}
    images = {c["image"] for d in docs_of(files) for c in _containers(d)}
    assert images == {"my/vllm:x", "reg/servegraph:9"}, images
    bad = CliRunner().invoke(app, ["compile", str(PD), "--target", "k8s", "-o", str(out), "-O", "image_vlm=x"])
    assert bad.exit_code == 2 and "no engine called 'vlm'; did you mean 'vllm'?" in bad.output, bad.output
    typo = CliRunner().invoke(app, ["compile", str(PD), "--target", "k8s", "-o", str(out), "-O", "network_polcy=true"])
    assert typo.exit_code == 2 and "'network_polcy' is unknown; did you mean 'network_policy'?" in typo.output, \
        typo.output


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    templates = [spec.get("template")] + [spec.get("leaderWorkerTemplate", {}).get(k) for k in ("leaderTemplate",
                                                                                               "workerTemplate")]
    return [c for t in templates if t for c in t["spec"].get("containers", []) + t["spec"].get("initContainers", [])]
