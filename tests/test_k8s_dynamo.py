"""``-O flavor=dynamo``: a DynamoGraphDeployment checked against Dynamo's v1beta1 CRD schema (shipped)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from compiler.targets import k8s
from tests.goldens import assert_golden
from tests.test_k8s_manifests import (
    CRD_SCHEMAS,
    PIPELINES,
    ROOT,
    SCHEMAS,
    compile_plan,
    validate_crd,
    validate_pod_template,
)

#: Graphs whose every node has a Dynamo component and whose engines Dynamo's workers run.
SUPPORTED = ["agg", "kv_routed", "multinode_pd", "pd", "sglang_pd"]
DYNAMO = k8s.Options(flavor="dynamo")


def _dgd(stem: str, mock: bool = False) -> tuple[Any, dict[str, Any], dict[str, str]]:
    the_plan = compile_plan(ROOT / "pipelines" / f"{stem}.py", mock)
    files = k8s.render(the_plan, DYNAMO)
    return the_plan, yaml.safe_load(files["dynamographdeployment.yaml"]), files


def validate_dgd(doc: dict[str, Any]) -> None:
    validate_crd(doc)
    for comp in doc["spec"]["components"]:
        validate_pod_template(comp["podTemplate"], comp["name"])


@pytest.mark.parametrize("mock", [False, True], ids=["engine", "mock"])
@pytest.mark.parametrize("stem", SUPPORTED)
def test_dgd_is_valid_and_matches_the_graph(request: pytest.FixtureRequest, stem: str, mock: bool) -> None:
    the_plan, doc, files = _dgd(stem, mock)
    assert_golden(request, f"{stem}/k8s-dynamo{'-mock' if mock else ''}", files)
    assert yaml.safe_load(files["kustomization.yaml"])["resources"] == ["dynamographdeployment.yaml"]
    assert doc["apiVersion"] == "nvidia.com/v1beta1" and doc["kind"] == "DynamoGraphDeployment"
    validate_dgd(doc)
    comps = {c["name"]: c for c in doc["spec"]["components"]}
    nodes = {s.node for s in the_plan.services}
    assert set(comps) == nodes
    gpus = 0
    for name, c in comps.items():
        replicas = the_plan.of_node(name)
        assert c["replicas"] == len(replicas)
        assert c["type"] == replicas[0].role
        main = c["podTemplate"]["spec"]["containers"][0]
        assert main["name"] == "main"  # the container Dynamo's operator fills in
        per_pod = int(main.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
        gpus += c["replicas"] * c.get("multinode", {}).get("nodeCount", 1) * per_pod
        assert not any("${" in a or "$(SG_" in a for a in main["args"]), main["args"]
    assert gpus == sum(s.gpus * s.hosts for s in the_plan.services)


def test_kv_routing_becomes_dynamo_kv_router() -> None:
    _, doc, _ = _dgd("kv_routed")
    fe = next(c for c in doc["spec"]["components"] if c["type"] == "frontend")
    args = fe["podTemplate"]["spec"]["containers"][0]["args"]
    assert args[args.index("--router-mode") + 1] == "kv"


def test_multinode_leaves_rank_wiring_to_the_operator() -> None:
    _, doc, _ = _dgd("multinode_pd")
    dec = next(c for c in doc["spec"]["components"] if c["name"] == "decode")
    assert dec["multinode"] == {"nodeCount": 2}
    args = dec["podTemplate"]["spec"]["containers"][0]["args"]
    assert "--node-rank" not in args and "--master-addr" not in args and "--disaggregation-mode" in args


def test_per_replica_env_is_left_out() -> None:
    _, doc, _ = _dgd("pd")
    for c in doc["spec"]["components"]:
        env = {e["name"] for e in c["podTemplate"]["spec"]["containers"][0].get("env", [])}
        assert "VLLM_NIXL_SIDE_CHANNEL_HOST" not in env


@pytest.mark.parametrize("stem", sorted({p.stem for p in PIPELINES} - set(SUPPORTED)))
def test_unsupported_graphs_fail_with_the_node_named(stem: str) -> None:
    with pytest.raises(ValueError, match=r"node '[a-z-]+'.*-O flavor=plain"):
        _dgd(stem)


def test_schema_catches_a_wrong_component_type() -> None:
    _, doc, _ = _dgd("pd")
    doc["spec"]["components"][0]["type"] = "router"
    with pytest.raises(AssertionError, match="router"):
        validate_dgd(doc)


def test_shipped_schemas_are_where_the_tests_look() -> None:
    assert sorted(p.name for p in pathlib.Path(SCHEMAS).glob("*.json")) == sorted(CRD_SCHEMAS.values())
