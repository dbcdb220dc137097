"""The k8s target on every example: goldens, upstream schemas, kustomize, and checks a schema can't make.

Schemas: core kinds through kubernetes-validate (strict: unknown fields are
errors); LeaderWorkerSet, ServiceMonitor and DynamoGraphDeployment through
their CRDs' openAPIV3Schema shipped in tests/k8s_schemas/ (made strict the same
way; pod templates inside them also through kubernetes-validate).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess
from typing import Any

import jsonschema
import pytest
import yaml

from graph.plan import Plan
from compiler.plan import PlanOptions, plan
from compiler.targets import k8s
from compiler.targets.k8s_meta import k8s_expand
from compiler.targets.output import write_output
from compiler.load import load_spec
from tests.goldens import assert_golden

ROOT = pathlib.Path(__file__).resolve().parent.parent
PIPELINES = sorted((ROOT / "pipelines").glob("*.py"))
SCHEMAS = pathlib.Path(__file__).resolve().parent / "k8s_schemas"
#: Newest Kubernetes whose schemas kubernetes-validate ships.
KUBE_VERSION = "1.37.0"
GPU = "nvidia.com/gpu"


# --- helpers shared with the other test_k8s_* modules -----------------------------------


def compile_plan(path: pathlib.Path, mock: bool = False) -> Plan:
    """The Plan `graph compile` builds for a pipeline file (default PlanOptions, as the CLI)."""
    spec = load_spec(str(path), mock=mock)[0]
    return plan(spec, PlanOptions())


def docs_of(files: dict[str, str]) -> list[dict[str, Any]]:
    """Every manifest document of a k8s output, kustomization.yaml left out."""
    out = []
    for name, text in sorted(files.items()):
        if name != "kustomization.yaml":
            out += [d for d in yaml.safe_load_all(text) if d]
    return out


def validate_core(doc: dict[str, Any]) -> None:
    """kubernetes-validate, strict, against the newest Kubernetes it ships."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}") from None


#: Custom resources -> the schema shipped for them in tests/k8s_schemas/.
CRD_SCHEMAS = {
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "leaderworkerset.x-k8s.io_v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
    ("nvidia.com/v1beta1", "DynamoGraphDeployment"): "nvidia.com_v1beta1_dynamographdeployment.json",
}


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    """A strict validator for a custom resource, from the CRD schema shipped in tests/k8s_schemas/."""
    shipped = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    assert shipped["kind"] == kind and api_version.endswith("/" + shipped["version"])
    return jsonschema.Draft7Validator(_strict(shipped["openAPIV3Schema"]))


