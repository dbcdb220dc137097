"""The settings every layer shares, declared once.

A pipeline's nodes (:mod:`graph.nodes`), the resolved graph (:mod:`graph.spec`),
what an engine adapter is handed (``compiler.engines.EngineInput``) and the
Plan our processes read (:mod:`graph.plan`) all reuse these models, so a
setting's name, type, bounds, default and description live in one place.

This module imports nothing else of ours: the Plan and our processes import it
without pulling in the authoring layer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal[
    "frontend", "router", "processor", "encoder", "prefill", "decode", "worker", "encode_prefill", "prefill_decode",
    "request_node", "response_node",
]
#: Roles of the nodes users write themselves (graph.custom).
USER_ROLES: frozenset[str] = frozenset({"request_node", "response_node"})
#: Roles served by an inference engine.
ENGINE_ROLES: frozenset[str] = frozenset({"encoder", "prefill", "decode", "worker", "encode_prefill", "prefill_decode"})
#: Roles that hand KV to a decode node.
KV_PRODUCERS: frozenset[str] = frozenset({"prefill", "encode_prefill"})


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Parallelism(_Settings):
    """How one replica of an engine node is split over GPUs."""

    tp: int = Field(default=1, ge=1, description="tensor parallel size")
    pp: int = Field(default=1, ge=1, description="pipeline parallel size")
    dp: int = Field(default=1, ge=1, description="data parallel ranks inside one replica")


class EngineSettings(Parallelism):
    """An engine node's settings (encoder, prefill, decode, worker and the combined roles)."""

    engine: str | None = Field(
        default=None, description="inference engine (`graph doctor` lists them; default: the compiler's default)")
    model: str | None = Field(default=None, description="model id or local path")
    served_model_name: str | None = Field(default=None, description="name clients use; default: model")
    gpus: int | None = Field(default=None, ge=0, description="GPUs per node of a replica; default tp*pp*dp/nodes")
    nodes: int = Field(default=1, ge=1, description="hosts per replica (multi-node tp/pp)")
    dtype: str = Field(default="auto", description="weights/activations dtype")
    kv_cache_dtype: str = Field(default="auto", description="KV cache dtype")
    block_size: int | None = Field(default=None, ge=1, description="KV block size in tokens")
    max_model_len: int | None = Field(default=None, ge=1)
    port: int | None = Field(default=None, ge=1, le=65535, description="fixed HTTP port (default: assigned)")
    engine_args: dict[str, Any] | list[str] = Field(
        default_factory=dict, description="extra engine flags, {'flag': value} or ['--flag', 'value']"
    )
    imitate: str | None = Field(
        default=None, description="for the mock engine: the engine it stands in for, whose protocol it speaks"
    )
    mock: dict[str, Any] = Field(
        default_factory=dict, description="mock engine knobs: prefill_tps, itl_ms, speedup, kv_blocks, ..."
    )


class FrontendSettings(_Settings):
    """The OpenAI-compatible entry point's settings."""

    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port clients connect to")
    host: str | None = Field(
        default=None, description="address to listen on (default: loopback under `graph run`, every interface "
        "in a cluster)")
    request_timeout_s: float = Field(default=600.0, gt=0, description="deadline for one request")
    stage_timeout_s: float = Field(
        default=120.0, gt=0, description="deadline for an encoder/prefill answer and for silence in a stream"
    )
    migration_limit: int = Field(
        default=3, ge=0, description="times one stream may move to another replica when its engine fails (0: never)"
    )


class RouterSettings(_Settings):
    """How requests are spread over a stage's replicas."""

    policy: Literal["round_robin", "least_loaded", "kv"] = Field(default="round_robin")
    block_size: int = Field(default=16, ge=1, description="tokens per hashed block for kv policy")
    disagg_threshold: int = Field(
        default=0, ge=0, description="P/D: prompts with fewer uncached tokens than this skip prefill"
    )


class ProcessorSettings(_Settings):
    """Limits and formats of the media processor (untrusted input)."""

    max_bytes: int = Field(default=20 * 2**20, ge=1, description="largest media part (download or data URL)")
    max_pixels: int = Field(default=4096 * 4096, ge=1, description="largest image or video frame (width x height)")
    max_frames: int = Field(default=32, ge=1, description="video frames kept")
    max_duration_s: float = Field(default=600.0, gt=0, description="longest video/audio")
    fetch_timeout_s: float = Field(default=10.0, gt=0)
    allow_private_urls: bool = Field(default=False, description="allow loopback/private hosts")
    video_fps: float = Field(default=2.0, gt=0, description="video frames sampled per second (up to max_frames)")
    audio_sample_rate: int = Field(default=16000, ge=1000, le=192000,
                                   description="audio is resampled to this rate, mono")
    decode_timeout_s: float = Field(default=10.0, gt=0, description="longest decode of one media part")
    video_format: Literal["mp4", "jpeg_frames"] = Field(
        default="mp4", description="sampled video sent on as an H.264 MP4, or as vLLM's JPEG frame list")


class Resources(_Settings):
    """CPU and memory for one replica (GPUs are set with ``gpus``)."""

    cpu: float | None = Field(default=None, gt=0, description="CPU cores per replica")
    memory: str | None = Field(default=None, description="memory per replica, e.g. '64Gi'")


#: The settings model of each role that is not an engine.
ROLE_SETTINGS: dict[str, type[_Settings]] = {
    "frontend": FrontendSettings, "router": RouterSettings, "processor": ProcessorSettings,
}
