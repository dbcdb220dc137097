"""graph spec -> Plan: the one place that turns roles into processes and wiring.

Ports are assigned deterministically in declaration order; every address of
another service is a ``${SG_HOST_...}`` placeholder that the target defines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from graph.plan import (
    FrontendConfig,
    HealthCheck,
    Plan,
    PlanEdge,
    ProcessorConfig,
    RouteConfig,
    Service,
    StageConfig,
    host_ref,
    upstreams_of,
)
from graph.settings import EngineSettings, Parallelism
from graph.spec import GraphSpec, NodeSpec

from .engines import EngineInput, get_adapter
from .resolve import protocol_of, with_engines
from .transport import NETWORKS, edge_settings, edge_transport
from .user_nodes import is_user_node, request_stages, response_stages, user_node_services

#: Which request stage each engine role serves.
STAGE_OF_ROLE = {
    "encoder": "encode",
    "prefill": "prefill",
    "encode_prefill": "prefill",
    "decode": "decode",
    "worker": "aggregate",
    "prefill_decode": "aggregate",
}
_STAGE_ORDER = ("encode", "prefill", "decode", "aggregate")


@dataclass(frozen=True)
class PlanOptions:
    """Choices that shape the Plan but are not part of the graph.

    Args:
        device: gpu, or cpu to run engines on CPU (vLLM CPU build).
        base_port: first port handed to services other than the frontend (HTTP, NIXL
            side channels, bootstrap and distributed-init ports all count up from it).
        cpu_cores: cores of the host, for binding CPU engines to disjoint cores.
        encoder_cache_dir: folder for encoder output that engines hand over as files (vLLM's EC connector).
        encoder_cache_shared: ``encoder_cache_dir`` is on storage every host sees (the target
            mounts or was given a shared folder), so its ends may run on different hosts.
        python: interpreter that runs our own nodes.
        nvlink: GPUs on a host are joined by NVLink (changes NIXL/UCX settings).
        single_host: every service runs on one host (local target, `graph run`).
        listen_host: the address engines and our processes listen on (None: loopback when every
            service runs on one host, so nothing but the frontend is reachable from outside; every
            interface otherwise).
        frontend_host: the address the frontend listens on (None: the graph's Frontend ``host``,
            else ``listen_host``).
        network: how tensor edges cross hosts: ``auto`` (UCX picks, RDMA first) or ``tcp``
            (TCP only: no shared memory, no RDMA); see compiler/transport.py.

    Raises:
        ValueError: an unknown ``network``.
    """

    device: str = "gpu"
    base_port: int = 8100
    cpu_cores: int | None = None
    encoder_cache_dir: str = "/tmp/servegraph-ec"
    python: str = "python"
    nvlink: bool = False
    single_host: bool = False
    listen_host: str | None = None
    frontend_host: str | None = None
    network: str = "auto"
    encoder_cache_shared: bool = False

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise ValueError(f"network '{self.network}' is unknown; use one of: {', '.join(NETWORKS)}")

    @property
    def bind_host(self) -> str:
        """The address services other than the frontend listen on."""
        return self.listen_host or (LOOPBACK if self.single_host else ALL_INTERFACES)


LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"


class _Ports:
    """Hands out ports from one counter starting at ``base_port``, skipping ports fixed in the graph.

    One counter (not one range per kind) keeps two graphs run side by side with
    different ``--base-port`` values from ever colliding.
    """

    def __init__(self, options: PlanOptions, taken: Iterable[int]) -> None:
        self._next = options.base_port
        self._taken = set(taken)

    def take(self, kind: str) -> int:
        port = self._next
        while port in self._taken:
            port += 1
        self._taken.add(port)
        self._next = port + 1
        return port


def plan(spec: GraphSpec, options: PlanOptions | None = None) -> Plan:
    """Lower a valid resolved graph to a Plan.

    Args:
        spec: the resolved graph (validate it first).
        options: target-neutral choices (device, ports, cores).
    """
    options = options or PlanOptions()
    spec = with_engines(spec)
    ports = _Ports(options, (n.port for n in spec.nodes if n.port))
    engine_nodes = [n for n in spec.nodes if n.is_engine]
    cores = _core_binding(engine_nodes, options)
    edges = _plan_edges(spec, options)
    edge_env = _edge_env(edges)
    services: list[Service] = []
    # Encoders first, so the engines they feed can be given their URLs.
    for node in sorted(spec.nodes, key=lambda n: n.role != "encoder"):
        if node.is_engine:
            services += _engine_services(spec, node, ports, options, cores, edge_env.get(node.name, {}), services)
        elif node.role == "processor":
            services += _processor_services(node, ports, options)
        elif is_user_node(node):
            services += user_node_services(node, ports, options)
    frontend = spec.by_role("frontend")[0]
    fe_service = _frontend_service(spec, frontend, services, options)
    services.append(fe_service)
    return Plan(
        graph=spec.name,
        shape=spec.shape,
        device=options.device,  # type: ignore[arg-type]
        services=services,
        edges=edges,
        frontend=fe_service.name,
        url=f"http://{host_ref(fe_service.name)}:{fe_service.http_port}",
    )


def _core_binding(engines: list[NodeSpec], options: PlanOptions) -> dict[str, str]:
    """CPU engines on one host must not share cores (measured: 20x slower when they do)."""
    if options.device != "cpu":
        return {}
    total = options.cpu_cores or os.cpu_count() or 1
    replicas = [f"{n.name}-{r}" for n in engines for r in range(n.replicas)]
    if not replicas:
        return {}
    share = max(total // len(replicas), 1)
    binding = {}
    for i, name in enumerate(replicas):
        first = (i * share) % total
        last = first + share - 1
        binding[name] = str(first) if share == 1 else f"{first}-{last}"
    return binding


def _engine_services(
    spec: GraphSpec,
    node: NodeSpec,
    ports: _Ports,
    options: PlanOptions,
    cores: dict[str, str],
    transport_env: dict[str, str],
    built: list[Service],
) -> list[Service]:
    adapter = get_adapter(node.engine or "")
    encoders = [p.name for p in spec.predecessors(node.name) if p.role == "encoder"]
    encoder_urls = tuple(u.url for name in encoders for u in upstreams_of(built, name))
    settings = node.model_dump(include=set(EngineSettings.model_fields))
    roles = {n.role for n in spec.nodes}
    multimodal = bool(roles & {"processor", "encoder", "encode_prefill"})
    out = []
    for replica in range(node.replicas):
        name = f"{node.name}-{replica}"
        http = node.port if node.port else ports.take("http")
        extra = {kind: ports.take(kind) for kind in adapter.extra_ports(node.role)}
        if node.nodes > 1:
            extra["dist"] = ports.take("dist")
        engine_input = EngineInput(**{
            **settings, "model": node.model or "", "served_model_name": node.model_name or "",
            "node": node.name, "service": name, "role": node.role, "host": options.bind_host, "port": http,
            "extra_ports": extra, "device": options.device, "consumes_embeddings": bool(encoders),
            "encoder_urls": encoder_urls, "encoder_cache_dir": _encoder_cache_dir(spec, options),
            "cpu_cores": cores.get(name), "multimodal": multimodal,
            "separate_encoder": "encoder" in roles,
        })
        command = adapter.command(engine_input)
        argv = _with_python(command.argv, options)
        followers = None if command.follower_argv is None else _with_python(command.follower_argv, options)
        out.append(Service(
            name=name, node=node.name, role=node.role, replica=replica, engine=node.engine,
            simulated=adapter.simulated, protocol=protocol_of(node), model=node.model, image=adapter.image,
            parallelism=Parallelism(tp=node.tp, pp=node.pp, dp=node.dp), argv=argv, follower_argv=followers,
            env={**transport_env, **command.env, **node.env}, ports={"http": http, **extra},
            health=HealthCheck(path=command.health_path, port=http, startup_timeout_s=command.startup_timeout_s),
            gpus=0 if adapter.simulated else node.gpus, hosts=node.nodes, cpu=node.cpu, memory=node.memory,
            cpus_per_gpu=None if adapter.simulated else adapter.cpus_per_gpu,
            config_file=command.config_file, config=command.config, platform=node.platform,
            dynamo=adapter.dynamo(engine_input),
        ))
    return out


def _with_python(argv: list[str], options: PlanOptions) -> list[str]:
    """An adapter's argv with ``python`` at its head replaced by the interpreter that runs our nodes."""
    return [options.python if a == "python" and i == 0 else a for i, a in enumerate(argv)]


def _processor_services(node: NodeSpec, ports: _Ports, options: PlanOptions) -> list[Service]:
    out = []
    for replica in range(node.replicas):
        name = f"{node.name}-{replica}"
        http = ports.take("http")
        config = ProcessorConfig(host=options.bind_host, port=http, **node.options)
        config_file = f"{name}.json"
        out.append(Service(
            name=name, node=node.name, role="processor", replica=replica,
            argv=[options.python, "-m", "nodes.processor", "--config", config_file, "--name", name],
            env=dict(node.env), ports={"http": http}, health=HealthCheck(port=http, startup_timeout_s=30.0),
            cpu=node.cpu, memory=node.memory, config_file=config_file,
            config=config.model_dump(mode="json"), platform=node.platform,
        ))
    return out


def _routes(spec: GraphSpec, services: list[Service], options: PlanOptions) -> list[RouteConfig]:
    routers = spec.by_role("router")
    policy = routers[0].options.get("policy", "round_robin") if routers else "round_robin"
    router_options = dict(routers[0].options) if routers else {}
    processors = [u for p in spec.by_role("processor") for u in upstreams_of(services, p.name)]
    models = sorted({n.model_name for n in spec.nodes if n.is_engine and n.model_name})
    before = request_stages(spec, services)
    routes = []
    for model in models:
        nodes = [n for n in spec.nodes if n.is_engine and n.model_name == model]
        stages = []
        for stage in _STAGE_ORDER:
            for n in nodes:
                if STAGE_OF_ROLE[n.role] == stage:
                    stages.append(StageConfig(
                        stage=stage, node=n.name, role=n.role, protocol=protocol_of(n),
                        upstreams=upstreams_of(services, n.name), policy=policy,
                        options={**router_options, **_encoder_cache_option(spec, n, options)},
                    ))
        finals = [n for n in nodes if STAGE_OF_ROLE[n.role] in ("decode", "aggregate")]
        routes.append(RouteConfig(model=model, shape=spec.shape, stages=stages, processor=processors,
                                  request_nodes=before, response_nodes=response_stages(spec, finals, services)))
    return routes


def _encoder_cache_option(spec: GraphSpec, node: NodeSpec, options: PlanOptions) -> dict[str, str]:
    """Where an encoder's cache files land, when its engine hands embeddings on as files and the
    frontend shares that disk.

    vLLM's EC connector writes the file without temp+rename and the consumer only
    checks that it exists, so the frontend waits for a complete file before prefill.
    """
    if (options.single_host and node.role == "encoder"
            and get_adapter(node.engine or "").embeddings_transfer == "files"):
        return {"encoder_cache_dir": _encoder_cache_dir(spec, options)}
    return {}


def _encoder_cache_dir(spec: GraphSpec, options: PlanOptions) -> str:
    return f"{options.encoder_cache_dir}/{spec.name}"


_FRONTEND_SETTINGS = ("request_timeout_s", "stage_timeout_s", "migration_limit")


def _frontend_service(spec: GraphSpec, node: NodeSpec, others: list[Service], options: PlanOptions) -> Service:
    name = f"{node.name}-0"
    port = node.port or 8000
    settings = {key: node.options[key] for key in _FRONTEND_SETTINGS if key in node.options}  # else its defaults
    host = options.frontend_host or node.options.get("host") or options.bind_host
    config = FrontendConfig(graph=spec.name, host=host, port=port, routes=_routes(spec, others, options), **settings)
    config_file = f"{name}.json"
    return Service(
        name=name, node=node.name, role="frontend", replica=0,
        argv=[options.python, "-m", "nodes.frontend", "--config", config_file, "--name", name],
        env=dict(node.env), ports={"http": port}, health=HealthCheck(port=port, startup_timeout_s=30.0),
        depends_on=[s.name for s in others], cpu=node.cpu, memory=node.memory,
        config_file=config_file, config=config.model_dump(mode="json"), platform=node.platform,
    )


def _edge_env(edges: list[PlanEdge]) -> dict[str, dict[str, str]]:
    """Both ends of a tensor edge get its transport environment."""
    env: dict[str, dict[str, str]] = {}
    for e in edges:
        if e.settings:
            for node in (e.src, e.dst):
                env.setdefault(node, {}).update(e.settings.env)
    return env


def _plan_edges(spec: GraphSpec, options: PlanOptions) -> list[PlanEdge]:
    """The graph's edges; a tensor edge says how its engines move the bytes (NIXL, files, the engine's own)."""
    out = []
    for e in spec.edges:
        if e.transport != "nixl":
            out.append(PlanEdge(src=e.src, dst=e.dst, type=e.type, transport=e.transport))
            continue
        src, dst = spec.node(e.src), spec.node(e.dst)
        transport = edge_transport(src, e.type)
        folder = _encoder_cache_dir(spec, options) if transport == "files" else None
        out.append(PlanEdge(src=e.src, dst=e.dst, type=e.type, transport=transport,
                            settings=edge_settings(src, dst, e.type, options, folder)))
    return out
