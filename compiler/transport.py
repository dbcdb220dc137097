"""Tensor (KV / Embeddings) edges: how the engines at both ends really move the bytes, and the settings.

What moves the bytes is the engine adapter's fact: KV goes over NIXL (``kv_transfer``
says which side moves it; the mock engine and our own tensor edge WRITE into the
receiver's slots); embeddings go over our NIXL edge, as files in a folder both ends
see, or by the engine's own means (``embeddings_transfer``, ``embeddings_how``).

UCX's transports follow from the buffers and from the network the target says the
hosts have (``PlanOptions.network``):

* ``auto``: UCX picks. Where the ends may be on different hosts, ``rc`` (RDMA) comes
  first and ``tcp`` is the fallback; shared memory (``sm``) serves ends on one host.
* ``tcp``: TCP only between hosts, no shared memory and no RDMA. For hosts without
  RDMA, and for "hosts" that share one kernel (network namespaces, containers of one
  machine), where UCX would otherwise move the bytes through shared memory and not
  over the network (docs/engines.md, "NIXL": 3.8 KB of 12 MiB crossed the bridge).

Measured on one H100 without NVLink (docs/engines.md, "NIXL"): NIXL READ between
two processes ran at 0.4 GB/s because UCX disables cuda_ipc get-zcopy when it
sees no NVLink; ``UCX_CUDA_IPC_ENABLE_GET_ZCOPY=y`` took it to ~1.0 TB/s. WRITE
is zero-copy by default. Without ``tcp`` in UCX_TLS, NIXL's default peer error
handling cannot create endpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graph.plan import NETWORKS, TransportSettings
from graph.spec import GraphSpec, NodeSpec

from .engines import get_adapter

if TYPE_CHECKING:
    from .plan import PlanOptions

__all__ = ["NETWORKS", "edge_settings", "edge_transport", "tensor_edge_transports"]


def edge_transport(src: NodeSpec, edge_type: str) -> str:
    """How a tensor edge from ``src`` moves its bytes: "nixl", "files" or "engine" (see graph.plan.EdgeTransport)."""
    adapter = get_adapter(src.engine or "")
    if edge_type == "Embeddings" and not adapter.simulated:
        return adapter.embeddings_transfer
    return "nixl"


def tensor_edge_transports(spec: GraphSpec) -> dict[tuple[str, str], str]:
    """(src, dst) -> how each tensor edge of a resolved graph (engines filled in) moves its bytes."""
    return {(e.src, e.dst): edge_transport(spec.node(e.src), e.type) for e in spec.edges if e.transport == "nixl"}


def edge_settings(src: NodeSpec, dst: NodeSpec, edge_type: str, options: "PlanOptions",
                  folder: str | None = None) -> TransportSettings:
    """How bytes should move over one tensor edge, with the reasons.

    Args:
        src: the sending node (its engine decides how the edge moves bytes).
        dst: the receiving node.
        edge_type: "KV" or "Embeddings".
        options: the device, the network between hosts, whether every service runs on one host.
        folder: for an edge that moves files, the folder both ends use.
    """
    placement = _placement(src, dst, options)
    buffer_device = "cpu" if options.device == "cpu" or _simulated(src, dst) else "cuda"
    common = {"buffer_device": buffer_device, "placement": placement, "network": options.network}
    transport = edge_transport(src, edge_type)
    adapter = get_adapter(src.engine or "")
    if transport == "files":
        return TransportSettings(
            backend="files", direction=None, folder=folder, folder_shared=options.encoder_cache_shared,
            reasons=[adapter.embeddings_how, _folder_reason(folder, placement, options)], **common)
    if transport == "engine":
        return TransportSettings(backend="engine", direction=None, reasons=[adapter.embeddings_how], **common)
    ours = adapter.simulated or edge_type == "Embeddings"
    direction = "WRITE" if ours else (adapter.kv_transfer or "WRITE")
    who = "our tensor edge" if ours else f"{adapter.name} {edge_type} transfer"
    reasons = [f"{who} uses NIXL {direction}"]
    env: dict[str, str] = {}
    if buffer_device == "cpu":
        env["UCX_TLS"], why = _cpu_transports(placement, options.network)
        reasons.append(f"CPU buffers ({'CPU device' if options.device == 'cpu' else 'mock engine'}): {why}")
    else:
        env["UCX_TLS"], why = _gpu_transports(placement, options.network)
        reasons += why
        if direction == "READ" and not options.nvlink:
            env["UCX_CUDA_IPC_ENABLE_GET_ZCOPY"] = "y"
            reasons.append("READ without NVLink: UCX turns cuda_ipc get-zcopy off (0.4 GB/s measured); forced on (~1 TB/s)")
    return TransportSettings(backend="UCX", direction=direction, env=env, reasons=reasons, **common)


def _simulated(src: NodeSpec, dst: NodeSpec) -> bool:
    return get_adapter(src.engine or "").simulated or get_adapter(dst.engine or "").simulated


def _placement(src: NodeSpec, dst: NodeSpec, options: "PlanOptions") -> str:
    """same-host (every service on one host), cross-host (a replica spans hosts), else unknown:
    a cluster target places services after planning."""
    multi_host = src.nodes > 1 or dst.nodes > 1
    if options.single_host and not multi_host:
        return "same-host"
    return "cross-host" if multi_host else "unknown"


_TCP_ONLY = ("network tcp (the target's -O network=tcp): UCX over TCP only, no shared memory (hosts that share "
             "a kernel, such as network namespaces, would otherwise use it) and no RDMA")


def _cpu_transports(placement: str, network: str) -> tuple[str, str]:
    if network == "tcp":
        return "tcp,self", _TCP_ONLY
    if placement == "same-host":
        return "tcp,sm,self", "one host: UCX over shared memory and tcp"
    return "rc,tcp,sm,self", ("ends may be on different hosts (network auto): rc (RDMA) where the hosts have it, "
                              "tcp as fallback, shared memory on one host")


def _gpu_transports(placement: str, network: str) -> tuple[str, list[str]]:
    gpu = "GPU buffers: cuda_copy/cuda_ipc for device memory; tcp keeps NIXL's peer error handling working"
    if network == "tcp":
        return "cuda_copy,tcp,self", [_TCP_ONLY + "; GPU buffers staged through host memory (cuda_copy)"]
    transports = ["cuda_copy", "cuda_ipc", "tcp", "sm", "self"]
    reasons = [gpu]
    if placement != "same-host":
        transports.insert(0, "rc")
        reasons.insert(0, "ends may be on different hosts (network auto): rc (InfiniBand/RoCE, GPUDirect RDMA) "
                          "first, tcp as fallback")
    return ",".join(transports), reasons


def _folder_reason(folder: str | None, placement: str, options: "PlanOptions") -> str:
    where = folder or "(no folder)"
    if placement == "same-host":
        return f"both ends must see {where}: they run on one host"
    if options.encoder_cache_shared:
        return f"both ends must see {where}: the target puts it on storage every host sees"
    return (f"both ends must see {where}, which is not shared between hosts: the target must run encoder and "
            "consumer on one host, or be given a shared folder (k8s: -O shared_cache_pvc; slurm: -O shared_cache_dir)")
