"""SGLang: ``sglang.launch_server`` with NIXL disaggregation (docs/engines.md, "SGLang").

P/D: ``--disaggregation-mode prefill|decode --disaggregation-transfer-backend nixl``;
the prefill listens on ``--disaggregation-bootstrap-port``. E/P/D: ``--encoder-only``
on the encoder, ``--language-only`` on the language model. Metrics need
``--enable-metrics``. Every flag is checked against sglang's own parser
(``ServerArgs.add_cli_args``, sglang 0.5.23) in tests/test_engine_flags.py.
"""

from __future__ import annotations

from graph.plan import DynamoWorker

from ..errors import CompileError, NodeValues, node_error
from .base import (
    EngineAdapter, EngineCommand, EngineInput, Installation, ValueRules, dynamo_component, flag_args, tp_ratio_problem,
    unless_default, without_flags,
)

# SGLang names fp8 KV caches by format; "fp8" (vLLM's spelling) means e4m3 there too.
_KV_CACHE_DTYPES = {"fp8": "fp8_e4m3"}

_PD_SOURCE = "sglang/srt/disaggregation/common/conn.py, sglang 0.5.23"
_LAUNCHER = ["python", "-m", "sglang.launch_server"]
#: Flags of a multi-host replica's wiring, which Dynamo's operator sets itself.
_MULTINODE = ("--nnodes", "--node-rank", "--dist-init-addr")


class SglangAdapter(EngineAdapter):
    """Lowers SGLang nodes."""

    name = "sglang"
    title = "SGLang"
    version = "0.5.23"
    roles = frozenset({"encoder", "prefill", "decode", "worker", "encode_prefill", "prefill_decode"})
    protocol = "sglang"
    # The prefill WRITEs the KV into pages the decode allocated (sglang/srt/disaggregation/nixl/conn.py).
    kv_transfer = "WRITE"
    embeddings_transfer = "engine"
    embeddings_how = ("SGLang's language model (--language-only) fetches the embeddings from its --encoder-urls "
                      "itself; servegraph sets no transport for it")
    image = "lmsysorg/sglang:v0.5.23"
    #: python/sglang/srt/arg_groups/fields/model.py, ``dtype`` and ``kv_cache_dtype`` choices (sglang 0.5.23),
    #: plus "fp8", which the adapter lowers to fp8_e4m3.
    rules = ValueRules(
        dtypes=("auto", "half", "float16", "bfloat16", "float", "float32"),
        kv_cache_dtypes=("auto", "fp8", "fp8_e5m2", "fp8_e4m3", "mxfp8", "bf16", "bfloat16", "nvfp4",
                         "fp4_mx_block16"),
        source="sglang/srt/arg_groups/fields/model.py, sglang 0.5.23",
        aliases={"fp16": "float16", "fp32": "float32", "float8": "fp8"},
    )
    installation = Installation(dists=("sglang",), module="sglang", fix="pip install 'sglang[all]' on a CUDA machine")

    def extra_ports(self, role: str) -> list[str]:
        return ["bootstrap"] if role in ("prefill", "encode_prefill") else []

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
        head, tail = self._flags(spec)
        argv = [*_LAUNCHER, *head, "--host", spec.host, "--port", str(spec.port), *tail]
        return EngineCommand(argv=argv, env={}, health_path="/health", startup_timeout_s=900.0)

    def dynamo(self, spec: EngineInput) -> DynamoWorker | None:
        """``python3 -m dynamo.sglang`` (ai-dynamo 1.6.1) with our flags, less the address, the multi-host
        wiring and our E/P/D wiring (``--encoder-only``, ``--language-only --encoder-urls``): Dynamo's encode
        worker and its workers find each other themselves.

        Read in ai-dynamo 1.6.1's wheel, dynamo/sglang/backend_args.py and args.py
        (_normalize_multimodal_disaggregation_args): an encoder is ``--disaggregation-mode encode
        --enable-multimodal``; workers that take embeddings from it add ``--dedicated-mm-encoder`` (a
        combined one ``--disaggregation-mode pd``); without a separate encoder, ``--enable-multimodal``.
        """
        head, tail = self._flags(spec)
        tail = without_flags(tail, _MULTINODE)
        if "--encoder-urls" in tail:  # takes every URL after it
            cut = tail.index("--encoder-urls")
            rest = tail[cut + 1:]
            tail = tail[:cut] + rest[next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest)):]
        args = [*head, *(a for a in tail if a not in ("--encoder-only", "--language-only"))]
        if spec.multimodal:
            if spec.role == "encoder":
                args += ["--disaggregation-mode", "encode"]
            elif spec.role == "prefill_decode" and spec.separate_encoder:
                args += ["--disaggregation-mode", "pd"]
            args += ["--enable-multimodal"]
            if spec.separate_encoder and spec.role != "encoder":
                args += ["--dedicated-mm-encoder"]
        return DynamoWorker(component=dynamo_component(spec.role), command=["python3", "-m", "dynamo.sglang"], args=args,
                            runtime_image="sglang-runtime", media=spec.multimodal)

    def _flags(self, spec: EngineInput) -> tuple[list[str], list[str]]:
        """(the model flags, every other flag): the address goes between the two."""
        head = ["--model-path", spec.model, "--served-model-name", spec.served_model_name]
        tail = ["--enable-metrics"]
        tail += unless_default("--tp-size", spec.tp, 1)
        tail += unless_default("--pp-size", spec.pp, 1)
        tail += unless_default("--dp-size", spec.dp, 1)
        tail += unless_default("--dtype", spec.dtype)
        tail += unless_default("--kv-cache-dtype", _KV_CACHE_DTYPES.get(spec.kv_cache_dtype, spec.kv_cache_dtype))
        tail += unless_default("--page-size", spec.block_size)
        tail += unless_default("--context-length", spec.max_model_len)
        if spec.role in ("prefill", "encode_prefill", "decode"):
            mode = "decode" if spec.role == "decode" else "prefill"
            tail += ["--disaggregation-mode", mode, "--disaggregation-transfer-backend", "nixl"]
            if mode == "prefill":
                # No --disaggregation-decode-tp: sglang 0.5.23 dropped it; the prefill
                # learns the decode's layout through the bootstrap server.
                tail += ["--disaggregation-bootstrap-port", str(spec.extra_ports["bootstrap"])]
        if spec.role == "encoder":
            tail += ["--encoder-only"]
        elif spec.consumes_embeddings:
            # SGLang's language model fetches embeddings from its encoders itself.
            tail += ["--language-only"]
            if spec.encoder_urls:
                tail += ["--encoder-urls", *spec.encoder_urls]
        if spec.nodes > 1:
            tail += ["--nnodes", str(spec.nodes), "--node-rank", "${SG_NODE_RANK}",
                     "--dist-init-addr", "${SG_LEADER_HOST}:" + str(spec.extra_ports.get("dist", 29500))]
        tail += flag_args(spec.engine_args)
        return head, tail
