"""SGLang: ``sglang.launch_server`` with NIXL disaggregation (ENGINES.md, "SGLang").

P/D: ``--disaggregation-mode prefill|decode --disaggregation-transfer-backend nixl``;
the prefill listens on ``--disaggregation-bootstrap-port``. E/P/D: ``--encoder-only``
on the encoder, ``--language-only`` on the language model. Metrics need
``--enable-metrics``. Every flag is checked against sglang's own parser
(``ServerArgs.add_cli_args``, sglang 0.5.23) in tests/test_engine_flags.py.
"""

from __future__ import annotations

from .base import EngineCommand, EngineInput, flag_args, unless_default

# SGLang names fp8 KV caches by format; "fp8" (vLLM's spelling) means e4m3 there too.
_KV_CACHE_DTYPES = {"fp8": "fp8_e4m3"}


class SglangAdapter:
    """Lowers SGLang nodes."""

    name = "sglang"

    def extra_ports(self, role: str) -> list[str]:
        return ["bootstrap"] if role in ("prefill", "encode_prefill") else []

    def command(self, spec: EngineInput) -> EngineCommand:
        argv = [
            "python", "-m", "sglang.launch_server",
            "--model-path", spec.model,
            "--served-model-name", spec.served_model_name,
            "--host", "0.0.0.0",
            "--port", str(spec.port),
            "--enable-metrics",
        ]
        argv += unless_default("--tp-size", spec.tp, 1)
        argv += unless_default("--pp-size", spec.pp, 1)
        argv += unless_default("--dp-size", spec.dp, 1)
        argv += unless_default("--dtype", spec.dtype)
        argv += unless_default("--kv-cache-dtype", _KV_CACHE_DTYPES.get(spec.kv_cache_dtype, spec.kv_cache_dtype))
        argv += unless_default("--page-size", spec.block_size)
        argv += unless_default("--context-length", spec.max_model_len)
        if spec.role in ("prefill", "encode_prefill", "decode"):
            mode = "decode" if spec.role == "decode" else "prefill"
            argv += ["--disaggregation-mode", mode, "--disaggregation-transfer-backend", "nixl"]
            if mode == "prefill":
                # No --disaggregation-decode-tp: sglang 0.5.23 dropped it; the prefill
                # learns the decode's layout through the bootstrap server.
                argv += ["--disaggregation-bootstrap-port", str(spec.extra_ports["bootstrap"])]
        if spec.role == "encoder":
            argv += ["--encoder-only"]
        elif spec.consumes_embeddings:
            # SGLang's language model fetches embeddings from its encoders itself.
            argv += ["--language-only"]
            if spec.encoder_urls:
                argv += ["--encoder-urls", *spec.encoder_urls]
        if spec.hosts > 1:
            argv += ["--nnodes", str(spec.hosts), "--node-rank", "${SG_NODE_RANK}",
                     "--dist-init-addr", "${SG_LEADER_HOST}:" + str(spec.extra_ports.get("dist", 29500))]
        argv += flag_args(spec.engine_args)
        return EngineCommand(argv=argv, env={}, health_path="/health", startup_timeout_s=900.0)
