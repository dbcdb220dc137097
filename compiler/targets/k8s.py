"""Kubernetes manifests: Deployments/LeaderWorkerSets, Services, ConfigMaps, kustomization.yaml.

``graph compile x.py -t k8s -o out/`` writes ``nodes/<node>.yaml`` per graph
node holding, for each of its replicas (each Plan service), a Service and a
workload — a Deployment, or a LeaderWorkerSet when one replica spans several
hosts —, plus ``config.yaml`` (ConfigMaps: our processes' config files, and plan.json),
optionally ``servicemonitor.yaml``, and ``kustomization.yaml`` listing them.
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

from .base import GpuBudget
from .k8s_config import config_maps
from .k8s_meta import Names, host_services
from .k8s_pods import PodContext
from .k8s_services import service, service_monitor
from .k8s_settings import Options, node_settings
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


def render(plan: Plan, options: Options | None = None) -> dict[str, str]:
    """Relative path -> YAML text of every manifest (deterministic: sorted keys and files).

    Raises:
        ValueError: bad per-node settings, names too long for Kubernetes, a config too big.
    """
    options = options or Options()
    ctx = context(plan, options)
    if options.flavor == "dynamo":
        from .k8s_dynamo import render_dynamo

        files = render_dynamo(ctx)
    else:
        files = {"config.yaml": dump_all(config_maps(ctx))}
        by_node: dict[str, list[dict]] = {}
        for s in plan.services:
            by_node.setdefault(s.node, []).extend([service(ctx, s), workload(ctx, s)])
        for node, docs in by_node.items():
            files[f"nodes/{node}.yaml"] = dump_all(docs)
        if options.service_monitor:
            files["servicemonitor.yaml"] = dump(service_monitor(ctx))
    files["kustomization.yaml"] = dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(files),
    })
    return dict(sorted(files.items()))


def context(plan: Plan, options: Options) -> PodContext:
    """Names, settings and address variables shared by every builder."""
    return PodContext(plan=plan, names=Names(plan, options.prefix), options=options,
                      settings=node_settings(plan, options), host_vars=host_services(plan))
