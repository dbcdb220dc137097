"""Every flag our engine adapters emit is one the engine accepts, with the values we meant.

vLLM and SGLang: each adapter's argv, for every role, is parsed by the engine's
own parser (vLLM's ``make_arg_parser`` + ``validate_parsed_serve_args`` +
``AsyncEngineArgs.from_cli_args``; SGLang's ``ServerArgs.add_cli_args`` +
``ServerArgs.from_cli_args``) in a child process of this interpreter, and the
values must round-trip. The engines' extra (``scripts/setup-vllm.sh``) installs
both beside the CPU torch: the vLLM CPU build, and sglang with ``--no-deps``
(its parser needs only ``ipython`` more). Where one is missing the test says
so and skips; CI installs both. A pinned SGLang flag list, taken from the same
source, is checked always.

TensorRT-LLM cannot be installed here (CUDA only): its flags and YAML keys are
checked against lists copied from its source, cited below.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from compiler.engines.base import EngineInput
from compiler.engines.sglang import SglangAdapter
from compiler.engines.trtllm import TrtllmAdapter
from compiler.engines.vllm import VllmAdapter

ROLES = ("prefill", "decode", "worker", "encoder", "encode_prefill", "prefill_decode")

# --- SGLang ---------------------------------------------------------------------------

# Options of `python -m sglang.launch_server` that our adapter may emit, from sglang 0.5.23
# (PyPI wheel; repo sgl-project/sglang, python/sglang/srt/server_args.py, whose fields live in
# python/sglang/srt/arg_groups/fields/{model,parallel,memory,disagg,observability,serving}.py).
# test_pinned_sglang_flags_exist_in_the_real_parser keeps this list honest where sglang imports.
SGLANG_FLAGS = frozenset({
    "--model-path", "--served-model-name", "--host", "--port", "--enable-metrics",
    "--tp-size", "--pp-size", "--dp-size", "--dtype", "--kv-cache-dtype", "--page-size",
    "--context-length", "--disaggregation-mode", "--disaggregation-transfer-backend",
    "--disaggregation-bootstrap-port", "--encoder-only", "--language-only",
    "--nnodes", "--node-rank", "--dist-init-addr",
})
# Placeholders a target fills in at launch, replaced by sample values before parsing.
_PLACEHOLDERS = {"${SG_NODE_RANK}": "1", "${SG_LEADER_HOST}": "10.0.0.7"}


def _spec(role: str, **over: Any) -> EngineInput:
    """One engine replica with every setting the adapters lower set away from its default."""
    fields: dict[str, Any] = {
        "node": role, "service": f"{role}-0", "role": role, "model": "Qwen/Qwen2.5-VL-7B-Instruct",
        "served_model_name": "qwen", "tp": 2, "pp": 2, "dp": 2, "nodes": 2, "dtype": "bfloat16",
        "kv_cache_dtype": "fp8", "block_size": 16, "max_model_len": 8192, "port": 8100,
        "extra_ports": {"bootstrap": 8101, "dist": 29600, "nixl_side_channel": 8102},
        "consumes_embeddings": role in ("prefill", "prefill_decode", "encode_prefill"),
    }
    fields.update(over)
    return EngineInput(**fields)


def _sglang_argv(role: str) -> list[str]:
    """Our argv for ``role`` from ``-m sglang.launch_server`` on, placeholders filled."""
    argv = SglangAdapter().command(_spec(role)).argv
    assert argv[:3] == ["python", "-m", "sglang.launch_server"], argv
    return [_fill(a) for a in argv[3:]]


def _fill(arg: str) -> str:
    for placeholder, value in _PLACEHOLDERS.items():
        arg = arg.replace(placeholder, value)
    return arg


def _expected(role: str) -> dict[str, Any]:
    """The ServerArgs values our argv for ``role`` must produce."""
    want: dict[str, Any] = {
        "model_path": "Qwen/Qwen2.5-VL-7B-Instruct", "served_model_name": "qwen",
        "host": "0.0.0.0", "port": 8100, "enable_metrics": True, "tp_size": 2, "pp_size": 2,
        "dp_size": 2, "dtype": "bfloat16", "kv_cache_dtype": "fp8_e4m3", "page_size": 16,
        "context_length": 8192, "nnodes": 2, "node_rank": 1, "dist_init_addr": "10.0.0.7:29600",
        "encoder_only": role == "encoder",
        "language_only": role in ("prefill", "prefill_decode", "encode_prefill"),
        "disaggregation_mode": {"prefill": "prefill", "encode_prefill": "prefill",
                                "decode": "decode"}.get(role, "null"),
    }
    if role in ("prefill", "encode_prefill", "decode"):
        want["disaggregation_transfer_backend"] = "nixl"
    if role in ("prefill", "encode_prefill"):
        want["disaggregation_bootstrap_port"] = 8101
    return want


# Runs where sglang imports: reads {"argvs": [...], "fields": [...]} on stdin, prints, per argv,
# the parsed ServerArgs fields, the parser's option strings, or the parser's error.
_PARSE_SCRIPT = r"""
import argparse, contextlib, io, json, sys
from sglang.srt.server_args import ServerArgs
job = json.load(sys.stdin)
parser = argparse.ArgumentParser(exit_on_error=False)
ServerArgs.add_cli_args(parser)
options = sorted(s for a in parser._actions for s in a.option_strings)
results = []
for argv in job["argvs"]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(argv)
        args = ServerArgs.from_cli_args(ns)
        results.append({"values": {f: getattr(args, f, "<missing>") for f in job["fields"]}})
    except (SystemExit, argparse.ArgumentError) as exc:
        results.append({"error": (err.getvalue() + " " + str(exc)).strip()})
