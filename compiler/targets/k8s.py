"""Kubernetes manifests: Deployments/LeaderWorkerSets, Services, ConfigMaps, kustomization.yaml.

``graph compile x.py -t k8s -o out/`` writes ``nodes/<node>.yaml`` per graph
node holding, for each of its replicas (each Plan service), a Service and a
workload — a Deployment, or a LeaderWorkerSet when one replica spans several
hosts —, and a PodDisruptionBudget for a node of two replicas or more, plus
``config.yaml`` (ConfigMaps: our processes' config files, and plan.json),
``storage.yaml`` (the ReadWriteMany claim a files edge needs, unless ``-O
shared_cache_pvc`` names yours), optionally ``networkpolicy.yaml`` and
``servicemonitor.yaml``, and ``kustomization.yaml`` listing them. How pods run
(users, privileges, writable folders) is k8s_security.py's.
``-O flavor=dynamo`` writes a DynamoGraphDeployment instead (k8s_dynamo.py).

Why a workload per replica rather than one Deployment per node with
``replicas: N``: the Plan gives every replica its own argv (HTTP, NIXL
side-channel and bootstrap ports differ) and the frontend routes to replicas
one by one, so each needs a stable name of its own. One Deployment and one
Service per replica keep the Plan's argv verbatim and make the Service name
exactly the Plan's service name (``${SG_HOST_DECODE_1}`` -> ``<prefix>decode-1``).
"""

from __future__ import annotations

from graph.plan import Plan

from .base import GpuBudget, PlanChoices
from .k8s_config import config_maps
from .k8s_meta import Names, graph_metadata, host_services
from .k8s_pods import PodContext
from .k8s_policies import disruption_budgets, network_policies
from .k8s_security import runs_as_note
from .k8s_services import service, service_monitor
from .k8s_settings import Options, node_settings
from .k8s_storage import files_folders, shared_claim
from .k8s_workloads import workload
from .k8s_yaml import dump, dump_all

__all__ = ["K8sTarget", "Options", "render"]


class K8sTarget:
    """Kubernetes manifests (or one DynamoGraphDeployment)."""

    name = "k8s"
    summary = "Kubernetes manifests: Deployments/LeaderWorkerSets, Services, ConfigMaps, kustomization.yaml"
    single_host = False
    Options = Options

    def render(self, plan: Plan, options: Options | None = None) -> dict[str, str]:
        return render(plan, options)

    def gpu_budget(self, options: Options) -> GpuBudget:
        return GpuBudget(total=options.gpus, per_host=options.gpus_per_host)

    def plan_choices(self, options: Options) -> PlanChoices:
        """``-O network``; the shared claim's mount path is the folder every pod sees (the plain flavour
        always mounts one on a files edge: yours, ``-O shared_cache_pvc``, or the one it claims)."""
        return PlanChoices(network=options.network,
                           shared_dir=options.shared_cache_path if options.flavor == "plain" else None)


def render(plan: Plan, options: Options | None = None) -> dict[str, str]:
    """Relative path -> YAML text of every manifest (deterministic: sorted keys and files).

    Raises:
        ValueError: bad per-node settings, names too long for Kubernetes, a config too big;
            TargetError: a node the dynamo flavour cannot express, naming it and why.
    """
    options = options or Options()
    ctx = context(plan, options)
    if options.flavor == "dynamo":
        from .k8s_dynamo import render_dynamo

        files = render_dynamo(ctx)
    else:
        files = _plain(ctx)
    files["kustomization.yaml"] = dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(files),
    })
    return dict(sorted(files.items()))


def _plain(ctx: PodContext) -> dict[str, str]:
    plan, options = ctx.plan, ctx.options
    meta = graph_metadata(plan, options.namespace)
    files = {"config.yaml": dump_all(config_maps(ctx))}
    budgets = disruption_budgets(plan, ctx.names.prefix, meta)
    by_node: dict[str, list[dict]] = {}
    notes: dict[str, str] = {}
    for s in plan.services:
        by_node.setdefault(s.node, []).extend([service(ctx, s), workload(ctx, s)])
        note = runs_as_note(options, s)
        if note:
            notes.setdefault(s.node, f"# {s.node}: {note}\n")
    for node, docs in by_node.items():
        extra = [budgets[node]] if node in budgets else []
        files[f"nodes/{node}.yaml"] = notes.get(node, "") + dump_all(docs + extra)
    claim = shared_claim(plan, options, ctx.names.prefix, meta)
    if claim is not None:
        files["storage.yaml"] = dump(claim)
    if options.network_policy:
        scrapers = options.metrics_namespace if options.service_monitor else None
        files["networkpolicy.yaml"] = dump_all(network_policies(plan, ctx.names.prefix, meta, scrapers))
    if options.service_monitor:
        files["servicemonitor.yaml"] = dump(service_monitor(ctx))
    return files


def context(plan: Plan, options: Options) -> PodContext:
    """Names, settings and address variables shared by every builder."""
    return PodContext(plan=plan, names=Names(plan, options.prefix), options=options,
                      settings=node_settings(plan, options), host_vars=host_services(plan),
                      files_folders=files_folders(plan))
