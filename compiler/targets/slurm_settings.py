"""Options of the slurm target and each service's step settings: command line (-O) over ``platform["slurm"]``.

A node's ``platform["slurm"]`` takes the keys of :class:`NodeSettings`; anything
else is rejected with the node and the key named. Command-line images win over
the pipeline's only where the pipeline names none (a node's own image is the
more specific choice).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from graph.plan import Plan, Service

from .base import platform_settings

_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")
_MEM = re.compile(r"^\d+[KMGT]?$")


@dataclass(frozen=True)
class Options:
    """Slurm target options (``-O key=value``; maps and lists in YAML/JSON).

    Args:
        partition: ``#SBATCH --partition`` (None: the cluster's default partition).
        account: ``#SBATCH --account``.
        qos: ``#SBATCH --qos``.
        time: wall-clock limit, Slurm's format (``HH:MM:SS``, ``D-HH:MM:SS``).
        job_name: the job's name (None: the graph's name).
        gpus_per_node: GPUs on one node of the partition; services are packed onto
            nodes of this size and no single-host service may need more.
        nodes: nodes to allocate (None: as few as the placement needs).
        max_nodes: nodes the partition can give this job; with it the GPU budget
            (max_nodes x gpus_per_node) is checked at compile time.
        cpus_per_gpu: CPU cores per GPU for a real engine's step (a node's
            ``platform["slurm"]["cpus"]`` or its ``cpu`` field wins; steps without GPUs get 1).
        mem_per_cpu: ``#SBATCH --mem-per-cpu`` (e.g. 8G); None: the cluster's default.
        exclusive: ``#SBATCH --exclusive`` (whole nodes).
        sbatch_args: extra ``#SBATCH`` options, e.g. ``[--constraint=h100]``.
        setup: shell lines run before anything starts (``module load ...``,
            ``source venv/bin/activate``); steps inherit the environment.
        run_dir: folder for config files and logs (default ``$SLURM_SUBMIT_DIR/<job>-<id>``);
            it must be visible from every node. ``$SG_RUN_DIR`` at submit time wins.
        container_image: pyxis image of our own processes and the mock engine.
        container_engine_images: engine name -> pyxis image of that engine's steps
            (``-O container_image_<engine>=IMAGE`` sets one); engines without one run on the host.
        container_mounts: pyxis ``--container-mounts`` for every containerized step
            (the run folder is always mounted).
        mock_gpus: node name -> GPUs per host for mock engines (the Plan gives mock
            engines none); rehearses a real graph's GPU placement and isolation on a
            cluster without real engines.
        network: how tensor edges cross nodes: ``auto`` (UCX picks: RDMA first, TCP as fallback,
            shared memory within a node) or ``tcp`` (TCP only: clusters without RDMA, or "nodes"
            that share one kernel, such as network namespaces, where UCX would take shared memory);
            `graph inspect --edges -t slurm -O network=...` shows the settings.
        shared_cache_dir: a folder every node mounts (a shared filesystem) for what engines hand
            each other as files (vLLM's encoder cache); None: /tmp/servegraph-ec, one per node,
            so an encoder and the engines it feeds must be placed on one node.
        health_interval_s: seconds between health probes while waiting for a service.
        stop_timeout_s: seconds a step gets after SIGTERM before SIGKILL at teardown.
        restart_limit: restarts in a row of one service before the job gives up and ends (one
            that served for 60 s starts counting again); 0: any step that ends ends the job.
            The frontend is never restarted: its end ends the job.
        restart_backoff_s: seconds before a service's first restart; each restart in a row
            doubles the wait, up to 30 s.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "04:00:00"
    job_name: str | None = None
    gpus_per_node: int = 8
    nodes: int | None = None
    max_nodes: int | None = None
    cpus_per_gpu: int = 4
    mem_per_cpu: str | None = None
    exclusive: bool = False
    sbatch_args: list[str] = field(default_factory=list)
    setup: str | None = None
    run_dir: str | None = None
    container_image: str | None = None
    container_engine_images: dict[str, str] = field(default_factory=dict)
    container_mounts: str | None = None
    mock_gpus: dict[str, int] = field(default_factory=dict)
    network: str = "auto"
    shared_cache_dir: str | None = None
    health_interval_s: float = 0.5
    stop_timeout_s: int = 20
    restart_limit: int = 5
    restart_backoff_s: int = 1

    #: ``-O container_image_<engine>=...`` is ``container_engine_images[<engine>]`` (the CLI's option parser).
    ENGINE_IMAGE_PREFIX: ClassVar[str] = "container_image_"
    #: A service that served this long before its step ended starts its restart count again.
    RESTART_RESET_S: ClassVar[int] = 60
    #: The longest wait before a restart.
    RESTART_BACKOFF_MAX_S: ClassVar[int] = 30

    def __post_init__(self) -> None:
        for name in ("gpus_per_node", "cpus_per_gpu", "stop_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        for name in ("nodes", "max_nodes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        for name in ("restart_limit", "restart_backoff_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.nodes and self.max_nodes and self.nodes > self.max_nodes:
            raise ValueError(f"nodes={self.nodes} is more than max_nodes={self.max_nodes}")
        if not _TIME.match(str(self.time)):
            raise ValueError(f"time '{self.time}' is not Slurm's format; e.g. -O time=04:00:00 or -O time=1-00:00:00")
        if self.mem_per_cpu is not None and not _MEM.match(str(self.mem_per_cpu)):
            raise ValueError(f"mem_per_cpu '{self.mem_per_cpu}' is not a Slurm size; e.g. -O mem_per_cpu=8G")
        if not isinstance(self.sbatch_args, list) or not all(
            isinstance(a, str) and a.startswith("--") for a in self.sbatch_args
        ):
            raise ValueError("sbatch_args must be a list of --options, e.g. -O sbatch_args='[--constraint=h100]'")
        if not isinstance(self.mock_gpus, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in self.mock_gpus.values()
        ):
            raise ValueError("mock_gpus must map node names to GPU counts, e.g. -O mock_gpus='{prefill: 1, decode: 2}'")
        if not isinstance(self.container_engine_images, dict):
            raise ValueError("container_engine_images must map engine names to images, "
                             "e.g. -O container_image_vllm=vllm/vllm-openai:v0.32.0")
        if self.health_interval_s <= 0:
            raise ValueError("health_interval_s must be > 0")

    def image_of(self, service: Service) -> str | None:
        """The command line's container image for a service (ours for our processes and mock engines)."""
        if service.engine is not None and not service.simulated:
            return self.container_engine_images.get(service.engine)
        return self.container_image


class NodeSettings(BaseModel):
    """What a node may set under ``platform["slurm"]`` (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    container_image: str | None = None
    container_mounts: str | None = None
    cpus: int | None = None
    srun_args: list[str] = []


@dataclass(frozen=True)
class StepSettings:
    """How one service's ``srun`` step is shaped."""

    gpus: int
    cpus: int
    container_image: str | None
    container_mounts: str | None
    srun_args: tuple[str, ...]

    @property
    def exclusive(self) -> bool:
        """GPU steps own their cores and GPUs; the others overlap (they are light and must see no GPU)."""
        return self.gpus > 0


def step_settings(plan: Plan, options: Options) -> dict[str, StepSettings]:
    """Each service's step settings.

    Raises:
        ValueError: an unknown ``platform["slurm"]`` key or a badly typed value (node and key named);
            ``mock_gpus`` naming a node that is not a mock engine of this graph.
    """
    nodes = {s.node: s for s in plan.services}
    for node in sorted(options.mock_gpus):
        if node not in nodes or not nodes[node].simulated:
            mocks = sorted(n for n, s in nodes.items() if s.simulated)
            raise ValueError(
                f"-O mock_gpus names '{node}', which is not a mock engine node of graph '{plan.graph}' "
                f"(mock engine nodes: {', '.join(mocks) or 'none; compile with --mock'})"
            )
    node_settings = {node: _node_settings(node, s) for node, s in nodes.items()}
    return {s.name: _step(s, node_settings[s.node], options) for s in plan.services}


def _node_settings(node: str, service: Service) -> NodeSettings:
    settings = platform_settings("slurm", node, service.platform.get("slurm", {}), NodeSettings)
    if settings.cpus is not None and settings.cpus < 1:
        raise ValueError(f"node '{node}': platform['slurm']['cpus'] must be >= 1, got {settings.cpus}")
    return settings


def _step(service: Service, node: NodeSettings, options: Options) -> StepSettings:
    gpus = options.mock_gpus.get(service.node, service.gpus) if service.simulated else service.gpus
    if node.cpus is not None:
        cpus = node.cpus
    elif service.cpu is not None:
        cpus = max(1, math.ceil(service.cpu))
    elif service.engine is not None and not service.simulated:
        cpus = max(1, gpus * options.cpus_per_gpu)
    else:
        cpus = 1
    return StepSettings(
        gpus=gpus,
        cpus=cpus,
        container_image=node.container_image or options.image_of(service),
        container_mounts=node.container_mounts or options.container_mounts,
        srun_args=tuple(node.srun_args),
    )