print(json.dumps({"options": options, "results": results}, default=str))
"""


def parse_in_child(module: str, script: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run an engine's own parser on ``job`` in a child of this interpreter (its import is slow and heavy).

    Skips, with the reason printed, when ``module`` does not import here.
    """
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=180)
    if probe.returncode != 0:
        reason = (f"{module} does not import in this environment ({probe.stderr.strip().splitlines()[-1:]}); "
                  "scripts/setup-vllm.sh installs it (CI runs it)")
        print("SKIP:", reason)
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, "-c", script], check=False, input=json.dumps(job),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{module}'s parser script failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sglang_parsed() -> dict[str, Any]:
    """All roles' argv parsed by the real sglang parser in one process (its import takes ~8 s)."""
    fields = sorted({f for role in ROLES for f in _expected(role)})
    out = parse_in_child("sglang.srt.server_args", _PARSE_SCRIPT,
                         {"argvs": [_sglang_argv(role) for role in ROLES], "fields": fields})
    return {"options": set(out["options"]), "by_role": dict(zip(ROLES, out["results"]))}


@pytest.mark.parametrize("role", ROLES)
def test_sglang_parser_accepts_our_argv_and_values_round_trip(role: str, sglang_parsed: dict[str, Any]) -> None:
    result = sglang_parsed["by_role"][role]
    assert "error" not in result, f"sglang rejects our {role} argv {_sglang_argv(role)}: {result.get('error')}"
    got = result["values"]
    want = _expected(role)
    wrong = {k: (got[k], v) for k, v in want.items() if got[k] != v}
    assert not wrong, f"{role}: ServerArgs field -> (parsed, expected): {wrong}"


def test_pinned_sglang_flags_exist_in_the_real_parser(sglang_parsed: dict[str, Any]) -> None:
    missing = SGLANG_FLAGS - sglang_parsed["options"]
    assert not missing, f"pinned flags the installed sglang no longer has: {sorted(missing)}"


@pytest.mark.parametrize("role", ROLES)
def test_sglang_flags_are_in_the_pinned_list(role: str) -> None:
    flags = {a for a in _sglang_argv(role) if a.startswith("--")}
    assert flags - SGLANG_FLAGS == set(), f"{role}: flags not in sglang 0.5.23's parser: {flags - SGLANG_FLAGS}"


def test_sglang_p_d_roles_get_their_disaggregation_flags() -> None:
    pre, dec = _sglang_argv("prefill"), _sglang_argv("decode")
    assert pre[pre.index("--disaggregation-mode") + 1] == "prefill"
    assert pre[pre.index("--disaggregation-bootstrap-port") + 1] == "8101"
    assert dec[dec.index("--disaggregation-mode") + 1] == "decode"
    assert "--disaggregation-bootstrap-port" not in dec
    assert "--disaggregation-decode-tp" not in pre  # gone from sglang's parser


# --- vLLM -------------------------------------------------------------------------------

