"""The mock engine's command line (``python -m nodes.mock --help``)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

ROLES = ("encoder", "prefill", "decode", "worker", "encode_prefill", "prefill_decode")
#: The protocols the mock speaks; "openai" is a plain OpenAI server with no P/D handshake.
IMITATIONS = ("vllm", "sglang", "trtllm", "openai")


@dataclass
class MockConfig:
    """Every knob of one mock engine process; see ``build_parser`` for their meaning."""

    role: str = "worker"
    imitate: str = "vllm"
    model: str = "mock-model"
    served_model_name: str = ""
    host: str = "127.0.0.1"
    port: int = 8100
    name: str = "mock"
    bootstrap_port: int | None = None
    advertise_host: str = ""
    block_size: int = 16
    kv_blocks: int = 4096
    kv_block_bytes: int = 2048
    prefill_tps: float = 20000.0
    itl_ms: float = 5.0
    ttft_ms: float = 0.0
    encode_ms: float = 2.0
    speedup: float = 1.0
    tokens_per_write: int = 0
    tokenizer: str | None = None
    max_model_len: int = 32768
    max_num_seqs: int = 256
    default_max_tokens: int = 16
    mm_tokens: int = 16
    max_media_bytes: int = 20 << 20
    seed: int = 0
    record_requests: int = 200
    bootstrap_timeout_s: float = 30.0
    transfer_timeout_s: float = 10.0
    transfer_ttl_s: float = 120.0
    startup_delay_s: float = 0.0
    fail_rate: float = 0.0
    stall_after_tokens: int | None = None
    exit_after_requests: int | None = None
    health_fail: bool = False
    lose_handoffs: bool = False
    log_level: str = "warning"
    nnodes: int = 1
    dist_port: int | None = None

    @property
    def model_name(self) -> str:
        """The name clients use (``--served-model-name``, else ``--model``)."""
        return self.served_model_name or self.model

    @property
    def public_host(self) -> str:
        """The address peers use to reach this process (KV pulls, bootstrap rooms)."""
        if self.advertise_host:
            return self.advertise_host
        if os.environ.get("SG_SELF_HOST"):
            return os.environ["SG_SELF_HOST"]
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def side_channel_port(self) -> int:
        """Port a decode pulls KV from: the bootstrap port if there is one, else the HTTP port."""
        return self.bootstrap_port or self.port

    def delay(self, seconds: float) -> float:
        """A simulated delay, divided by ``--speedup``."""
        return seconds / self.speedup


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser; every flag maps to a ``MockConfig`` field."""
    p = argparse.ArgumentParser(
        prog="python -m nodes.mock",
        description="servegraph's mock LLM engine: vLLM/SGLang/TRT-LLM HTTP APIs and P/D/E handshakes, no GPU.",
    )
    a = p.add_argument
    a("--role", choices=ROLES, default="worker", help="which stage this engine serves")
    a("--imitate", choices=IMITATIONS, default="vllm", help="whose protocol, endpoints and metric names to use")
    a("--model", default="mock-model", help="model id or path (reported in /v1/models)")
    a("--served-model-name", default="", help="name clients must use (default: --model)")
    a("--host", default="127.0.0.1")
    a("--port", type=int, default=8100)
    a("--name", default="mock", help="service name, for logs and metrics")
    a("--bootstrap-port", type=int, default=None,
      help="second port (SGLang bootstrap rooms; vLLM/TRT-LLM KV side channel)")
    a("--advertise-host", default="", help="address peers use to reach this engine (default: $SG_SELF_HOST)")
    a("--block-size", type=int, default=16, help="tokens per KV block")
    a("--kv-blocks", type=int, default=4096, help="KV cache capacity in blocks")
    a("--kv-block-bytes", type=int, default=2048,
      help="bytes of simulated KV per block that a prefill sends its decode over the tensor edge "
           "(0: only the block hashes go)")
    a("--prefill-tps", type=float, default=20000.0, help="prompt tokens per second of prefill")
    a("--itl-ms", type=float, default=5.0, help="inter-token latency")
    a("--ttft-ms", type=float, default=0.0, help="fixed overhead before the first token")
    a("--encode-ms", type=float, default=2.0, help="time to encode one media item")
    a("--speedup", type=float, default=1.0, help="divides every simulated delay")
    a("--tokens-per-write", type=int, default=0,
      help="most streamed tokens sent in one write (still one SSE event each); 0: all whose time has come, "
           "as vLLM merges outputs its HTTP side has not yet taken")
    a("--tokenizer", default=None, help="model folder with tokenizer.json + chat template (default: simulated)")
    a("--max-model-len", type=int, default=32768)
    a("--max-num-seqs", type=int, default=256, help="requests running at once; the rest wait")
    a("--default-max-tokens", type=int, default=16, help="output length when a request sets no max_tokens")
    a("--mm-tokens", type=int, default=16, help="prompt tokens per media item")
    a("--max-media-bytes", type=int, default=20 << 20)
    a("--seed", type=int, default=0, help="mixed into every output (P and D must agree)")
    a("--record-requests", type=int, default=200, help="request bodies kept for GET /mock/requests (0: none)")
    a("--bootstrap-timeout-s", type=float, default=30.0, help="how long a decode waits for its bootstrap room")
    a("--transfer-timeout-s", type=float, default=10.0, help="deadline of a KV/embeddings pull from a peer")
    a("--transfer-ttl-s", type=float, default=120.0, help="how long a prefill keeps KV nobody pulled")
    a("--startup-delay-s", type=float, default=0.0, help="/health answers 503 for this long after start")
    a("--fail-rate", type=float, default=0.0, help="fault: this fraction of requests get HTTP 500")
    a("--stall-after-tokens", type=int, default=None, help="fault: stop after N tokens and hang")
    a("--exit-after-requests", type=int, default=None, help="fault: the process exits during request N")
    a("--health-fail", action="store_true", help="fault: /health answers 503")
    a("--lose-handoffs", action="store_true",
      help="fault: KV and embeddings this engine hands out are gone when asked for, as after a restart")
    a("--log-level", default="warning")
    a("--nnodes", type=int, default=1,
      help="hosts one replica spans; with $SG_LEADER_HOST and $SG_NODE_RANK (set by a cluster target) rank 0 "
           "serves and waits for the others, which join it on --dist-port (nodes/mock/multinode.py)")
    a("--dist-port", type=int, default=None, help="port the leader of a multi-host replica listens on for its ranks")
    return p


def parse_args(argv: list[str] | None = None) -> MockConfig:
    """Parse argv into a checked ``MockConfig``."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    names = {f.name for f in fields(MockConfig)}
    cfg = MockConfig(**{k: v for k, v in vars(ns).items() if k in names})
    for flag, value in (("--block-size", cfg.block_size), ("--kv-blocks", cfg.kv_blocks),
                        ("--max-num-seqs", cfg.max_num_seqs), ("--mm-tokens", cfg.mm_tokens)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if cfg.kv_block_bytes < 0:
        parser.error(f"--kv-block-bytes must be >= 0, got {cfg.kv_block_bytes}")
    for flag, value in (("--prefill-tps", cfg.prefill_tps), ("--speedup", cfg.speedup)):
        if value <= 0:
            parser.error(f"{flag} must be > 0, got {value}")
    if cfg.tokens_per_write < 0:
        parser.error(f"--tokens-per-write must be >= 0, got {cfg.tokens_per_write}")
    if not 0.0 <= cfg.fail_rate <= 1.0:
        parser.error(f"--fail-rate must be within [0, 1], got {cfg.fail_rate}")
    return cfg
