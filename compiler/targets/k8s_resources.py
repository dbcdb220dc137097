"""Resource requests (and limits) of every container, init containers included.

An engine asks for its GPUs (requests = limits, as extended resources must)
and for its adapter's CPU cores per GPU times its GPUs; a node's ``cpu`` and
``memory`` (graph) or ``platform["k8s"]["resources"]`` (pipeline, ``-O
resources``) win. Our own processes ask for a little and are capped in memory.
"""

from __future__ import annotations

from typing import Any

from graph.plan import Service

from .k8s_settings import NodeSettings

#: Our processes (frontend, processor, the mock engine): small, with a memory cap.
OURS = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}
#: The init container that waits on health URLs.
WAITER = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}


def container_resources(s: Service, node: NodeSettings) -> dict[str, Any]:
    """requests/limits of the container running ``s``."""
    engine = s.cpus_per_gpu is not None
    requests: dict[str, Any] = {} if engine else dict(OURS["requests"])
    limits: dict[str, Any] = {} if engine else dict(OURS["limits"])
    if s.cpu is not None:
        requests["cpu"] = quantity(s.cpu)
    elif engine:
        requests["cpu"] = str(s.cpus_per_gpu * max(1, s.gpus))
    if s.memory is not None:
        requests["memory"] = limits["memory"] = s.memory
    requests.update(node.resources.get("requests", {}))
    limits.update(node.resources.get("limits", {}))
    if s.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(s.gpus)
    out = {"requests": {k: quantity(v) for k, v in sorted(requests.items())}}
    if limits:
        out["limits"] = {k: quantity(v) for k, v in sorted(limits.items())}
    return out


def waiter_resources() -> dict[str, Any]:
    """requests/limits of the wait-for-dependencies init container."""
    return {kind: dict(values) for kind, values in WAITER.items()}


def quantity(v: Any) -> str:
    """A number or quantity as Kubernetes writes it (``2.0`` -> ``'2'``)."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


__all__ = ["OURS", "WAITER", "container_resources", "quantity", "waiter_resources"]
