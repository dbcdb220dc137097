"""NVIDIA Dynamo flavour: one DynamoGraphDeployment (``-O flavor=dynamo``).

Field names follow Dynamo's v1beta1 API: ``spec.components[]`` with ``name``,
``type`` (frontend|worker|prefill|decode|planner|epp), ``replicas``,
``multinode.nodeCount``, ``sharedMemorySize`` and ``podTemplate`` whose
container ``main`` the operator fills with its defaults (probes, ports, its
discovery env). Sources (ai-dynamo/dynamo):
deploy/operator/config/crd/bases/nvidia.com_dynamographdeployments.yaml (shipped
as tests/k8s_schemas/nvidia.com_v1beta1_dynamographdeployment.json),
examples/backends/vllm/deploy/v1beta1/disagg.yaml, disagg-multinode.yaml, and
the DGD templates of ai-dynamo 1.6.1's wheel (dynamo/profiler/templates/dgd/).

Dynamo's frontend discovers its workers itself and routes among them, so a
graph node becomes one component with ``replicas`` (not one per Plan service),
its engine runs under Dynamo's worker module (the Plan's ``dynamo`` form, which
each engine's adapter writes), and our frontend and router are Dynamo's
frontend. A multimodal graph's encoder is a ``worker`` component of its own
(Dynamo's encode worker); our Processor has none, because Dynamo's frontend and
its ``--enable-multimodal`` workers load the media (the adapter says so with
``media``). Nothing waits on our per-replica Services, which do not exist here:
Dynamo's frontend holds requests until the workers a model needs have registered.

Pods: seccomp RuntimeDefault, no privilege escalation, all capabilities dropped,
and non-root as uid 1000: Dynamo's runtime images run as their ``dynamo`` user
(uid 1000, gid 0) since ai-dynamo/dynamo PR #3935. The root filesystem stays
writable: the runtime writes under its home and paths the operator mounts,
which this output does not own.
"""

from __future__ import annotations

from typing import Any

from graph.plan import Service

from .base import TargetError
from .k8s_meta import graph_metadata, k8s_expand, placeholders
from .k8s_pods import PodContext, hf_token_env, pod_template
from .k8s_policies import NAME, PART_OF, disruption_budgets
from .k8s_resources import container_resources
from .k8s_yaml import dump, dump_all

#: Dynamo's registry of runtime images (``<registry>/<engine>-runtime:<version>``).
_REGISTRY = "nvcr.io/nvidia/ai-dynamo"
#: The user of Dynamo's runtime images (ai-dynamo/dynamo PR #3935: ``dynamo``, uid 1000, gid 0).
DYNAMO_UID = 1000
#: Pod-template fields the operator owns, or that make no sense under it.
_OPERATOR_OWNED = ("volumes", "enableServiceLinks", "terminationGracePeriodSeconds", "initContainers",
                   "automountServiceAccountToken")


