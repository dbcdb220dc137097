"""The Plan: the graph lowered to processes — what the compiler writes and targets and our processes read.

A Plan lists every process to run (one :class:`Service` per node replica) with
its argv, environment, ports, GPUs, health check and dependencies, plus the
configuration slice of our own processes and the transport settings of every
tensor edge. It is target-neutral: addresses of other services appear as
``${SG_HOST_<SERVICE>}`` placeholders (see :func:`host_var`) that each target
defines — 127.0.0.1 locally, Service DNS names on Kubernetes, node names on
Slurm. Our own processes expand them in their config files at start-up.

It imports :mod:`graph.settings` and nothing else of ours, so targets and our
processes read it without the authoring layer (or any engine's adapter).
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .settings import FrontendSettings, Parallelism, ProcessorSettings, Role

#: A request's stages, in the order the frontend calls them ("request"/"response": nodes of your own).
Stage = Literal["process", "encode", "prefill", "decode", "aggregate", "request", "response"]

#: Env var every process gets with its own address (for NIXL side channels).
SELF_HOST_VAR = "SG_SELF_HOST"


def host_var(service: str) -> str:
    """The env var holding the address of ``service`` (``decode-0`` -> ``SG_HOST_DECODE_0``)."""
    return "SG_HOST_" + re.sub(r"[^A-Za-z0-9]", "_", service).upper()


def host_ref(service: str) -> str:
    """The placeholder for ``service``'s address inside argv, env and configs."""
    return "${" + host_var(service) + "}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthCheck(_Model):
    """How to tell that a service is ready."""

    path: str = "/health"
    port: int
    startup_timeout_s: float = 120.0


class DynamoWorker(_Model):
    """How NVIDIA Dynamo's operator runs this engine service as a component (the k8s target's dynamo flavour).

    ``unsupported`` set means Dynamo cannot run it; the target's error names the node and gives that reason.
    """

    component: str = Field(default="", description="the component's type: worker, prefill or decode")
    command: list[str] = Field(default_factory=list, description="the container's command, e.g. python3 -m dynamo.vllm")
    args: list[str] = Field(default_factory=list, description="its arguments, without the per-pod wiring")
    runtime_image: str = Field(default="", description="Dynamo's runtime image for this engine, without its tag")
    media: bool = Field(default=False, description="its worker fetches and decodes the request's media itself, so "
                                                   "a Processor in front of it needs no component of its own")
    unsupported: str | None = Field(default=None, description="why Dynamo cannot run this service (None: it can)")


class Service(_Model):
    """One process (one replica of one node; multi-host replicas list their hosts)."""

    name: str = Field(description="node name + replica index, e.g. decode-1")
    node: str
    role: Role
    replica: int = 0
    engine: str | None = Field(default=None, description="the engine's registry name; None for our own processes")
    simulated: bool = Field(default=False, description="the built-in mock engine, standing in for a real one")
    protocol: str | None = Field(default=None, description="whose HTTP/disaggregation protocol it speaks")
    model: str | None = None
    image: str | None = Field(default=None, description="the container image its engine's adapter pins; None: ours")
    parallelism: Parallelism | None = Field(default=None, description="an engine's tp/pp/dp, as data")
    argv: list[str] = Field(description="what it runs; on a multi-host replica, what its leader (rank 0) runs")
    follower_argv: list[str] | None = Field(
        default=None, description="what the other hosts of a multi-host replica run (ranks 1..hosts-1), when "
                                  "that differs from argv; None: every host runs argv")
    env: dict[str, str] = Field(default_factory=dict, description="its environment, the same on every host")
    ports: dict[str, int] = Field(description="named ports: http, nixl_side_channel, bootstrap, ...")
    health: HealthCheck
    depends_on: list[str] = Field(default_factory=list, description="services that must be healthy first")
    gpus: int = Field(default=0, description="GPUs per host")
    hosts: int = Field(default=1, description="hosts one replica spans")
    cpu: float | None = None
    memory: str | None = None
    cpus_per_gpu: int | None = Field(default=None, description="an engine's CPU cores per GPU (its adapter's), for "
                                                               "targets that size a pod or step when cpu is unset")
    config_file: str | None = Field(default=None, description="path of its config slice, relative to the plan")
    config: dict[str, Any] | None = Field(default=None, description="content of config_file")
    files: dict[str, str] = Field(
        default_factory=dict, description="other files it needs beside its config (a node's code), relative path -> text")
    platform: dict[str, dict[str, Any]] = Field(default_factory=dict)
    dynamo: DynamoWorker | None = Field(default=None, description="its form as a Dynamo component, if it has one")

    @model_validator(mode="after")
    def _followers_need_hosts(self) -> Service:
        if self.follower_argv is not None and self.hosts < 2:
            raise ValueError(f"service {self.name}: follower_argv is for a replica over several hosts, "
                             f"and it has hosts={self.hosts}")
        return self

    @property
    def http_port(self) -> int:
        """The port its HTTP API listens on."""
        return self.ports["http"]

    @property
    def one_process(self) -> bool:
        """Whether one process on one host can run it (``graph run``): it spans one host, or it is the
        built-in mock, whose one process stands for every rank when no leader is named (nodes/mock/multinode.py)."""
        return self.hosts == 1 or self.simulated

    def why_not_one_process(self) -> tuple[str, str]:
        """(why, what to do) when it is not :attr:`one_process`; said by the local target and ``graph run``."""
        return (f"{self.name} is one {self.engine} replica over {self.hosts} hosts (node '{self.node}', "
                f"nodes={self.hosts}), a process on each host that knows its rank and its leader",
                f"run it on a cluster (graph submit, or graph compile --target slurm|k8s); or --set {self.node}.nodes=1 "
                "if its GPUs fit one host; or --mock, whose one process stands for every host")


