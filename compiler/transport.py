"""Transport settings of tensor (KV / Embeddings) edges, derived from placement.

Direction per engine, from their sources:
* vLLM NixlConnector: the decode side READs the prefill's KV blocks
  (``NixlConnectorWorker._read_blocks`` issues ``make_prepped_xfer("READ", ...)``).
* SGLang NIXL disaggregation: the prefill side WRITEs into the decode's buffers
  (``sglang/srt/disaggregation/nixl/conn.py``, ``make_prepped_xfer("WRITE", ...)``).
* TRT-LLM's cache transceiver and our mock/tensor edge: WRITE.
Measured on one H100 without NVLink (ENGINES.md): NIXL READ over UCX fell back
to 0.4 GB/s until ``UCX_CUDA_IPC_ENABLE_GET_ZCOPY=y``; WRITE is zero-copy by default.
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
    direction = "WRITE" if src.engine == "mock" or edge_type == "Embeddings" else _DIRECTION.get(protocol, "WRITE")
    reasons = [f"{protocol} {edge_type} transfers use NIXL {direction}"]
    env: dict[str, str] = {}
    if options.device == "cpu" or "mock" in (src.engine, dst.engine):
        env["UCX_TLS"] = "tcp,sm,self"
        reasons.append("CPU buffers (CPU device or mock engine): UCX over tcp/shared memory")
        buffer_device = "cpu"
    else:
        buffer_device = "cuda"
        env["UCX_TLS"] = "cuda_copy,cuda_ipc,tcp,sm,self" + (",rc" if (src.nodes > 1 or dst.nodes > 1) else "")
        reasons.append("GPU buffers: UCX needs cuda_copy; tcp keeps peer error handling working")
        if direction == "READ" and not options.nvlink:
            env["UCX_CUDA_IPC_ENABLE_GET_ZCOPY"] = "y"
            reasons.append("READ without NVLink: UCX disables cuda_ipc get-zcopy (0.4 GB/s); force it on (~1 TB/s)")
    return TransportSettings(
        backend="UCX", direction=direction, buffer_device=buffer_device, placement="unknown", env=env, reasons=reasons,  # type: ignore[arg-type]
    )
