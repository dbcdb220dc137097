"""The built-in mock engine: ``python -m nodes.mock``, standing in for another engine and speaking its protocol.

A mock node's ``imitate`` names the engine it stands in for (``--mock`` sets it
to the node's own engine); the process speaks that engine's frontend protocol
(``--imitate vllm|sglang|trtllm|openai``), and that engine's value and P/D pair
rules still hold, since the graph is meant for it.
"""

from __future__ import annotations

from graph.plan import DynamoWorker

from ..errors import CompileError, CompileFailed, NodeValues, did_you_mean, label, node_error
from .base import (
    EngineAdapter, EngineCommand, EngineInput, Installation, dynamo_component, dynamo_mode_args, flag_args,
)

#: The frontend protocols ``python -m nodes.mock --imitate`` speaks.
PROTOCOLS = frozenset({"vllm", "sglang", "trtllm", "openai"})

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


class MockAdapter(EngineAdapter):
    """Lowers mock nodes; ports mirror the engine being imitated."""

    name = "mock"
    title = "mock engine"
    roles = frozenset({"encoder", "prefill", "decode", "worker", "encode_prefill", "prefill_decode"})
    # Its KV and embeddings move over our own tensor edge, which WRITEs into the receiver's slots.
    kv_transfer = "WRITE"
    cpus_per_gpu = 1
    simulated = True
    installation = Installation(dists=("servegraph",), fix="built in: python -m nodes.mock")

    def extra_ports(self, role: str) -> list[str]:
        # Prefill-like roles publish KV on this second port (SGLang bootstrap rooms, the vLLM/TRT-LLM
        # side channel). Every handshake route is also on the HTTP port, so other roles need none.
        return ["bootstrap"] if role in ("prefill", "encode_prefill") else []

    def check_node(self, node: NodeValues) -> list[CompileError]:
        """Every ``mock={...}`` key is a knob of ``python -m nodes.mock``; ``imitate`` names a real engine."""
        from . import DEFAULT_ENGINE, get_adapter, known_engines

        problems = [
            node_error("unknown-mock-knob", node, f"{label(node)}: the mock engine has no knob '{key}'",
                       f"{did_you_mean(key.replace('-', '_'), MOCK_KNOBS)}known knobs: {', '.join(sorted(MOCK_KNOBS))}",
                       field="mock")
            for key in sorted(node.mock) if key.replace("-", "_") not in MOCK_KNOBS
        ]
        real = [e for e in known_engines() if not get_adapter(e).simulated]
        imitate = node.imitate or DEFAULT_ENGINE
        if imitate not in real or get_adapter(imitate).protocol not in PROTOCOLS:
            problems.append(node_error(
                "bad-imitate", node, f"{label(node)}: the mock engine cannot stand in for '{imitate}'",
                f"{did_you_mean(imitate, real)}it stands in for: {', '.join(real)}", field="imitate"))
        else:  # the graph is meant for the imitated engine: its rules hold
            problems += get_adapter(imitate).value_problems(node)
        return problems

    def protocol_for(self, node: NodeValues) -> str:
        from . import DEFAULT_ENGINE, get_adapter

        return get_adapter(node.imitate or DEFAULT_ENGINE).protocol

    def check_kv_pair(self, prefill: NodeValues, decode: NodeValues) -> list[CompileError]:
        """The rules of the engine the mock stands in for (the mock itself maps any layout)."""
        from . import DEFAULT_ENGINE, get_adapter

        return get_adapter(prefill.imitate or DEFAULT_ENGINE).check_kv_pair(prefill, decode)

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
            "--imitate", self.protocol_for(spec),
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
        if spec.nodes > 1:
            # one process per host; each learns its rank and leader from the target (SG_NODE_RANK,
            # SG_LEADER_HOST), so `graph run`, which starts one, runs it as the whole replica
            argv += ["--nnodes", str(spec.nodes), "--dist-port", str(spec.extra_ports["dist"])]
        argv += flag_args({k.replace("_", "-"): v for k, v in spec.mock.items()})
        return EngineCommand(argv=argv, env={}, health_path="/health", startup_timeout_s=60.0)

    def dynamo(self, spec: EngineInput) -> DynamoWorker | None:
        """Dynamo's own mock engine, ``python3 -m dynamo.mocker``, in the vLLM runtime image.

        ai-dynamo 1.6.1's dynamo/mocker/args.py: ``--model-path``, ``--model-name`` and
        ``--disaggregation-mode`` agg|prefill|decode; it has no encode mode and takes no media.
        """
        if spec.role not in ("worker", "prefill", "decode"):
            return DynamoWorker(unsupported=(
                f"Dynamo's mocker plays aggregated, prefill or decode workers only (dynamo.mocker "
                f"--disaggregation-mode agg|prefill|decode, ai-dynamo 1.6.1), not the {spec.role} role"))
        args = ["--model-path", spec.model, "--model-name", spec.served_model_name or spec.model,
                *dynamo_mode_args(spec.role)]
        return DynamoWorker(component=dynamo_component(spec.role), command=["python3", "-m", "dynamo.mocker"],
                            args=args, runtime_image="vllm-runtime")
