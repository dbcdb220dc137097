"""Nodes of your own (graph.custom) in the Plan: their processes, and their places in each route.

Each replica is ``python -m nodes.custom --config <service>.json``; the file that
defines the node's class is shipped with the Plan (``Service.files``), so every
target carries the code the graph was compiled with: the local workdir holds it,
Kubernetes mounts it from the ConfigMap, Slurm writes it into the run folder.

The frontend calls request nodes in the order the graph's request path meets
them (before or after the processor), and response nodes in the order the
answer flows through them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from graph.plan import HealthCheck, Service, StageConfig, UserNodeConfig, upstreams_of
from graph.settings import USER_ROLES
from graph.spec import GraphSpec, NodeSpec

from .errors import CompileFailed, node_error

if TYPE_CHECKING:
    from .plan import PlanOptions, _Ports

#: Edge types that carry a request on its way to the model.
_REQUEST_TYPES = ("Text", "Tokens", "Media")


def user_node_services(node: NodeSpec, ports: "_Ports", options: "PlanOptions") -> list[Service]:
    """The replicas of one node of your own.

    Raises:
        CompileFailed: the file that defines its class cannot be read.
    """
    assert node.code is not None
    code_path = f"code/{node.name}/{os.path.basename(node.code.file)}"
    try:
        with open(node.code.file, encoding="utf-8") as fh:
            source = fh.read()
    except OSError as exc:
        raise CompileFailed([node_error(
            "user-code-unreadable", node, f"{node.kind} '{node.name}': cannot read its code at {node.code.file}: "
            f"{exc.strerror or exc}", "keep the file that defines the class beside the pipeline")]) from None
    kind = "request" if node.role == "request_node" else "response"
    out = []
    for replica in range(node.replicas):
        name = f"{node.name}-{replica}"
        http = ports.take("http")
        config = UserNodeConfig(node=node.name, kind=kind, host=options.bind_host, port=http, file=code_path,
                                qualname=node.code.qualname, settings=dict(node.options))
        config_file = f"{name}.json"
        out.append(Service(
            name=name, node=node.name, role=node.role, replica=replica,
            argv=[options.python, "-m", "nodes.custom", "--config", config_file, "--name", name],
            env=dict(node.env), ports={"http": http}, health=HealthCheck(port=http, startup_timeout_s=60.0),
            cpu=node.cpu, memory=node.memory, config_file=config_file, config=config.model_dump(mode="json"),
            files={code_path: source}, platform=node.platform,
        ))
    return out


def request_stages(spec: GraphSpec, services: list[Service]) -> list[StageConfig]:
    """The request nodes on the way from the frontend to the model, in order (with where the processor is)."""
    frontend = spec.by_role("frontend")[0]
    stages = []
    seen_processor = False
    for node in _walk(spec, frontend.name, _REQUEST_TYPES):
        if node.role == "processor":
            seen_processor = True
        elif node.role == "request_node":
            stages.append(_stage(node, "request", services, after_processor=seen_processor))
    return stages


def response_stages(spec: GraphSpec, finals: list[NodeSpec], services: list[Service]) -> list[StageConfig]:
    """The response nodes the answer of these final stages flows through, in order."""
    seen: dict[str, NodeSpec] = {}
    for final in finals:
        for node in _walk(spec, final.name, ("Answer",)):
            if node.role == "response_node":
                seen.setdefault(node.name, node)
    return [_stage(node, "response", services) for node in seen.values()]


def _walk(spec: GraphSpec, start: str, types: tuple[str, ...]) -> list[NodeSpec]:
    """Nodes reached from ``start`` along edges of these types, breadth first (each once)."""
    order: list[NodeSpec] = []
    seen = {start}
    frontier = [start]
    while frontier:
        nxt = []
        for name in frontier:
            for e in spec.edges:
                if e.src == name and e.type in types and e.dst not in seen:
                    seen.add(e.dst)
                    order.append(spec.node(e.dst))
                    nxt.append(e.dst)
        frontier = nxt
    return order


def _stage(node: NodeSpec, stage: str, services: list[Service], after_processor: bool = False) -> StageConfig:
    options: dict[str, object] = {"timeout_s": node.options.get("timeout_s", 10.0)}
    if stage == "request":
        options["after_processor"] = after_processor
    return StageConfig(stage=stage, node=node.name, role=node.role, protocol="servegraph-node",  # type: ignore[arg-type]
                       upstreams=upstreams_of(services, node.name), options=options)


def is_user_node(node: NodeSpec) -> bool:
    """A node of your own (graph.custom)."""
    return node.role in USER_ROLES