#: How a tensor edge moves its bytes: over NIXL; as files in a folder both ends see; or by the
#: engine's own transfer (its language model fetches from the encoder), which servegraph does not set up.
EdgeTransport = Literal["http", "nixl", "files", "engine"]
#: How tensor edges cross hosts: auto (UCX picks: RDMA first, shared memory on one host) or tcp (TCP only).
Network = Literal["auto", "tcp"]
NETWORKS: tuple[str, ...] = get_args(Network)


class TransportSettings(_Model):
    """How a tensor edge moves bytes, and why (issue: NIXL edges at hardware speed)."""

    backend: str = Field(default="UCX", description="NIXL's backend (UCX); 'files' or 'engine' for such edges")
    direction: Literal["READ", "WRITE"] | None = Field(default="READ", description="the NIXL operation; None: not NIXL")
    buffer_device: Literal["cuda", "cpu"] = "cuda"
    placement: Literal["same-host", "cross-host", "unknown"] = "unknown"
    network: Network = Field(
        default="auto", description="auto: UCX picks (RDMA first between hosts); tcp: UCX over TCP only")
    folder: str | None = Field(default=None, description="files edges: the folder both ends must see")
    folder_shared: bool = Field(default=False, description="the target puts that folder on storage every host sees")
    env: dict[str, str] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list)


class EdgeEnds(_Model):
    """The ends and type of a graph edge (the resolved graph's and the Plan's edges share them)."""

    src: str
    dst: str
    type: str
    transport: Literal["http", "nixl"]


class PlanEdge(EdgeEnds):
    """A graph edge lowered onto services: a tensor edge says how its engines really move the bytes."""

    transport: EdgeTransport  # type: ignore[assignment]
    settings: TransportSettings | None = None


class Plan(_Model):
    """Everything a target needs to run a graph."""

    graph: str
    shape: str
    device: Literal["gpu", "cpu"] = "gpu"
    services: list[Service]
    edges: list[PlanEdge] = Field(default_factory=list)
    frontend: str = Field(description="name of the frontend service")
    url: str = Field(description="where clients connect, with the frontend's host placeholder")

    def service(self, name: str) -> Service:
        """The service called ``name``."""
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def of_node(self, node: str) -> list[Service]:
        """All replicas of a graph node."""
        return [s for s in self.services if s.node == node]

    def single_host_env(self, host: str) -> dict[str, str]:
        """Address variables for when every service runs on one host (local target, supervisor)."""
        env = {host_var(s.name): host for s in self.services}
        env[SELF_HOST_VAR] = host
        return env

    def start_order(self) -> list[list[Service]]:
        """Services grouped in waves: each wave depends only on earlier ones."""
        done: set[str] = set()
        waves: list[list[Service]] = []
        pending = list(self.services)
        while pending:
            wave = [s for s in pending if set(s.depends_on) <= done]
            if not wave:
                raise ValueError("dependency cycle among services: " + ", ".join(s.name for s in pending))
            waves.append(wave)
            done |= {s.name for s in wave}
            pending = [s for s in pending if s.name not in done]
        return waves


# --- configuration slices of our own processes -----------------------------------


class Upstream(_Model):
    """One replica the frontend can send a stage's requests to."""

    service: str
    url: str = Field(description="base URL, e.g. http://${SG_HOST_DECODE_0}:8102")
    bootstrap_port: int | None = Field(default=None, description="SGLang prefill bootstrap port")


def upstreams_of(services: list[Service], node: str) -> list[Upstream]:
    """The replicas of graph node ``node`` among ``services``, as a stage calls them."""
    return [Upstream(service=s.name, url=f"http://{host_ref(s.name)}:{s.http_port}", bootstrap_port=s.ports.get("bootstrap"))
            for s in services if s.node == node]


class StageConfig(_Model):
    """One step of a request's path through the graph."""

    stage: Stage
    node: str
    role: Role
    protocol: str = Field(description="the frontend protocol that talks to it (nodes/frontend/protocols)")
    upstreams: list[Upstream]
    policy: str = "round_robin"
    options: dict[str, Any] = Field(default_factory=dict)


class RouteConfig(_Model):
    """The path of requests for one served model."""

    model: str
    shape: str
    stages: list[StageConfig]
    processor: list[Upstream] = Field(default_factory=list)
    request_nodes: list[StageConfig] = Field(
        default_factory=list, description="nodes of your own before the model, in order (options.after_processor)")
    response_nodes: list[StageConfig] = Field(
        default_factory=list, description="nodes of your own that rewrite the answer, in order")


class FrontendConfig(FrontendSettings):
    """What ``python -m nodes.frontend`` reads: the Frontend node's settings and the routes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    graph: str
    host: str = "0.0.0.0"
    routes: list[RouteConfig]


class ProcessorConfig(ProcessorSettings):
    """What ``python -m nodes.processor`` reads: the Processor node's settings and where to listen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "0.0.0.0"
    port: int


class UserNodeConfig(_Model):
    """What ``python -m nodes.custom`` reads: a node of your own (graph.custom)."""

    node: str
    kind: Literal["request", "response"]
    host: str = "0.0.0.0"
    port: int
    file: str = Field(description="the Python file that defines the class, relative to this config's folder")
    qualname: str = Field(description="the class's name in that file")
    settings: dict[str, Any] = Field(default_factory=dict, description="the node's own fields")
