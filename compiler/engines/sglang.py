"""SGLang: ``sglang.launch_server`` with NIXL disaggregation (ENGINES.md, "SGLang").

P/D: ``--disaggregation-mode prefill|decode --disaggregation-transfer-backend nixl``;
the prefill listens on ``--disaggregation-bootstrap-port``. E/P/D: ``--encoder-only``
on the encoder, ``--language-only`` on the language model. Metrics need
``--enable-metrics``. Every flag is checked against sglang's own parser
(``ServerArgs.add_cli_args``, sglang 0.5.23) in tests/test_engine_flags.py.
"""

from __future__ import annotations

from ..errors import CompileError, NodeValues, node_error
from .base import EngineCommand, EngineInput, ValueRules, check_values, flag_args, tp_ratio_problem, unless_default

# SGLang names fp8 KV caches by format; "fp8" (vLLM's spelling) means e4m3 there too.
_KV_CACHE_DTYPES = {"fp8": "fp8_e4m3"}

#: python/sglang/srt/arg_groups/fields/model.py, ``dtype`` and ``kv_cache_dtype`` choices (sglang 0.5.23),
#: plus "fp8", which the adapter lowers to fp8_e4m3.
RULES = ValueRules(
    dtypes=("auto", "half", "float16", "bfloat16", "float", "float32"),
    kv_cache_dtypes=("auto", "fp8", "fp8_e5m2", "fp8_e4m3", "mxfp8", "bf16", "bfloat16", "nvfp4", "fp4_mx_block16"),
    source="sglang/srt/arg_groups/fields/model.py, sglang 0.5.23",
    aliases={"fp16": "float16", "fp32": "float32", "float8": "fp8"},
)
_PD_SOURCE = "sglang/srt/disaggregation/common/conn.py, sglang 0.5.23"


class SglangAdapter:
    """Lowers SGLang nodes."""

    name = "sglang"

    def extra_ports(self, role: str) -> list[str]:
        return ["bootstrap"] if role in ("prefill", "encode_prefill") else []

    def check_node(self, node: NodeValues) -> list[CompileError]:
        return check_values("SGLang", RULES, node)

    def check_kv_pair(self, prefill: NodeValues, decode: NodeValues) -> list[CompileError]:
        """SGLang's KV manager: attention tp by an integer ratio; decode pp equal to the prefill's or 1."""
        problems = tp_ratio_problem("SGLang's KV transfer", prefill, decode, _PD_SOURCE)
        if decode.pp not in (1, prefill.pp):
            problems.append(node_error(
                "pd-pp", decode, f"KV edge {prefill.name} >> {decode.name}: SGLang needs the decode's pp to equal "
                f"the prefill's or be 1 (decode pp={decode.pp}, prefill pp={prefill.pp})",
                f"set pp=1 or pp={prefill.pp} on '{decode.name}' ({_PD_SOURCE})", field="pp"))
        return problems

    def command(self, spec: EngineInput) -> EngineCommand:
        argv = [
            "python", "-m", "sglang.launch_server",
            "--model-path", spec.model,
            "--served-model-name", spec.served_model_name,
            "--host", spec.host,
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
