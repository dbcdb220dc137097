"""Transport settings of tensor (KV / Embeddings) edges, derived from where both ends run.

Which side moves the bytes, read at the source:
* vLLM 0.32 ``NixlConnector`` is an alias of ``NixlPullConnector``: the decode
  side READs the prefill's blocks (vllm/distributed/kv_transfer/kv_connector/v1/
  nixl/pull_worker.py, ``make_prepped_xfer("READ", ...)``); ``NixlPushConnector``
  WRITEs from prefill instead (nixl/push_worker.py, ``make_prepped_xfer("WRITE", ...)``).
* SGLang's NIXL disaggregation: the prefill WRITEs the KV into pages the decode
  allocated (python/sglang/srt/disaggregation/nixl/conn.py; Dynamo's
  components/backends/sglang/docs/sglang-kv-transfer-explainer.md step 6).
* TRT-LLM's cache transceiver: the context (prefill) side sends: WRITE.
* Our own tensor edge (nodes/transport) and the mock engine: WRITE.

Measured on one H100 without NVLink (ENGINES.md): NIXL READ between two
processes ran at 0.4 GB/s because UCX disables cuda_ipc get-zcopy when it sees
no NVLink; ``UCX_CUDA_IPC_ENABLE_GET_ZCOPY=y`` took it to ~1.0 TB/s. WRITE is
zero-copy by default. Without ``tcp`` in UCX_TLS, NIXL's default peer error
handling cannot create endpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graph.spec import NodeSpec

from .ir import TransportSettings

if TYPE_CHECKING:
    from .plan import PlanOptions

_DIRECTION = {"vllm": "READ", "sglang": "WRITE", "trtllm": "WRITE"}


def edge_settings(src: NodeSpec, dst: NodeSpec, edge_type: str, options: "PlanOptions") -> TransportSettings:
    """How bytes should move over one tensor edge, with the reasons."""
    protocol = src.protocol or "vllm"
    ours = src.engine == "mock" or edge_type == "Embeddings"
    direction = "WRITE" if ours else _DIRECTION.get(protocol, "WRITE")
    who = "our tensor edge" if ours else f"{protocol} {edge_type} transfer"
    reasons = [f"{who} uses NIXL {direction}"]
    multi_host = src.nodes > 1 or dst.nodes > 1
    placement = "same-host" if options.single_host and not multi_host else ("cross-host" if multi_host else "unknown")
    env: dict[str, str] = {}
    if options.device == "cpu" or "mock" in (src.engine, dst.engine):
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