def render_dynamo(ctx: PodContext) -> dict[str, str]:
    """``dynamographdeployment.yaml`` (and ``poddisruptionbudgets.yaml`` for components of 2+ replicas).

    Raises:
        TargetError: a node Dynamo cannot run, naming it and why.
    """
    components = []
    for replicas in _by_node(ctx):
        if replicas[0].role == "processor":
            _check_processor_absorbed(ctx, replicas[0])
            continue
        components.append(_component(ctx, replicas))
    engines = sorted({s.engine for s in ctx.plan.services if s.engine and not s.simulated})
    graph_meta = graph_metadata(ctx.plan, ctx.options.namespace)
    meta = {"name": ctx.names.prefix.rstrip("-") or ctx.plan.graph, **graph_meta}
    spec: dict[str, Any] = {"components": components}
    if len(engines) == 1:
        spec["backendFramework"] = engines[0]
    doc = {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment", "metadata": meta, "spec": spec}
    files = {"dynamographdeployment.yaml": dump(doc)}
    kept = {c["name"] for c in components}
    budgets = [b for node, b in disruption_budgets(ctx.plan, ctx.names.prefix, graph_meta).items() if node in kept]
    if budgets:
        files["poddisruptionbudgets.yaml"] = dump_all(budgets)
    return files


def _by_node(ctx: PodContext) -> list[list[Service]]:
    nodes: dict[str, list[Service]] = {}
    for s in ctx.plan.services:
        nodes.setdefault(s.node, []).append(s)
    return list(nodes.values())


def _check_processor_absorbed(ctx: PodContext, processor: Service) -> None:
    """Dynamo has no processor component: its frontend and workers do the processor's job, if the
    engines' Dynamo workers load media themselves."""
    for s in ctx.plan.services:
        if s.engine is not None and not (s.dynamo and s.dynamo.media):
            why = s.dynamo.unsupported if s.dynamo and s.dynamo.unsupported else (
                f"its Dynamo worker ({' '.join((s.dynamo.command if s.dynamo else []) or ['none'])}) takes no media")
            raise TargetError(
                f"node '{processor.node}' (processor): Dynamo has no processor component; its frontend hands "
                f"the media to workers that load it themselves, but node '{s.node}' ({s.engine}) cannot: {why}",
                node=processor.node, hint="compile it with -O flavor=plain")


def _component(ctx: PodContext, replicas: list[Service]) -> dict[str, Any]:
    s = replicas[0]
    if s.role != "frontend" and (s.dynamo is None or s.dynamo.unsupported):
        why = (s.dynamo.unsupported if s.dynamo else None) or (
            f"{s.engine or 'servegraph'} has no Dynamo worker for a {s.role}" if s.engine
            else f"Dynamo's frontend sends requests straight to its engine workers, so our {s.role} has no "
                 f"place in its request path")
        raise TargetError(f"node '{s.node}' ({s.role}) has no DynamoGraphDeployment component: {why}",
                          node=s.node, hint="compile it with -O flavor=plain")
    template = pod_template(ctx, s, {PART_OF: ctx.plan.graph, NAME: s.node})
    template["spec"]["containers"] = [_main_container(ctx, replicas)]
    for key in _OPERATOR_OWNED:
        template["spec"].pop(key, None)
    template["spec"]["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    template["metadata"].pop("annotations", None)
    annotations = dict(ctx.settings[s.node].annotations)
    if annotations:
        template["metadata"]["annotations"] = annotations
    kind = "frontend" if s.dynamo is None else s.dynamo.component
    comp: dict[str, Any] = {"name": s.node, "type": kind, "replicas": len(replicas), "podTemplate": template}
    if s.hosts > 1:
        comp["multinode"] = {"nodeCount": s.hosts}
    if s.engine is not None:
        comp["sharedMemorySize"] = ctx.options.shm_size
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
            raise TargetError(f"node '{s.node}': argument '{wired}' needs per-pod wiring Dynamo does itself",
                              node=s.node, hint="compile it with -O flavor=plain")
    resources = container_resources(s, node)
    if s.dynamo is None:
        resources.pop("limits", None)  # Dynamo's frontend tokenizes and loads media: no cap of ours
    security: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "runAsNonRoot": True, "runAsUser": DYNAMO_UID}
    if s.engine is not None and o.engine_capabilities:
        security["capabilities"]["add"] = list(o.engine_capabilities)
    c: dict[str, Any] = {"name": "main", "image": image, "command": command, "args": args,
                         "resources": resources, "securityContext": security}
    # One pod template serves every replica: keep what all replicas share (side-channel
    # ports differ per replica; Dynamo's worker picks its own) and nothing pod-specific.
    shared = {k: v for k, v in s.env.items() if all(r.env.get(k) == v for r in replicas) and not placeholders(v)}
    env = [{"name": k, "value": k8s_expand(v)} for k, v in sorted(shared.items())]
    if s.engine:
        env += hf_token_env(o)
    if env:
        c["env"] = env
    return c


def _kv_routed(frontend: Service) -> bool:
    """Whether our frontend's config routes a stage by KV/prefix overlap (Dynamo: --router-mode kv)."""
    routes = (frontend.config or {}).get("routes", [])
    return any(stage.get("policy") == "kv" for r in routes for stage in r.get("stages", []))


def _runtime_image(ctx: PodContext, s: Service) -> str:
    """A worker's engine runtime; the frontend's is its graph's first worker's (Dynamo ships one per engine)."""
    if s.dynamo is not None:
        return s.dynamo.runtime_image
    return next(w.dynamo.runtime_image for w in ctx.plan.services if w.dynamo is not None and w.dynamo.runtime_image)
