"""Services (one per Plan service, its stable DNS name) and the optional ServiceMonitor."""

from __future__ import annotations

from typing import Any

from graph.plan import Service

from .k8s_meta import graph_metadata, labels, port_name, selector
from .k8s_pods import PodContext


def service(ctx: PodContext, s: Service) -> dict[str, Any]:
    """The Service whose name is what ``${SG_HOST_<S>}`` resolves to.

    Engines and our inner processes get a headless Service: the name resolves
    straight to the pod's IP, so the frontend's per-replica connections, NIXL
    side channels and SGLang bootstrap connections skip kube-proxy. The
    frontend's Service is a normal one of the type the user asks for.
    """
    is_frontend = s.name == ctx.plan.frontend
    spec: dict[str, Any] = {
        "selector": selector(ctx.plan, ctx.names, s),
        "ports": [
            {"name": port_name(name), "port": port, "targetPort": port_name(name), "protocol": "TCP"}
            for name, port in sorted(s.ports.items())
        ],
    }
    if is_frontend:
        spec["type"] = ctx.options.frontend_service_type
    else:
        spec["clusterIP"] = "None"
    meta: dict[str, Any] = {"name": ctx.names.of(s), "labels": labels(ctx.plan, ctx.names, s)}
    if ctx.options.namespace:
        meta["namespace"] = ctx.options.namespace
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def service_monitor(ctx: PodContext) -> dict[str, Any]:
    """A prometheus-operator ServiceMonitor scraping /metrics of every Service of the graph."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": ctx.names.prefix + "metrics", **graph_metadata(ctx.plan, ctx.options.namespace)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/part-of": ctx.plan.graph,
                                         "app.kubernetes.io/managed-by": "servegraph"}},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }
