"""Transport settings of tensor (KV / Embeddings) edges, derived from the engines and where both ends run.

Which side moves the bytes is the engine adapter's fact (``kv_transfer``; the
mock engine and our own tensor edge WRITE into the receiver's slots).

Measured on one H100 without NVLink (docs/engines.md, "NIXL"): NIXL READ between
two processes ran at 0.4 GB/s because UCX disables cuda_ipc get-zcopy when it
sees no NVLink; ``UCX_CUDA_IPC_ENABLE_GET_ZCOPY=y`` took it to ~1.0 TB/s. WRITE
is zero-copy by default. Without ``tcp`` in UCX_TLS, NIXL's default peer error
handling cannot create endpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graph.plan import TransportSettings
from graph.spec import NodeSpec

from .engines import get_adapter

if TYPE_CHECKING:
    from .plan import PlanOptions


def edge_settings(src: NodeSpec, dst: NodeSpec, edge_type: str, options: "PlanOptions") -> TransportSettings:
    """How bytes should move over one tensor edge, with the reasons."""
    adapter = get_adapter(src.engine or "")
    ours = adapter.simulated or edge_type == "Embeddings"
    direction = "WRITE" if ours else (adapter.kv_transfer or "WRITE")
    who = "our tensor edge" if ours else f"{adapter.name} {edge_type} transfer"
    reasons = [f"{who} uses NIXL {direction}"]
    multi_host = src.nodes > 1 or dst.nodes > 1
    placement = "same-host" if options.single_host and not multi_host else ("cross-host" if multi_host else "unknown")
    env: dict[str, str] = {}
    simulated = adapter.simulated or get_adapter(dst.engine or "").simulated
    if options.device == "cpu" or simulated:
        buffer_device = "cpu"
        env["UCX_TLS"] = "tcp,sm,self" if placement == "same-host" else "rc,tcp,sm,self"
        reasons.append("CPU buffers (CPU device or mock engine): UCX over shared memory and tcp"
                       + ("" if placement == "same-host" else ", rc (RDMA) where the hosts have it"))
    else:
        buffer_device = "cuda"
        transports = ["cuda_copy", "cuda_ipc", "tcp", "sm", "self"]
        if placement != "same-host":
            transports.insert(0, "rc")
            reasons.append("ends may be on different hosts: rc (InfiniBand/RoCE, GPUDirect RDMA) first, tcp as fallback")
        env["UCX_TLS"] = ",".join(transports)
        reasons.append("GPU buffers: cuda_copy/cuda_ipc for device memory; tcp keeps NIXL's peer error handling working")
        if direction == "READ" and not options.nvlink:
            env["UCX_CUDA_IPC_ENABLE_GET_ZCOPY"] = "y"
            reasons.append("READ without NVLink: UCX turns cuda_ipc get-zcopy off (0.4 GB/s measured); forced on (~1 TB/s)")
    return TransportSettings(
        backend="UCX", direction=direction, buffer_device=buffer_device,  # type: ignore[arg-type]
        placement=placement, env=env, reasons=reasons,  # type: ignore[arg-type]
    )
