"""NVIDIA Dynamo flavour: one DynamoGraphDeployment (``-O flavor=dynamo``).

Field names follow Dynamo's v1beta1 API: ``spec.components[]`` with ``name``,
``type`` (frontend|worker|prefill|decode|planner|epp), ``replicas``,
``multinode.nodeCount`` and ``podTemplate`` whose container ``main`` the
operator fills with its defaults. Sources (ai-dynamo/dynamo):
deploy/operator/api/v1beta1/dynamocomponentdeployment_types.go,
deploy/operator/config/crd/bases/nvidia.com_dynamographdeployments.yaml and
examples/backends/vllm/deploy/v1beta1/disagg.yaml, disagg-multinode.yaml.

Dynamo's frontend discovers its workers itself and routes among them, so a
graph node becomes one component with ``replicas`` (not one per Plan
service), its engine runs under Dynamo's worker module, and our frontend,
router and processor are replaced by Dynamo's frontend.
"""

from __future__ import annotations

from typing import Any

from graph.plan import Service

from .k8s_meta import k8s_expand, placeholders
from .k8s_pods import PodContext, hf_token_env, pod_template
from .k8s_yaml import dump

#: Dynamo's registry of runtime images (``<registry>/<engine>-runtime:<version>``).
_REGISTRY = "nvcr.io/nvidia/ai-dynamo"


def render_dynamo(ctx: PodContext) -> dict[str, str]:
    """``dynamographdeployment.yaml``.

    Raises:
        ValueError: a node Dynamo has no component for (router, processor, encoder, ...)
            or an engine it cannot run from our argv (trtllm).
    """
    components = [_component(ctx, replicas) for replicas in _by_node(ctx)]
    engines = sorted({s.engine for s in ctx.plan.services if s.engine and not s.simulated})
    meta: dict[str, Any] = {"name": ctx.names.prefix.rstrip("-") or ctx.plan.graph,
                            "labels": {"app.kubernetes.io/part-of": ctx.plan.graph,
                                       "app.kubernetes.io/managed-by": "servegraph"}}
    if ctx.options.namespace:
        meta["namespace"] = ctx.options.namespace
    spec: dict[str, Any] = {"components": components}
    if len(engines) == 1:
        spec["backendFramework"] = engines[0]
    doc = {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment", "metadata": meta, "spec": spec}
    return {"dynamographdeployment.yaml": dump(doc)}


def _by_node(ctx: PodContext) -> list[list[Service]]:
    nodes: dict[str, list[Service]] = {}
    for s in ctx.plan.services:
        nodes.setdefault(s.node, []).append(s)
    return list(nodes.values())


def _component(ctx: PodContext, replicas: list[Service]) -> dict[str, Any]:
    s = replicas[0]
    if s.role != "frontend" and s.dynamo is None:
        raise ValueError(
            f"node '{s.node}' ({s.role}) has no DynamoGraphDeployment component: Dynamo's operator runs "
            f"frontends and the workers of the engines it knows; compile it with -O flavor=plain"
        )
    main = _main_container(ctx, replicas)
    template = pod_template(ctx, s, {"app.kubernetes.io/part-of": ctx.plan.graph})
    # The operator owns probes, ports and the shm volume of "main"; keep only what is ours.
    template["spec"]["containers"] = [main]
    template["spec"].pop("volumes", None)
    template["spec"].pop("enableServiceLinks", None)
    template["spec"].pop("terminationGracePeriodSeconds", None)
    template["metadata"].get("annotations", {}).pop("servegraph.io/config-sha256", None)
    if not template["metadata"].get("annotations"):
        template["metadata"].pop("annotations", None)
    kind = "frontend" if s.dynamo is None else s.dynamo.component
    comp: dict[str, Any] = {"name": s.node, "type": kind, "replicas": len(replicas), "podTemplate": template}
    if s.hosts > 1:
        comp["multinode"] = {"nodeCount": s.hosts}
    return comp


def _main_container(ctx: PodContext, replicas: list[Service]) -> dict[str, Any]:
    s = replicas[0]
    o = ctx.options
    node = ctx.settings[s.node]
    image = node.image or f"{_REGISTRY}/{_runtime_image(ctx, s)}:{o.dynamo_version}"
    if s.dynamo is None:
        command, args = ["python3", "-m", "dynamo.frontend"], ["--http-port", str(s.http_port)]
        if _kv_routed(s):
            args += ["--router-mode", "kv"]
    else:
        command, args = list(s.dynamo.command), list(s.dynamo.args)
        wired = next((a for a in args if placeholders(a)), None)
        if wired is not None:
            raise ValueError(f"node '{s.node}': argument '{wired}' needs per-pod wiring Dynamo does itself; "
                             f"compile it with -O flavor=plain")
    c: dict[str, Any] = {"name": "main", "image": image, "command": command, "args": args}
    # One pod template serves every replica: keep what all replicas share (side-channel
    # ports differ per replica; Dynamo's worker picks its own) and nothing pod-specific.
    shared = {k: v for k, v in s.env.items() if all(r.env.get(k) == v for r in replicas) and not placeholders(v)}
    env = [{"name": k, "value": k8s_expand(v)} for k, v in sorted(shared.items())]
    if s.engine:
        env += hf_token_env(o)
    if env:
        c["env"] = env
    if s.gpus:
        c["resources"] = {"limits": {"nvidia.com/gpu": str(s.gpus)}, "requests": {"nvidia.com/gpu": str(s.gpus)}}
    return c


def _kv_routed(frontend: Service) -> bool:
    """Whether our frontend's config routes a stage by KV/prefix overlap (Dynamo: --router-mode kv)."""
    routes = (frontend.config or {}).get("routes", [])
    return any(stage.get("policy") == "kv" for r in routes for stage in r.get("stages", []))


def _runtime_image(ctx: PodContext, s: Service) -> str:
    """A worker's engine runtime; the frontend's is its graph's first worker's (Dynamo ships one per engine)."""
    if s.dynamo is not None:
        return s.dynamo.runtime_image
    return next(w.dynamo.runtime_image for w in ctx.plan.services if w.dynamo is not None)
