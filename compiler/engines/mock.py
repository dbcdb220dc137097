"""The built-in mock engine: ``python -m nodes.mock``, speaking vLLM's, SGLang's or TRT-LLM's protocol."""

from __future__ import annotations

from .base import EngineCommand, EngineInput, flag_args


class MockAdapter:
    """Lowers mock nodes; ports mirror the engine being imitated."""

    name = "mock"

    def extra_ports(self, role: str) -> list[str]:
        return ["bootstrap"] if role in ("prefill", "encode_prefill") else []

    def command(self, spec: EngineInput) -> EngineCommand:
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
