"""Options of the k8s target and each node's settings: command line (-O) over ``platform["k8s"]``.

A node's ``platform["k8s"]`` takes the keys of :class:`NodeSettings`; anything
else is rejected with the node and key named. The command line's per-node maps
(``-O node_selectors='{decode: {gpu: h100}}'``) win over the pipeline's.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from graph.plan import Plan, Service

from .base import platform_settings

#: The image of our own processes (and the mock engine): what the repository's Dockerfile builds,
#: tagged with this package's version (never :latest, so a cluster runs what was compiled for).
OUR_IMAGE = f"servegraph:{importlib.metadata.version('servegraph')}"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|[mk])?$")


@dataclass(frozen=True)
class Options:
    """Kubernetes target options (``-O key=value``; maps and lists in YAML/JSON).

    Args:
        flavor: ``plain`` (Deployments/LeaderWorkerSets, Services, ConfigMap) or
            ``dynamo`` (one DynamoGraphDeployment for NVIDIA Dynamo's operator).
        namespace: metadata.namespace of every object (None: left to kubectl/kustomize).
        prefix: prefix of every object name; None means the graph name and a dash.
        image: image of our own processes (frontend, router, processor) and the mock engine.
        engine_images: engine name -> image, over the version each engine's adapter pins
            (``-O image_<engine>=IMAGE`` sets one, e.g. ``-O image_vllm=my/vllm:v0.32.0``).
        image_pull_policy: Always, IfNotPresent or Never.
        image_pull_secret: name of a Secret of type dockerconfigjson, if the registry needs one.
        hf_token_secret: name of a Secret whose key ``hf_token_key`` becomes HF_TOKEN in engines.
        hf_token_key: the key in that Secret.
        model_cache_pvc: a PersistentVolumeClaim mounted at ``model_cache_path`` in engines.
        model_cache_host_path: a host folder mounted there instead (single-node clusters).
        model_cache_path: where engines look for downloaded models.
        shared_cache_pvc: a ReadWriteMany claim of yours, mounted at ``shared_cache_path`` in the
            pods at either end of a files edge (vLLM's encoder cache: one folder seen by encoder and
            prefill pods). None: the output claims one itself (``<prefix>shared-cache``).
        shared_cache_path: where the shared claim is mounted.
        shared_cache_storage_class: storageClassName of the claim the output makes (None: the
            cluster's default class; it must offer ReadWriteMany, e.g. NFS, CephFS, Filestore).
        shared_cache_size: size of the claim the output makes.
        network: how tensor edges cross Kubernetes nodes: ``auto`` (UCX picks: RDMA first, TCP as
            fallback) or ``tcp`` (TCP only: nodes without RDMA); `graph inspect --edges -t k8s` shows it.
        shm_size: size limit of the /dev/shm memory volume of engines.
        service_monitor: also write a prometheus-operator ServiceMonitor.
        metrics_namespace: with network_policy and service_monitor, the namespace whose pods may
            scrape /metrics (the http port) of the graph's inner pods.
        network_policy: also write NetworkPolicies: only the graph's own pods reach engine, NIXL
            side-channel, bootstrap and distributed-init ports; the frontend's port stays open (flavor plain).
        engine_user: run engine containers as this uid and gid (runAsNonRoot). None: as their image's
            default user, which is root in the vllm/vllm-openai, lmsysorg/sglang and NGC TensorRT-LLM
            images the engines pin; every pod still drops all capabilities and cannot escalate.
        engine_capabilities: capabilities engine containers add back after dropping all, e.g.
            ``[IPC_LOCK]`` where RDMA (InfiniBand/RoCE) must pin host memory beyond the node's memlock limit.
        frontend_service_type: ClusterIP, NodePort or LoadBalancer for the frontend's Service.
        node_selectors: node name or role -> nodeSelector.
        tolerations: node name or role -> list of tolerations.
        resources: node name or role -> {requests: {...}, limits: {...}} (cpu, memory, ...).
        gpus: GPUs the cluster can give this graph, checked before compiling.
        gpus_per_host: GPUs on one Kubernetes node, checked before compiling.
        dynamo_version: Dynamo runtime image tag (flavor dynamo).
    """

    flavor: str = "plain"
    namespace: str | None = None
    prefix: str | None = None
    image: str = OUR_IMAGE
    engine_images: dict[str, str] = field(default_factory=dict)
    image_pull_policy: str = "IfNotPresent"
    image_pull_secret: str | None = None
    hf_token_secret: str | None = None
    hf_token_key: str = "token"
    model_cache_pvc: str | None = None
    model_cache_host_path: str | None = None
    model_cache_path: str = "/root/.cache/huggingface"
    shared_cache_pvc: str | None = None
    shared_cache_path: str = "/tmp/servegraph-ec"
    shared_cache_storage_class: str | None = None
    shared_cache_size: str = "20Gi"
    network: str = "auto"
    shm_size: str = "16Gi"
    service_monitor: bool = False
    metrics_namespace: str = "monitoring"
    network_policy: bool = False
    engine_user: int | None = None
    engine_capabilities: list[str] = field(default_factory=list)
    frontend_service_type: str = "ClusterIP"
    node_selectors: dict[str, dict[str, str]] = field(default_factory=dict)
    tolerations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    gpus: int | None = None
    gpus_per_host: int | None = None
    dynamo_version: str = "1.6.1"

    #: ``-O image_<engine>=...`` is ``engine_images[<engine>]`` (see the CLI's option parser).
    ENGINE_IMAGE_PREFIX: ClassVar[str] = "image_"

    def __post_init__(self) -> None:
        if self.flavor not in ("plain", "dynamo"):
            raise ValueError(f"flavor '{self.flavor}' is unknown; use -O flavor=plain or -O flavor=dynamo")
        if self.image_pull_policy not in _PULL_POLICIES:
            raise ValueError(f"image_pull_policy '{self.image_pull_policy}' must be one of {', '.join(_PULL_POLICIES)}")
        if self.frontend_service_type not in _SERVICE_TYPES:
            raise ValueError(f"frontend_service_type must be one of {', '.join(_SERVICE_TYPES)}")
        if self.model_cache_pvc and self.model_cache_host_path:
            raise ValueError("set model_cache_pvc or model_cache_host_path, not both")
        for name in ("gpus", "gpus_per_host"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a whole number of GPUs, not {value!r}")
        if self.engine_user is not None and (not isinstance(self.engine_user, int) or isinstance(self.engine_user, bool)
                                             or self.engine_user < 1):
            raise ValueError(f"engine_user must be a uid of 1 or more (0 is root), not {self.engine_user!r}")
        if not isinstance(self.engine_capabilities, list) or not all(
                isinstance(c, str) and c.isupper() and c != "ALL" for c in self.engine_capabilities):
            raise ValueError(f"engine_capabilities must be a list of capability names such as [IPC_LOCK], "
                             f"not {self.engine_capabilities!r}")
        if self.network_policy and self.flavor == "dynamo":
            raise ValueError("network_policy is for -O flavor=plain: under Dynamo's operator its planner, router "
                             "and metrics reach worker pods on ports the operator picks; write a policy for your "
                             "platform's Dynamo install")
        if not _QUANTITY.match(str(self.shared_cache_size)):
            raise ValueError(f"shared_cache_size '{self.shared_cache_size}' is not a Kubernetes quantity, e.g. 20Gi")
        for name in ("namespace", "metrics_namespace"):
            value = getattr(self, name)
            if value is not None and not _DNS_LABEL.match(value):
                raise ValueError(f"{name} '{value}' is not a DNS-1123 label (lowercase letters, digits, '-')")
        for name in ("node_selectors", "tolerations", "resources", "engine_images"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a map of node name -> value, e.g. -O {name}='{{decode: ...}}'")

    def image_of(self, service: Service) -> str:
        """The image a service runs: the command line's for its engine, else the one its adapter pins,
        else ours (our processes and the mock engine)."""
        return self.engine_images.get(service.engine or "") or service.image or self.image

    def runs_ours(self, service: Service) -> bool:
        """Whether a service runs in our image (the Dockerfile's, uid/gid 10001), not an engine's."""
        return not self.engine_images.get(service.engine or "") and service.image is None


class NodeSettings(BaseModel):
    """What a node may set under ``platform["k8s"]`` (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str | None = None
    image_pull_policy: str | None = None
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    resources: dict[str, dict[str, Any]] = {}
    annotations: dict[str, str] = {}
    service_account: str | None = None
    priority_class: str | None = None


#: Command-line maps (node or role -> value) and the platform["k8s"] key each one sets.
_PER_NODE_OPTIONS = (("node_selectors", "node_selector"), ("tolerations", "tolerations"), ("resources", "resources"))


def node_settings(plan: Plan, options: Options) -> dict[str, NodeSettings]:
    """Each graph node's settings, pipeline's ``platform["k8s"]`` overlaid by the command line.

    Raises:
        ValueError: an unknown key or a badly typed value, naming the node and the key;
            a command-line map naming a node or role the graph lacks.
    """
    nodes: dict[str, Service] = {}
    for s in plan.services:
        nodes.setdefault(s.node, s)
    roles = {s.role for s in nodes.values()}
    for opt, _ in _PER_NODE_OPTIONS:
        unknown = sorted(set(getattr(options, opt)) - set(nodes) - roles)
        if unknown:
            raise ValueError(
                f"-O {opt} names '{unknown[0]}', which is neither a node nor a role of graph '{plan.graph}' "
                f"(nodes: {', '.join(sorted(nodes))})"
            )
    out = {}
    for node, s in nodes.items():
        raw = dict(s.platform.get("k8s", {}))
        for opt, key in _PER_NODE_OPTIONS:
            given = getattr(options, opt)
            value = given.get(node, given.get(s.role))
            if value is not None:
                raw[key] = value
        settings = platform_settings("k8s", node, raw, NodeSettings)
        if settings.image_pull_policy is not None and settings.image_pull_policy not in _PULL_POLICIES:
            raise ValueError(
                f"node '{node}': platform['k8s']['image_pull_policy'] must be one of {', '.join(_PULL_POLICIES)}"
            )
        for kind in settings.resources:
            if kind not in ("requests", "limits"):
                raise ValueError(f"node '{node}': resources has '{kind}'; only 'requests' and 'limits' are allowed")
            if "nvidia.com/gpu" in settings.resources[kind]:
                raise ValueError(
                    f"node '{node}': resources sets nvidia.com/gpu; GPUs come from the graph, "
                    f"set gpus= on the node instead"
                )
        out[node] = settings
    return out