def validate_crd(doc: dict[str, Any]) -> None:
    """A custom resource against its shipped CRD schema (unknown fields are errors)."""
    errors = sorted(crd_validator(doc["apiVersion"], doc["kind"]).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, f"{doc['kind']} {doc['metadata']['name']}: " + "; ".join(
        f"{list(e.path)}: {e.message}" for e in errors[:5]
    )


def _strict(schema: Any) -> Any:
    """A CRD schema where unknown fields are errors, as the API server's strict field validation has it."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
        if "properties" in schema:
            out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def validate_lws(doc: dict[str, Any]) -> None:
    """A LeaderWorkerSet against the shipped CRD schema (its pod templates: also kubernetes-validate)."""
    validate_crd(doc)
    for key in ("leaderTemplate", "workerTemplate"):
        validate_pod_template(doc["spec"]["leaderWorkerTemplate"][key], doc["metadata"]["name"])


def validate_pod_template(template: dict[str, Any], name: str) -> None:
    """A PodTemplateSpec inside a custom resource, checked by wrapping it in a core PodTemplate."""
    validate_core({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template})


def validate_all(files: dict[str, str]) -> None:
    """Each document against the schema of its kind."""
    for doc in docs_of(files):
        if doc["kind"] == "LeaderWorkerSet":
            validate_lws(doc)
        elif (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
            validate_crd(doc)
        else:
            validate_core(doc)


def workloads(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(workload, its pod templates) for each Deployment and LeaderWorkerSet."""
    out = []
    for d in docs:
        if d["kind"] == "Deployment":
            out.append((d, [d["spec"]["template"]]))
        elif d["kind"] == "LeaderWorkerSet":
            lwt = d["spec"]["leaderWorkerTemplate"]
            out.append((d, [lwt["leaderTemplate"], lwt["workerTemplate"]]))
    return out


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def semantic_problems(the_plan: Plan, files: dict[str, str]) -> list[str]:
    """What a cluster would trip over that no schema sees; empty when all is well."""
    docs = docs_of(files)
    problems: list[str] = []
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    wl = workloads(docs)
    for name, svc in services.items():
        sel = svc["spec"]["selector"]
        hits = [(w, [t for t in ts if _matches(sel, t["metadata"]["labels"])]) for w, ts in wl]
        hits = [(w, ts) for w, ts in hits if ts]
        if len(hits) != 1:
            problems.append(f"Service {name} selects {len(hits)} workloads, not exactly one")
            continue
        ports = {p["name"] for t in hits[0][1] for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports:
                problems.append(f"Service {name} targets port {p['targetPort']}, which no selected container declares")
    for w, templates in wl:
        wname = w["metadata"]["name"]
        sel = w["spec"].get("selector", {}).get("matchLabels")
        if sel and not _matches(sel, templates[0]["metadata"]["labels"]):
            problems.append(f"{w['kind']} {wname}: selector does not match its pod labels")
        for t in templates:
            problems += _pod_problems(wname, w["kind"], t, services, config)
    problems += _gpu_problems(the_plan, wl)
    return problems


def _pod_problems(wname: str, kind: str, template: dict[str, Any], services: dict[str, Any],
                  config: dict[str, Any]) -> list[str]:
    problems = []
    spec = template["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for init in spec.get("initContainers", []):
        for url in init["args"]:
            m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)(/\S*)", url)
            svc = services.get(m.group(1)) if m else None
            if svc is None or int(m.group(2)) not in {p["port"] for p in svc["spec"]["ports"]}:
                problems.append(f"{wname}: waits on {url}, which no Service of the output serves")
    for c in spec["containers"]:
        defined = {"LWS_LEADER_ADDRESS", "LWS_WORKER_INDEX", "LWS_GROUP_SIZE"} if kind == "LeaderWorkerSet" else set()
        for e in c.get("env", []):
            for ref in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value", "")):
                if ref not in defined:
                    problems.append(f"{wname}: env {e['name']} refers to $({ref}) before it is defined")
            if e["name"].startswith("SG_HOST_") and e.get("value") not in services:
                problems.append(f"{wname}: {e['name']}={e.get('value')} names no Service of the output")
            defined.add(e["name"])
        for arg in c.get("command", []) + c.get("args", []):
            for ref in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                if ref not in defined:
                    problems.append(f"{wname}: argument {arg!r} refers to $({ref}), not in the container's env")
            if "${" in arg:
                problems.append(f"{wname}: argument {arg!r} keeps a ${{...}} placeholder Kubernetes won't expand")
        for m in c.get("volumeMounts", []):
            vol = volumes.get(m["name"])
            if vol is None:
                problems.append(f"{wname}: mount {m['name']} has no volume")
            elif "configMap" in vol:
                for item in vol["configMap"]["items"]:
                    if item["key"] not in config["data"]:
                        problems.append(f"{wname}: config item {item['key']} is not in the ConfigMap")
                    else:
                        problems += _config_refs(wname, config["data"][item["key"]], c)
                    path = f"{m['mountPath']}/{item['path']}"
                    named = [f"{m['mountPath']}/{(yaml.safe_load(config['data'][i['key']]) or {}).get('file')}"
                             for i in vol["configMap"]["items"] if f"{m['mountPath']}/{i['path']}" in c.get("args", [])]
                    if path not in c.get("args", []) and path not in named:
                        problems.append(f"{wname}: config file {path} is mounted but neither argv nor its config "
                                        "names it")
        gpu_req = c.get("resources", {}).get("requests", {}).get(GPU)
        gpu_lim = c.get("resources", {}).get("limits", {}).get(GPU)
        if gpu_req != gpu_lim:
            problems.append(f"{wname}: {GPU} requests {gpu_req} != limits {gpu_lim}")
    return problems


def _config_refs(wname: str, text: str, container: dict[str, Any]) -> list[str]:
    # Our processes expand ${SG_HOST_X} in their config from their env at start-up.
    env = {e["name"] for e in container.get("env", [])}
    return [f"{wname}: config refers to ${{{v}}}, not in the pod's env"
            for v in sorted(set(re.findall(r"\$\{([A-Z0-9_]+)\}", text))) if v not in env]


def _gpu_problems(the_plan: Plan, wl: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[str]:
    want = sum(s.gpus * s.hosts for s in the_plan.services)
    got = 0
    for w, templates in wl:
        per_pod = [int(c.get("resources", {}).get("limits", {}).get(GPU, 0))
                   for t in templates for c in t["spec"]["containers"]]
        if w["kind"] == "Deployment":
            got += w["spec"]["replicas"] * per_pod[0]
        else:
            size = w["spec"]["leaderWorkerTemplate"]["size"]
            got += w["spec"]["replicas"] * (per_pod[0] + (size - 1) * per_pod[1])
    return [] if got == want else [f"manifests request {got} GPUs, the Plan {want}"]


def served_paths(module: str) -> set[str] | None:
    """GET paths our process ``module`` serves, read from its app; None if it isn't built yet."""
    if importlib.util.find_spec(module) is None or importlib.util.find_spec(f"{module}.app") is None:
        return None
    app_module = importlib.import_module(f"{module}.app")
    from graph.plan import FrontendConfig, ProcessorConfig

    if module == "nodes.frontend":
        config: Any = FrontendConfig(graph="g", routes=[])
    elif module == "nodes.processor":
        config = ProcessorConfig(port=1, max_bytes=1, max_pixels=1, max_frames=1, max_duration_s=1.0,
                                 fetch_timeout_s=1.0, allow_private_urls=False)
    else:
        return None
    app = app_module.create_app(config)
    return {r.path for r in app.routes if "GET" in (getattr(r, "methods", None) or set())}


# --- tests ------------------------------------------------------------------------------

CASES = [pytest.param(p, m, id=f"{p.stem}-{'mock' if m else 'engine'}") for p in PIPELINES for m in (False, True)]


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, bool], tuple[Plan, dict[str, str]]]:
    out = {}
    for p in PIPELINES:
        for m in (False, True):
            the_plan = compile_plan(p, m)
            out[(p.stem, m)] = (the_plan, k8s.render(the_plan, k8s.Options()))
    return out


@pytest.mark.parametrize("path,mock", CASES)
def test_matches_golden(request: pytest.FixtureRequest, rendered, path: pathlib.Path, mock: bool) -> None:
    _, files = rendered[(path.stem, mock)]
    assert_golden(request, f"{path.stem}/k8s{'-mock' if mock else ''}", files)


@pytest.mark.parametrize("path,mock", CASES)
def test_passes_upstream_schemas(rendered, path: pathlib.Path, mock: bool) -> None:
    _, files = rendered[(path.stem, mock)]
    validate_all(files)


@pytest.mark.parametrize("path,mock", CASES)
def test_semantics(rendered, path: pathlib.Path, mock: bool) -> None:
    the_plan, files = rendered[(path.stem, mock)]
    assert semantic_problems(the_plan, files) == []
    # One Service per Plan service, named as its SG_HOST_ variable says.
    names = {d["metadata"]["name"] for d in docs_of(files) if d["kind"] == "Service"}
    assert names == {f"{the_plan.graph}-{s.name}" for s in the_plan.services}


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_kubectl_kustomize_builds(rendered, tmp_path: pathlib.Path, path: pathlib.Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; `kubectl kustomize` not checked")
    _, files = rendered[(path.stem, False)]
    write_output(files, str(tmp_path / "out"))
    res = subprocess.run([kubectl, "kustomize", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    built = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert len(built) == len(docs_of(files))


def test_probes_hit_paths_our_processes_serve(rendered) -> None:
    checked = set()
    for (stem, _), (the_plan, files) in rendered.items():
        for s in the_plan.services:
            module = s.argv[2] if s.argv[1:2] == ["-m"] else None
            if s.engine is None and module:
                paths = served_paths(module)
                if paths is None:
                    continue
                assert s.health.path in paths, f"{stem}: {module} serves no GET {s.health.path}"
                checked.add(module)
            else:
                # vLLM, SGLang, TRT-LLM and our mock engine all answer GET /health.
                assert s.health.path == "/health"
        for d in docs_of(files):
            for _, templates in workloads([d]):
                for c in templates[0]["spec"]["containers"]:
                    instance = d["metadata"]["labels"]["app.kubernetes.io/instance"]
                    svc = the_plan.service(instance[len(the_plan.graph) + 1:])
                    assert c["readinessProbe"]["httpGet"]["path"] == svc.health.path
    if not checked:
        pytest.skip("nodes.frontend / nodes.processor apps not importable; probe paths not cross-checked")
    assert "nodes.frontend" in checked


def test_multihost_replica_is_a_leader_worker_set(rendered) -> None:
    the_plan, files = rendered[("multinode_pd", False)]
    lws = [d for d in docs_of(files) if d["kind"] == "LeaderWorkerSet"]
    multi = [s for s in the_plan.services if s.hosts > 1]
    assert multi and len(lws) == len(multi)
    lwt = lws[0]["spec"]["leaderWorkerTemplate"]
    assert lwt["size"] == multi[0].hosts
    env = {e["name"]: e.get("value") for e in lwt["workerTemplate"]["spec"]["containers"][0]["env"]}
    assert env["SG_LEADER_HOST"] == "$(LWS_LEADER_ADDRESS)" and env["SG_NODE_RANK"] == "$(LWS_WORKER_INDEX)"
    # Only the leader serves HTTP and is selected by the Service; a worker host's probes ask the leader.
    worker = lwt["workerTemplate"]["spec"]["containers"][0]
    assert "httpGet" not in worker["readinessProbe"]
    assert "$LWS_LEADER_ADDRESS" in worker["livenessProbe"]["exec"]["command"][2]
    assert lwt["leaderTemplate"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == multi[0].health.path


def test_a_leader_worker_sets_workers_run_the_follower_command(rendered) -> None:
    """vLLM's ranks after the first run `vllm serve ... --headless`; the leader keeps the API server."""
    the_plan, files = rendered[("multinode_pd", False)]
    decode = the_plan.service("decode-0")
    assert decode.follower_argv is not None
    lws = next(d for d in docs_of(files) if d["kind"] == "LeaderWorkerSet")
    lwt = lws["spec"]["leaderWorkerTemplate"]
    leader, worker = (lwt[t]["spec"]["containers"][0] for t in ("leaderTemplate", "workerTemplate"))

    def k8s(argv: list[str]) -> list[str]:
        return [k8s_expand(a) for a in argv]

    assert [*leader["command"], *leader["args"]] == k8s(decode.argv)
    assert [*worker["command"], *worker["args"]] == k8s(decode.follower_argv)
    assert worker["args"][-1] == "--headless" and "--port" not in worker["args"]
    for c in (leader, worker):
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["VLLM_HOST_IP"] == "$(SG_SELF_HOST)"
        assert next(e for e in c["env"] if e["name"] == "SG_SELF_HOST")["valueFrom"] == {
            "fieldRef": {"fieldPath": "status.podIP"}}
    # the mock's one command runs on every host
    mock_plan, mock_files = rendered[("multinode_pd", True)]
    mock_lwt = next(d for d in docs_of(mock_files) if d["kind"] == "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
    assert (mock_lwt["workerTemplate"]["spec"]["containers"][0]["args"]
            == mock_lwt["leaderTemplate"]["spec"]["containers"][0]["args"])


def test_frontend_env_defines_every_upstream(rendered) -> None:
    the_plan, files = rendered[("e_p_d", False)]
    fe = next(d for d in docs_of(files) if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("frontend-0"))
    env = {e["name"]: e.get("value") for e in fe["spec"]["template"]["spec"]["containers"][0]["env"]}
    engines = [s for s in the_plan.services if s.engine]
    for s in engines:
        var = "SG_HOST_" + s.name.upper().replace("-", "_")
        assert env[var] == f"{the_plan.graph}-{s.name}"
    assert env.get("SG_SELF_HOST") is None  # from the downward API, not a literal


def test_output_is_deterministic() -> None:
    the_plan = compile_plan(ROOT / "pipelines" / "e_p_d.py")
    assert k8s.render(the_plan) == k8s.render(compile_plan(ROOT / "pipelines" / "e_p_d.py"))
