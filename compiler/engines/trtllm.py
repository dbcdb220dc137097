"""TensorRT-LLM: ``trtllm-serve`` with a YAML of extra LLM API options (docs/engines.md, "TensorRT-LLM").

For P/D both sides get ``cache_transceiver_config: {backend: NIXL}`` with
``max_tokens_in_buffer`` at least the longest input; context (prefill) servers
also ``disable_overlap_scheduler: true``. The frontend sends
``disaggregated_params`` with ``request_type`` context_only / generation_only.
A separate multimodal encoder is ``trtllm-serve mm_embedding_serve``, whose CLI
takes no parallelism, backend or sequence-length flags. Flags and YAML keys are
checked against TensorRT-LLM's source in tests/test_engine_flags.py.
"""

from __future__ import annotations

import json
from typing import Any

from graph.plan import DynamoWorker

from ..errors import CompileError, NodeValues
from .base import (
    EngineAdapter, EngineCommand, EngineInput, Installation, ValueRules, dynamo_component, dynamo_mode_args, flag_args,
    unless_default,
)

_DEFAULT_BUFFER_TOKENS = 8192



class TrtllmAdapter(EngineAdapter):
    """Lowers TensorRT-LLM nodes."""

    name = "trtllm"
    title = "TensorRT-LLM"
    version = "1.2.1"
    roles = frozenset({"encoder", "prefill", "decode", "worker", "encode_prefill", "prefill_decode"})
    protocol = "trtllm"
    # The context (prefill) side's cache transceiver sends the KV.
    kv_transfer = "WRITE"
    embeddings_transfer = "engine"
    embeddings_how = ("TensorRT-LLM moves the embeddings of its mm_embedding_serve encoder to the language model "
                      "by its own means; servegraph sets no transport for it")
    image = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"
    #: tensorrt_llm/llmapi/llm_args.py: ``dtype`` (converted by str_dtype_to_torch) and KvCacheConfig.dtype.
    rules = ValueRules(
        dtypes=("auto", "float16", "bfloat16", "float32"),
        kv_cache_dtypes=("auto", "fp8", "nvfp4"),
        source="tensorrt_llm/llmapi/llm_args.py (TorchLlmArgs.dtype, KvCacheConfig.dtype)",
        aliases={"half": "float16", "fp16": "float16", "bf16": "bfloat16", "float": "float32", "fp32": "float32"},
    )
    installation = Installation(dists=("tensorrt_llm", "tensorrt-llm"), module="tensorrt_llm",
                                fix="pip install tensorrt-llm on a CUDA machine (or NVIDIA's container)")

    def check_kv_pair(self, prefill: NodeValues, decode: NodeValues) -> list[CompileError]:
        """TRT-LLM's cache transceiver maps any tp/pp of the context servers onto the generation servers'
        (docs: features/disagg-serving.md, "different parallelism strategies")."""
        return []

    def command(self, spec: EngineInput) -> EngineCommand:
        config_file = f"{spec.service}.extra-llm-api.yaml"
        if spec.role == "encoder":
            argv = ["trtllm-serve", "mm_embedding_serve", spec.model,
                    "--host", spec.host, "--port", str(spec.port)]
            argv += flag_args(spec.engine_args)
            return EngineCommand(argv=argv, env={}, health_path="/health", startup_timeout_s=1800.0)
        options = _llm_api_options(spec)
        argv = ["trtllm-serve", spec.model, "--host", spec.host, "--port", str(spec.port),
                "--backend", "pytorch"]
        argv += unless_default("--tp_size", spec.tp, 1)
        argv += unless_default("--pp_size", spec.pp, 1)
        argv += unless_default("--max_seq_len", spec.max_model_len)
        if options:
            argv += ["--extra_llm_api_options", config_file]
        argv += flag_args(spec.engine_args)
        env = {"TRTLLM_NIXL_KVCACHE_BACKEND": "UCX"} if "cache_transceiver_config" in options else {}
        return EngineCommand(
            argv=argv,
            env=env,
            health_path="/health",
            startup_timeout_s=1800.0,
            config_file=config_file if options else None,
            config=options or None,
        )

    def dynamo(self, spec: EngineInput) -> DynamoWorker | None:
        """``python3 -m dynamo.trtllm`` (ai-dynamo 1.6.1): our LLM API options go in ``--override-engine-args``
        (JSON merged over Dynamo's own engine arguments) instead of a YAML file, the block size in
        ``--kv-block-size`` (an override of ``kv_cache_config`` would replace Dynamo's whole KvCacheConfig).

        Read in ai-dynamo 1.6.1's wheel: dynamo/trtllm/backend_args.py (``--model``,
        ``--served-model-name``, ``--tensor-parallel-size``, ``--pipeline-parallel-size``, ``--max-seq-len``,
        ``--kv-block-size``, ``--override-engine-args``, ``--disaggregation-mode`` agg|pd|prefill|decode|encode,
        ``--enable-multimodal``, ``--encode-endpoint``), args.py (an encode worker serves
        ``<namespace>.encode.generate``) and workers/llm_worker.py (overrides are json.loads + deep_update);
        the operator gives every pod its namespace as DYN_NAMESPACE. Shapes as
        dynamo/profiler/templates/dgd/trtllm/disagg.yaml in the same wheel.
        """
        args = ["--model", spec.model, "--served-model-name", spec.served_model_name]
        if spec.role != "encoder":
            args += unless_default("--tensor-parallel-size", spec.tp, 1)
            args += unless_default("--pipeline-parallel-size", spec.pp, 1)
            args += unless_default("--max-seq-len", spec.max_model_len)
            args += unless_default("--kv-block-size", spec.block_size)
            options = _llm_api_options(spec)
            kv_cache = {k: v for k, v in options.pop("kv_cache_config", {}).items() if k != "tokens_per_block"}
            if kv_cache:
                options["kv_cache_config"] = kv_cache
            if options:
                args += ["--override-engine-args", json.dumps(options, sort_keys=True, separators=(",", ":"))]
        args += dynamo_mode_args(spec.role)
        if spec.multimodal:
            args += ["--enable-multimodal"]
            if spec.consumes_embeddings:
                # Kubernetes expands $(DYN_NAMESPACE) from the env the operator gives the container.
                args += ["--encode-endpoint", "dyn://$(DYN_NAMESPACE).encode.generate"]
        args += flag_args(spec.engine_args)
        return DynamoWorker(component=dynamo_component(spec.role), command=["python3", "-m", "dynamo.trtllm"], args=args,
                            runtime_image="tensorrtllm-runtime", media=spec.multimodal)


def _llm_api_options(spec: EngineInput) -> dict[str, Any]:
    """The ``--extra_llm_api_options`` YAML (TorchLlmArgs fields) for one language-model replica."""
    options: dict[str, Any] = {}
    if spec.role in ("prefill", "encode_prefill", "decode"):
        options["cache_transceiver_config"] = {
            "backend": "NIXL",
            "max_tokens_in_buffer": spec.max_model_len or _DEFAULT_BUFFER_TOKENS,
        }
    if spec.role in ("prefill", "encode_prefill"):
        options["disable_overlap_scheduler"] = True
    if spec.dtype != "auto":
        options["dtype"] = spec.dtype
    kv_cache: dict[str, Any] = {}
    if spec.kv_cache_dtype != "auto":
        kv_cache["dtype"] = spec.kv_cache_dtype
    if spec.block_size is not None:
        kv_cache["tokens_per_block"] = spec.block_size
    if kv_cache:
        options["kv_cache_config"] = kv_cache
    return options
