"""A toy engine, registered from a test: proof that an engine is one module and nothing else.

It stands for a plain OpenAI-compatible server such as llama.cpp's: one role
(worker), no disaggregation, its own image and command line.
"""

from __future__ import annotations

from compiler.engines.base import EngineAdapter, EngineCommand, EngineInput, Installation, ValueRules


class ToyAdapter(EngineAdapter):
    """``toy-server --model M --host H --port P``."""

    name = "toy"
    title = "Toy"
    version = "1.0"
    roles = frozenset({"worker"})
    protocol = "openai"
    image = "example.org/toy-server:1.0"
    rules = ValueRules(dtypes=("auto", "f16"), kv_cache_dtypes=("auto",), source="toy-server --help, 1.0")
    installation = Installation(binary="toy-server", fix="build toy-server from its repository")

    def command(self, spec: EngineInput) -> EngineCommand:
        argv = ["toy-server", "--model", spec.model, "--host", spec.host, "--port", str(spec.port)]
        if spec.dtype != "auto":
            argv += ["--dtype", spec.dtype]
        return EngineCommand(argv=argv, env={"TOY_THREADS": "4"}, health_path="/healthz", startup_timeout_s=30.0)
