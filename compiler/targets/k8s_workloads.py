"""Workloads: a Deployment per single-host replica, a LeaderWorkerSet per multi-host replica.

Each Plan service (one replica of one node) gets its own workload because the
Plan gives each replica its own argv (ports, side-channel ports) and the
frontend addresses replicas one by one; see k8s.py for why.
"""

from __future__ import annotations

from typing import Any

from graph.plan import Service

from .k8s_meta import labels, selector
from .k8s_pods import PodContext, pod_template


def workload(ctx: PodContext, s: Service) -> dict[str, Any]:
    """The Deployment or LeaderWorkerSet that runs ``s``."""
    return _leader_worker_set(ctx, s) if s.hosts > 1 else _deployment(ctx, s)


def _metadata(ctx: PodContext, name: str, s: Service) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels(ctx.plan, ctx.names, s)}
    if ctx.options.namespace:
        meta["namespace"] = ctx.options.namespace
    return meta


def _deployment(ctx: PodContext, s: Service) -> dict[str, Any]:
    lab = labels(ctx.plan, ctx.names, s)
    spec: dict[str, Any] = {
        "replicas": 1,
        "selector": {"matchLabels": selector(ctx.plan, ctx.names, s)},
        "template": pod_template(ctx, s, lab),
    }
    if s.gpus:
        # A rolling update would need a second set of GPUs for the new pod; replace instead.
        spec["strategy"] = {"type": "Recreate"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(ctx, ctx.names.of(s), s), "spec": spec}


def _leader_worker_set(ctx: PodContext, s: Service) -> dict[str, Any]:
    lab = labels(ctx.plan, ctx.names, s)
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": _metadata(ctx, ctx.names.group(s), s),
        "spec": {
            "replicas": 1,
            # A replica is one tensor/pipeline-parallel engine: if any host dies, restart them all.
            "leaderWorkerTemplate": {
                "size": s.hosts,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": pod_template(ctx, s, lab, host_role="leader"),
                "workerTemplate": pod_template(ctx, s, lab, host_role="worker"),
            },
            "startupPolicy": "LeaderCreated",
        },
    }
