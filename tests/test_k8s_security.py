"""Pods a security review accepts (issue 18, items 4 and 5), on every example, in both flavours.

A walk over every container of every workload checks the settings themselves;
the probe of a multi-host worker is run against a real HTTP server; the
NetworkPolicies are evaluated as a cluster would (which pod may open which
port of which pod); the shared claim of a files edge is checked against the
folder the engines' argv names.
"""

from __future__ import annotations

import http.server
import pathlib
import shlex
import socket
import subprocess
import threading
from typing import Any, Iterator

import pytest
import yaml

from compiler.plan import PlanOptions, plan
from compiler.load import load_spec
from compiler.targets import TargetError, k8s
from compiler.targets.k8s_security import ENGINE_HOME, OUR_UID, RUNS_AS
from tests.test_k8s_manifests import PIPELINES, ROOT, compile_plan, docs_of, validate_all, validate_core, workloads

CASES = [pytest.param(p, m, id=f"{p.stem}-{'mock' if m else 'engine'}") for p in PIPELINES for m in (False, True)]
OURS = "servegraph:"


def _pods(files: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod template) of every Deployment, LeaderWorkerSet and DynamoGraphDeployment component."""
    for d in docs_of(files):
        if d["kind"] == "DynamoGraphDeployment":
            for c in d["spec"]["components"]:
                yield c["name"], c["podTemplate"]
        for w, templates in workloads([d]):
            for t in templates:
                yield w["metadata"]["name"], t


def _locked_down(where: str, c: dict[str, Any]) -> None:
    sc = c.get("securityContext", {})
    assert sc.get("allowPrivilegeEscalation") is False, where
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
    assert sc.get("capabilities", {}).get("add") is None, where
    assert "privileged" not in sc and sc.get("runAsUser") != 0, where
    assert c.get("resources", {}).get("requests", {}).get("cpu"), f"{where}: no cpu request"


@pytest.mark.parametrize("path,mock", CASES)
def test_every_container_of_every_workload(path: pathlib.Path, mock: bool) -> None:
    the_plan = compile_plan(path, mock)
    for options in (k8s.Options(), k8s.Options(flavor="dynamo")):
        try:
            files = k8s.render(the_plan, options)
        except TargetError:
            assert options.flavor == "dynamo"  # what Dynamo cannot run: tests/test_k8s_dynamo.py
            continue
        checked = 0
        for name, t in _pods(files):
            spec = t["spec"]
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
            for init in spec.get("initContainers", []):
                where = f"{path.stem}/{name}/{init['name']}"
                _locked_down(where, init)
                assert init["securityContext"]["runAsUser"] == OUR_UID and init["securityContext"]["runAsNonRoot"]
                assert init["securityContext"]["readOnlyRootFilesystem"] is True
                assert init["resources"]["requests"]["memory"], where
            for c in spec["containers"]:
                where = f"{path.stem}/{name}/{c['name']} ({options.flavor})"
                _locked_down(where, c)
                checked += 1
                if options.flavor == "dynamo":
                    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["runAsUser"] == 1000, where
                    assert spec["securityContext"]["runAsNonRoot"] is True, where
                    continue
                _plain_container(where, t, c)
        assert checked, path.stem


def _plain_container(where: str, t: dict[str, Any], c: dict[str, Any]) -> None:
    spec, sc = t["spec"], c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True, where
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in c, f"{where}: no {probe}"
    assert spec.get("automountServiceAccountToken") is False, where
    empty = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    writable = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in empty}
    assert "/tmp" in writable, where
    if c["image"].startswith(OURS):
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == sc["runAsGroup"] == OUR_UID, where
        assert "memory" in c["resources"]["limits"], where
        return
    # An engine: its image's user (said so on the pod) and every cache on an emptyDir.
    assert RUNS_AS in t["metadata"]["annotations"] and "root" in t["metadata"]["annotations"][RUNS_AS], where
    assert "runAsNonRoot" not in sc, where
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HOME"] == ENGINE_HOME and ENGINE_HOME in writable, where
    assert env["XDG_CACHE_HOME"].startswith(ENGINE_HOME) and env["HF_HOME"].startswith(ENGINE_HOME), where
    gpus = int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
    assert int(c["resources"]["requests"]["cpu"]) == 4 * max(gpus, 1), where  # the adapters' cpus_per_gpu


def test_engine_user_runs_engines_without_root() -> None:
    files = k8s.render(compile_plan(ROOT / "pipelines" / "multinode_pd.py"),
                       k8s.Options(engine_user=2000, model_cache_pvc="models", engine_capabilities=["IPC_LOCK"]))
    validate_all(files)
    engines = [(n, t, c) for n, t in _pods(files) for c in t["spec"]["containers"] if not c["image"].startswith(OURS)]
    assert len(engines) == 4  # prefill x2, decode leader and worker
    for name, t, c in engines:
        sc = c["securityContext"]
        assert (sc["runAsNonRoot"], sc["runAsUser"], sc["runAsGroup"]) == (True, 2000, 2000), name
        assert sc["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}, name
        assert t["spec"]["securityContext"]["fsGroup"] == 2000 and RUNS_AS not in t["metadata"].get("annotations", {})
        assert {"name": "HF_HOME", "value": "/root/.cache/huggingface"} in c["env"]  # the mounted model cache
    with pytest.raises(ValueError, match="0 is root"):
        k8s.Options(engine_user=0)


# --- a multi-host worker's probe, run ----------------------------------------------------------------


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_worker_host_probe_asks_its_leader() -> None:
    """The exec probe of an LWS worker, run by sh as the kubelet would: healthy leader 0, else not."""
    base = _free_port()
    spec = load_spec(str(ROOT / "pipelines" / "multinode_pd.py"), mock=True)[0]
    the_plan = plan(spec, PlanOptions(base_port=base))
    files = k8s.render(the_plan)
    worker = next(t for _, t in _pods(files) if t["metadata"]["labels"].get("servegraph.io/host-role") == "worker")
    command = worker["spec"]["containers"][0]["livenessProbe"]["exec"]["command"]
    leader = next(s for s in the_plan.services if s.hosts > 1)
    assert f":{leader.health.port}{leader.health.path}" in command[2]
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", leader.health.port), _Health)
    except OSError:
        pytest.skip(f"port {leader.health.port} is taken here; the probe was not run")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"PATH": "/usr/bin:/bin", "LWS_LEADER_ADDRESS": "127.0.0.1"}
    try:
        assert subprocess.run(command, env=env, timeout=20).returncode == 0
        _Health.status = 503
        assert subprocess.run(command, env=env, timeout=20, capture_output=True).returncode != 0
    finally:
        _Health.status = 200
        server.shutdown()
        server.server_close()
    assert subprocess.run(command, env=env, timeout=20, capture_output=True).returncode != 0  # no leader at all
    assert shlex.split(command[2])[:2] == ["exec", "python3"]


# --- disruption budgets ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_budget_for_every_node_of_two_replicas_or_more(path: pathlib.Path) -> None:
    the_plan = compile_plan(path)
    files = k8s.render(the_plan)
    budgets = [d for d in docs_of(files) if d["kind"] == "PodDisruptionBudget"]
    many = {n for n in {s.node for s in the_plan.services} if len(the_plan.of_node(n)) >= 2}
    assert {b["metadata"]["labels"]["app.kubernetes.io/name"] for b in budgets} == many
    pods = list(_pods(files))
    for b in budgets:
        assert b["spec"]["maxUnavailable"] == 1
        sel = b["spec"]["selector"]["matchLabels"]
        picked = {t["metadata"]["labels"]["app.kubernetes.io/instance"] for _, t in pods
                  if all(t["metadata"]["labels"].get(k) == v for k, v in sel.items())}
        node = b["metadata"]["labels"]["app.kubernetes.io/name"]
        assert picked == {f"{the_plan.graph}-{s.name}" for s in the_plan.of_node(node)}


# --- network policies, evaluated ---------------------------------------------------------------------


def _allowed(policies: list[dict[str, Any]], src: dict[str, str], src_ns: str, dst: dict[str, str],
             port: int, port_names: dict[str, int]) -> bool:
    """Whether a NetworkPolicy-enforcing cluster lets pod ``src`` (labels, namespace) open ``port`` on ``dst``."""
    def matches(sel: dict[str, Any], labels: dict[str, str]) -> bool:
        if not all(labels.get(k) == v for k, v in sel.get("matchLabels", {}).items()):
            return False
        for e in sel.get("matchExpressions", []):
            inside = labels.get(e["key"]) in e["values"]
            if (e["operator"] == "In") != inside:
                return False
        return True

    selecting = [p for p in policies if matches(p["spec"]["podSelector"], dst)]
    if not selecting:
        return True  # no policy selects it: open
    for p in selecting:
        for rule in p["spec"]["ingress"]:
            ports = rule.get("ports")
            if ports and not any(port_names.get(str(x["port"]), x["port"]) == port for x in ports):
                continue
            peers = rule.get("from")
            if peers is None:
                return True
            for peer in peers:
                if "podSelector" in peer and src_ns == "graph" and matches(peer["podSelector"], src):
                    return True
                ns = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                if ns is not None and ns == src_ns:
                    return True
    return False


@pytest.mark.parametrize("stem", ["e_p_d", "multinode_pd", "sglang_pd", "kv_routed"])
def test_network_policy_lets_only_the_graph_reach_inner_ports(stem: str) -> None:
    the_plan = compile_plan(ROOT / "pipelines" / f"{stem}.py")
    files = k8s.render(the_plan, k8s.Options(network_policy=True, service_monitor=True, metrics_namespace="mon"))
    validate_all(files)
    policies = [d for d in docs_of(files) if d["kind"] == "NetworkPolicy"]
    pods = [t for _, t in _pods(files)]
    stranger = {"app": "somebody-else"}
    for t in pods:
        labels = t["metadata"]["labels"]
        c = t["spec"]["containers"][0]
        names = {p["name"]: p["containerPort"] for p in c["ports"]}
        for pname, port in names.items():
            is_frontend_http = labels["app.kubernetes.io/component"] == "frontend" and pname == "http"
            assert _allowed(policies, stranger, "other", labels, port, names) == is_frontend_http, (labels, pname)
            # Every pod of the graph reaches every port (engines, side channels, bootstrap, dist).
            assert all(_allowed(policies, p["metadata"]["labels"], "graph", labels, port, names) for p in pods)
            # The metrics namespace reaches /metrics (the http port) and nothing else.
            assert _allowed(policies, stranger, "mon", labels, port, names) == (pname == "http")
    assert "networkpolicy.yaml" not in k8s.render(the_plan)
    with pytest.raises(ValueError, match="flavor=plain"):
        k8s.Options(network_policy=True, flavor="dynamo")


# --- the files edge's shared claim -------------------------------------------------------------------


def _shared_folder(argv: list[str]) -> str | None:
    for a in argv:
        if "shared_storage_path" in a:
            return yaml.safe_load(a)["ec_connector_extra_config"]["shared_storage_path"]
    return None


def test_files_edge_gets_a_claim_the_output_makes() -> None:
    the_plan = compile_plan(ROOT / "pipelines" / "e_p_d.py")
    files = k8s.render(the_plan, k8s.Options(shared_cache_storage_class="nfs", shared_cache_size="50Gi"))
    validate_all(files)
    claim = yaml.safe_load(files["storage.yaml"])
    validate_core(claim)
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs",
                             "resources": {"requests": {"storage": "50Gi"}}}
    assert "storage.yaml" in yaml.safe_load(files["kustomization.yaml"])["resources"]
    mounted = set()
    for name, t in _pods(files):
        c = t["spec"]["containers"][0]
        folder = _shared_folder(c.get("args", []))
        vols = {v["name"]: v for v in t["spec"].get("volumes", [])}
        shared = [m for m in c["volumeMounts"] if m["name"] == "shared-cache"]
        if folder is None:
            assert not shared, name
            continue
        # The folder the engine's argv names lies on the claim, in every pod at either end.
        assert any(folder == m["mountPath"] or folder.startswith(m["mountPath"].rstrip("/") + "/") for m in shared)
        assert vols["shared-cache"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        mounted.add(t["metadata"]["labels"]["app.kubernetes.io/name"])
    assert mounted == {"encoder", "prefill"}
    # A claim of yours: mounted, none made.
    files = k8s.render(the_plan, k8s.Options(shared_cache_pvc="my-rwx"))
    assert "storage.yaml" not in files and "claimName: my-rwx" in files["nodes/prefill.yaml"]
    # No files edge (mock engines move embeddings over NIXL; text graphs have none): no claim.
    assert "storage.yaml" not in k8s.render(compile_plan(ROOT / "pipelines" / "e_p_d.py", mock=True))
    assert "storage.yaml" not in k8s.render(compile_plan(ROOT / "pipelines" / "pd.py"))