_VLLM_PARSE = r"""
import contextlib, io, json, sys
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser
job = json.load(sys.stdin)
parser = make_arg_parser(FlexibleArgumentParser())
# `vllm serve` as vllm/entrypoints/cli/main.py builds it (main() itself needs the `vllm` dist's metadata)
cli = FlexibleArgumentParser()
ServeSubcommand().subparser_init(cli.add_subparsers(dest="subparser"))
results = []
for argv in job["argvs"]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = (cli if argv[:1] == ["serve"] else parser).parse_args(argv)
        if getattr(ns, "model_tag", None) is not None:  # as ServeSubcommand.cmd does
            ns.model = ns.model_tag
        validate_parsed_serve_args(ns)
        args = AsyncEngineArgs.from_cli_args(ns)
        values = {f: getattr(args, f, "<missing>") for f in job["fields"]}
        for name in ("kv_transfer_config", "ec_transfer_config"):
            config = getattr(args, name)
            values[name] = None if config is None else {k: getattr(config, k) for k in job[name]}
        results.append({"values": values, "host": ns.host, "port": ns.port, "headless": ns.headless})
    except BaseException as exc:
        results.append({"error": (err.getvalue() + " " + repr(exc)).strip()})
print(json.dumps(results, default=str))
"""
_VLLM_CASES = [(role, device) for role in ROLES for device in ("gpu", "cpu")]


