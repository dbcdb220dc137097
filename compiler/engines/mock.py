"""The built-in mock engine: ``python -m nodes.mock``, speaking vLLM's, SGLang's or TRT-LLM's protocol."""

from __future__ import annotations

from ..errors import CompileError, CompileFailed, NodeValues, did_you_mean, node_error
from .base import EngineCommand, EngineInput, flag_args

#: Knobs a graph may set in ``mock={...}``; each becomes ``--<knob-with-dashes>`` (see
#: ``python -m nodes.mock --help``; tests/test_mock_cli.py keeps this list and the CLI in step).
MOCK_KNOBS = frozenset({
    # timing and capacity
    "prefill_tps", "itl_ms", "ttft_ms", "encode_ms", "speedup", "kv_blocks", "max_num_seqs",
    "tokens_per_write",
    "max_model_len", "default_max_tokens", "mm_tokens", "max_media_bytes", "seed",
    # tokenizer: a local model folder with tokenizer.json + chat template
    "tokenizer",
    # handshakes
    "bootstrap_timeout_s", "transfer_timeout_s", "transfer_ttl_s", "advertise_host",
    # observability and start-up
    "record_requests", "startup_delay_s", "log_level",
    # faults (issue 5); also settable at runtime with POST /mock/faults
    "fail_rate", "stall_after_tokens", "exit_after_requests", "health_fail", "lose_handoffs",
})


class MockAdapter:
    """Lowers mock nodes; ports mirror the engine being imitated."""

    name = "mock"

    def extra_ports(self, role: str) -> list[str]:
        # Prefill-like roles publish KV on this second port (SGLang bootstrap rooms, the vLLM/TRT-LLM
        # side channel). Every handshake route is also on the HTTP port, so other roles need none.
        return ["bootstrap"] if role in ("prefill", "encode_prefill") else []

    def check_node(self, node: NodeValues) -> list[CompileError]:
        """Every ``mock={...}`` key is a knob of ``python -m nodes.mock``."""
        return [
            node_error("unknown-mock-knob", node, f"{node.role} '{node.name}': the mock engine has no knob '{key}'",
                       f"{did_you_mean(key.replace('-', '_'), MOCK_KNOBS)}known knobs: {', '.join(sorted(MOCK_KNOBS))}",
                       field="mock")
            for key in sorted(node.mock) if key.replace("-", "_") not in MOCK_KNOBS
        ]

    def check_kv_pair(self, prefill: NodeValues, decode: NodeValues) -> list[CompileError]:
        return []  # the mock maps any layout; the rules of the engine it imitates are checked too

    def command(self, spec: EngineInput) -> EngineCommand:
        """argv of one mock replica.

        Raises:
            CompileFailed: ``mock={...}`` names a knob the mock engine does not have (``check_node`` says so first).
        """
        unknown = sorted(set(k.replace("-", "_") for k in spec.mock) - MOCK_KNOBS)
        if unknown:
            raise CompileFailed([CompileError(
                "unknown-mock-knob", f"node '{spec.node}': unknown mock knob(s) {', '.join(unknown)}",
                f"known: {', '.join(sorted(MOCK_KNOBS))}", node=spec.node, field="mock")])
        argv = [
            "python", "-m", "nodes.mock",
            "--role", spec.role,
            "--imitate", spec.imitate or "vllm",
            "--model", spec.model,
            "--served-model-name", spec.served_model_name,
            "--host", spec.host,
            "--port", str(spec.port),
            "--name", spec.service,
        ]
        if "bootstrap" in spec.extra_ports:
            argv += ["--bootstrap-port", str(spec.extra_ports["bootstrap"])]
        if spec.block_size:
            argv += ["--block-size", str(spec.block_size)]
        argv += flag_args({k.replace("_", "-"): v for k, v in spec.mock.items()})
        return EngineCommand(argv=argv, env={}, health_path="/health", startup_timeout_s=60.0)
