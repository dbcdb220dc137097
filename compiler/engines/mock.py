"""The built-in mock engine: ``python -m nodes.mock``, speaking vLLM's, SGLang's or TRT-LLM's protocol."""

from __future__ import annotations

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
    "fail_rate", "stall_after_tokens", "exit_after_requests", "health_fail",
})


class MockAdapter:
    """Lowers mock nodes; ports mirror the engine being imitated."""

    name = "mock"

    def extra_ports(self, role: str) -> list[str]:
        # Prefill-like roles publish KV on this second port (SGLang bootstrap rooms, the vLLM/TRT-LLM
        # side channel). Every handshake route is also on the HTTP port, so other roles need none.
        return ["bootstrap"] if role in ("prefill", "encode_prefill") else []

    def command(self, spec: EngineInput) -> EngineCommand:
        """argv of one mock replica.

        Raises:
            ValueError: ``mock={...}`` names a knob the mock engine does not have.
        """
        unknown = sorted(set(k.replace("-", "_") for k in spec.mock) - MOCK_KNOBS)
        if unknown:
            raise ValueError(
                f"node '{spec.node}': unknown mock knob(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(MOCK_KNOBS))}"
            )
        argv = [
            "python", "-m", "nodes.mock",
            "--role", spec.role,
            "--imitate", spec.imitate or "vllm",
            "--model", spec.model,
            "--served-model-name", spec.served_model_name,
            "--host", "0.0.0.0",
            "--port", str(spec.port),
            "--name", spec.service,
        ]
        if "bootstrap" in spec.extra_ports:
            argv += ["--bootstrap-port", str(spec.extra_ports["bootstrap"])]
        if spec.block_size:
            argv += ["--block-size", str(spec.block_size)]
        argv += flag_args({k.replace("_", "-"): v for k, v in spec.mock.items()})
        return EngineCommand(argv=argv, env={}, health_path="/health", startup_timeout_s=60.0)