def _vllm_argv(role: str, device: str) -> list[str]:
    argv = VllmAdapter().command(_spec(role, device=device, encoder_cache_dir="/shared/ec")).argv
    assert argv[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"], argv
    return [_fill(a) for a in argv[3:]]


def _vllm_follower_argv(role: str, device: str) -> list[str]:
    """What the other hosts of the replica run, from ``serve`` on (``vllm serve``), placeholders filled."""
    argv = VllmAdapter().command(_spec(role, device=device, encoder_cache_dir="/shared/ec")).follower_argv
    assert argv is not None and argv[:4] == ["python", "-m", "vllm.entrypoints.cli.main", "serve"], argv
    return [_fill(a) for a in argv[3:]]


def _vllm_expected(role: str, device: str) -> dict[str, Any]:
    buffer = "cpu" if device == "cpu" else "cuda"
    kv_role = {"decode": "kv_consumer", "prefill": "kv_producer", "encode_prefill": "kv_producer"}.get(role)
    ec_role = "ec_producer" if role == "encoder" else (
        "ec_consumer" if role in ("prefill", "prefill_decode", "encode_prefill") else None)
    return {
        "model": "Qwen/Qwen2.5-VL-7B-Instruct", "served_model_name": ["qwen"], "tensor_parallel_size": 2,
        "pipeline_parallel_size": 2, "data_parallel_size": 2, "dtype": "bfloat16", "kv_cache_dtype": "fp8",
        "block_size": 16, "max_model_len": 8192, "nnodes": 2, "node_rank": 1, "master_addr": "10.0.0.7",
        "master_port": 29600, "enforce_eager": device == "cpu", "mm_encoder_only": role == "encoder",
        "kv_transfer_config": None if kv_role is None else {
            "kv_connector": "NixlConnector", "kv_role": kv_role, "kv_buffer_device": buffer},
        "ec_transfer_config": None if ec_role is None else {
            "ec_connector": "ECExampleConnector", "ec_role": ec_role, "ec_buffer_device": buffer,
            "ec_connector_extra_config": {"shared_storage_path": "/shared/ec"}},
    }


@pytest.fixture(scope="module")
def vllm_parsed() -> dict[tuple[str, ...], Any]:
    """Every role's argv, on GPU and CPU, parsed by vLLM's own parser in one process."""
    want = _vllm_expected("prefill", "gpu")
    job = {
        "argvs": [_vllm_argv(role, device) for role, device in _VLLM_CASES]
                 + [_vllm_follower_argv(role, device) for role, device in _VLLM_CASES],
        "fields": sorted(set(want) - {"kv_transfer_config", "ec_transfer_config"}),
        "kv_transfer_config": sorted(want["kv_transfer_config"]),
        "ec_transfer_config": ["ec_buffer_device", "ec_connector", "ec_connector_extra_config", "ec_role"],
    }
    parsed = parse_in_child("vllm.entrypoints.launchers.cli_args", _VLLM_PARSE, job)
    followers = [(role, device, "follower") for role, device in _VLLM_CASES]
    return dict(zip([*_VLLM_CASES, *followers], parsed))


@pytest.mark.parametrize("role, device", _VLLM_CASES)
def test_vllm_parser_accepts_our_argv_and_values_round_trip(role: str, device: str,
                                                            vllm_parsed: dict[tuple[str, ...], Any]) -> None:
    result = vllm_parsed[(role, device)]
    assert "error" not in result, f"vLLM rejects our {role} argv {_vllm_argv(role, device)}: {result.get('error')}"
    got, want = result["values"], _vllm_expected(role, device)
    wrong = {k: (got[k], v) for k, v in want.items() if got[k] != v}
    assert not wrong, f"{role}/{device}: AsyncEngineArgs field -> (parsed, expected): {wrong}"
    assert (result["host"], result["port"]) == ("0.0.0.0", 8100)
    assert result["headless"] is False


@pytest.mark.parametrize("role, device", _VLLM_CASES)
def test_vllm_followers_run_vllm_serve_headless_with_the_leaders_values(
        role: str, device: str, vllm_parsed: dict[tuple[str, ...], Any]) -> None:
    """The other hosts of a replica over several hosts: `vllm serve MODEL ... --headless`, which vLLM's own
    `serve` parser accepts, with every engine value the leader's (docs/engines.md, "One replica over several
    hosts")."""
    result = vllm_parsed[(role, device, "follower")]
    argv = _vllm_follower_argv(role, device)
    assert "error" not in result, f"vLLM's serve rejects our {role} follower argv {argv}: {result.get('error')}"
    assert result["headless"] is True and "--host" not in argv and "--port" not in argv
    got, want = result["values"], _vllm_expected(role, device)
    wrong = {k: (got[k], v) for k, v in want.items() if got[k] != v}
    assert not wrong, f"{role}/{device} follower: AsyncEngineArgs field -> (parsed, expected): {wrong}"


def test_vllm_multi_host_env_and_single_host_has_no_followers() -> None:
    """Every host of a replica over several hosts says its own address (no default route: vLLM's get_ip()
    falls back to 0.0.0.0); one host needs neither that nor a follower command."""
    multi = VllmAdapter().command(_spec("decode"))
    assert multi.env["VLLM_HOST_IP"] == "${SG_SELF_HOST}"
    single = VllmAdapter().command(_spec("decode", nodes=1))
    assert single.follower_argv is None and "VLLM_HOST_IP" not in single.env
    assert "--nnodes" not in single.argv


# --- TensorRT-LLM ---------------------------------------------------------------------

# From NVIDIA/TensorRT-LLM tensorrt_llm/commands/serve.py at 00209af149e7774406881a37283dce303571eb11:
# options of `trtllm-serve [serve] MODEL` (click command "serve") ...
TRTLLM_SERVE_FLAGS = frozenset({
    "--tokenizer", "--custom_tokenizer", "--host", "--port", "--backend", "--custom_module_dirs",
    "--log_level", "--max_beam_width", "--max_batch_size", "--max_num_tokens", "--max_seq_len",
    "--tensor_parallel_size", "--tp_size", "--pipeline_parallel_size", "--pp_size",
    "--context_parallel_size", "--cp_size", "--moe_expert_parallel_size", "--ep_size",
    "--moe_cluster_parallel_size", "--cluster_size", "--gpus_per_node",
    "--free_gpu_memory_fraction", "--kv_cache_free_gpu_memory_fraction",
    "--num_postprocess_workers", "--trust_remote_code", "--revision", "--config",
    "--extra_llm_api_options", "--reasoning_parser", "--tool_parser",
    "--metadata_server_config_file", "--server_role", "--fail_fast_on_attention_window_too_large",
    "--otlp_traces_endpoint", "--disagg_cluster_uri", "--enable_chunked_prefill",
    "--media_io_kwargs", "--chat_template",
})
TRTLLM_BACKENDS = frozenset({"pytorch", "tensorrt", "trt", "_autodeploy"})
# ... and of `trtllm-serve mm_embedding_serve MODEL` (click command "mm_embedding_serve").
TRTLLM_MM_EMBEDDING_FLAGS = frozenset({
    "--host", "--port", "--log_level", "--max_batch_size", "--max_num_tokens", "--gpus_per_node",
    "--trust_remote_code", "--extra_encoder_options", "--metadata_server_config_file",
})
# From tensorrt_llm/llmapi/llm_args.py at fcd3f31682808ae56118ae43c1d7864a3a945e6f: the
# TorchLlmArgs / BaseLlmArgs fields we write (the model forbids extra keys) and, per nested
# model, its fields: CacheTransceiverConfig (backend: Literal DEFAULT|UCX|NIXL|MOONCAKE|MPI)
# and KvCacheConfig (dtype is "only for the Pytorch backend").
TRTLLM_TOP_KEYS = frozenset({"cache_transceiver_config", "disable_overlap_scheduler", "dtype",
                             "kv_cache_config"})
TRTLLM_NESTED_KEYS = {
    "cache_transceiver_config": frozenset({"backend", "transceiver_runtime", "max_tokens_in_buffer",
                                           "kv_transfer_timeout_ms",
                                           "kv_transfer_sender_future_timeout_ms"}),
    "kv_cache_config": frozenset({"enable_block_reuse", "max_tokens", "max_attention_window",
                                  "sink_token_length", "free_gpu_memory_fraction", "host_cache_size",
                                  "onboard_blocks", "cross_kv_cache_fraction",
                                  "secondary_offload_min_priority", "event_buffer_max_size",
                                  "attention_dp_events_gather_period_ms", "enable_partial_reuse",
                                  "copy_on_partial_reuse", "use_uvm", "max_gpu_total_bytes", "dtype",
                                  "mamba_ssm_cache_dtype", "tokens_per_block",
                                  "use_kv_cache_manager_v2", "max_util_for_resume"}),
}
TRTLLM_TRANSCEIVER_BACKENDS = frozenset({"DEFAULT", "UCX", "NIXL", "MOONCAKE", "MPI"})


def _trtllm(role: str):
    return TrtllmAdapter().command(_spec(role, nodes=1, dp=1))


def _flags(argv: list[str]) -> set[str]:
    return {a for a in argv if a.startswith("--")}


@pytest.mark.parametrize("role", ROLES)
def test_trtllm_flags_are_documented_options(role: str) -> None:
    argv = _trtllm(role).argv
    assert argv[0] == "trtllm-serve"
    if role == "encoder":
        assert argv[1:3] == ["mm_embedding_serve", "Qwen/Qwen2.5-VL-7B-Instruct"]
        unknown = _flags(argv) - TRTLLM_MM_EMBEDDING_FLAGS
    else:
        assert argv[1] == "Qwen/Qwen2.5-VL-7B-Instruct"
        assert argv[argv.index("--backend") + 1] in TRTLLM_BACKENDS
        assert argv[argv.index("--tp_size") + 1] == "2" and argv[argv.index("--pp_size") + 1] == "2"
        assert argv[argv.index("--max_seq_len") + 1] == "8192"
        unknown = _flags(argv) - TRTLLM_SERVE_FLAGS
    assert not unknown, f"{role}: trtllm-serve has no {sorted(unknown)} (argv {argv})"


@pytest.mark.parametrize("role", ROLES)
def test_trtllm_yaml_keys_are_llm_api_fields(role: str) -> None:
    cmd = _trtllm(role)
    config = cmd.config or {}
    assert set(config) <= TRTLLM_TOP_KEYS, f"{role}: unknown LLM API keys {set(config) - TRTLLM_TOP_KEYS}"
    for key, sub in config.items():
        if key in TRTLLM_NESTED_KEYS:
            extra = set(sub) - TRTLLM_NESTED_KEYS[key]
            assert not extra, f"{role}: {key} has no field(s) {sorted(extra)}"
    if config:
        assert cmd.argv[cmd.argv.index("--extra_llm_api_options") + 1] == cmd.config_file
    if role in ("prefill", "encode_prefill", "decode"):
        ctc = config["cache_transceiver_config"]
        assert ctc["backend"] in TRTLLM_TRANSCEIVER_BACKENDS and ctc["max_tokens_in_buffer"] >= 8192
        assert config.get("disable_overlap_scheduler", False) is (role != "decode")
        assert cmd.env["TRTLLM_NIXL_KVCACHE_BACKEND"] == "UCX"
    if role == "encoder":
        assert cmd.config is None
    else:
        assert config["dtype"] == "bfloat16"
        assert config["kv_cache_config"] == {"dtype": "fp8", "tokens_per_block": 16}
