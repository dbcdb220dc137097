"""The one interface every engine adapter implements.

An adapter turns one replica of one engine node into a process: argv, env,
extra ports and its health path. It sees the resolved node (as a plain
:class:`EngineInput`) and the wiring the planner chose; it never decides
placement and never knows the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import CompileError, NodeValues, did_you_mean, node_error


@dataclass(frozen=True)
class EngineInput:
    """One engine replica as the planner hands it to an adapter.

    Args:
        node: the graph node's name.
        service: this replica's service name (node-replica).
        role: encoder | prefill | decode | worker | encode_prefill | prefill_decode.
        model: model id or path.
        served_model_name: the name clients use.
        tp, pp, dp: parallelism.
        hosts: hosts one replica spans (multi-node).
        dtype, kv_cache_dtype, block_size, max_model_len: engine settings (None/"auto": engine default).
        engine_args: passthrough flags from the graph.
        imitate: for the mock engine, whose protocol to speak.
        mock: mock engine knobs.
        host: the address it listens on (loopback when the whole graph runs on one host).
        port: its HTTP port.
        extra_ports: ports the adapter asked for (see :meth:`EngineAdapter.extra_ports`).
        device: gpu or cpu.
        consumes_embeddings: a separate encoder feeds it (E/PD, E/P/D).
        encoder_urls: base URLs of the encoder replicas feeding it (engines that call encoders themselves).
        encoder_cache_dir: shared folder for encoder output where the engine uses one.
        cpu_cores: cores to bind its threads to on a shared CPU host (None: no binding).
        decode_tp: for a KV producer, the tp size of the decode it feeds.
    """

    node: str
    service: str
    role: str
    model: str
    served_model_name: str
    tp: int = 1
    pp: int = 1
    dp: int = 1
    hosts: int = 1
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    block_size: int | None = None
    max_model_len: int | None = None
    engine_args: dict[str, Any] | list[str] = field(default_factory=dict)
    imitate: str | None = None
    mock: dict[str, Any] = field(default_factory=dict)
    host: str = "0.0.0.0"
    port: int = 0
    extra_ports: dict[str, int] = field(default_factory=dict)
    device: str = "gpu"
    consumes_embeddings: bool = False
    encoder_urls: tuple[str, ...] = ()
    encoder_cache_dir: str | None = None
    cpu_cores: str | None = None
    decode_tp: int | None = None


@dataclass(frozen=True)
class EngineCommand:
    """What an adapter produces for one replica."""

    argv: list[str]
    env: dict[str, str]
    health_path: str = "/health"
    startup_timeout_s: float = 600.0
    config_file: str | None = None
    config: dict[str, Any] | None = None


@dataclass(frozen=True)
class ValueRules:
    """The values an engine accepts for the settings every engine node has.

    Args:
        dtypes: accepted ``dtype`` values.
        kv_cache_dtypes: accepted ``kv_cache_dtype`` values.
        source: where the lists were read (file of the engine's source, version).
        aliases: common spellings of other engines mapped to this engine's own (for did-you-mean).
    """

    dtypes: tuple[str, ...]
    kv_cache_dtypes: tuple[str, ...]
    source: str
    aliases: dict[str, str] = field(default_factory=dict)


class EngineAdapter(Protocol):
    """Lowers engine nodes of one engine to processes, and checks their values first."""

    name: str

    def extra_ports(self, role: str) -> list[str]:
        """Names of ports besides ``http`` this role needs (e.g. ``nixl_side_channel``)."""
        ...

    def command(self, spec: EngineInput) -> EngineCommand:
        """argv/env for one replica."""
        ...

    def check_node(self, node: NodeValues) -> list[CompileError]:
        """Problems of one node's values that this engine would reject at start."""
        ...

    def check_kv_pair(self, prefill: NodeValues, decode: NodeValues) -> list[CompileError]:
        """Problems of a prefill -> decode KV edge that this engine's connector cannot map."""
        ...


def check_values(engine: str, rules: ValueRules, node: NodeValues) -> list[CompileError]:
    """``dtype`` and ``kv_cache_dtype`` against the engine's accepted values, with did-you-mean."""
    problems = []
    for name, value, accepted in (("dtype", node.dtype, rules.dtypes),
                                  ("kv_cache_dtype", node.kv_cache_dtype, rules.kv_cache_dtypes)):
        if value not in accepted:
            problems.append(node_error(
                f"bad-{name.replace('_', '-')}", node,
                f"{node.role} '{node.name}': {engine} does not accept {name}={value!r}",
                f"{did_you_mean(value, accepted, rules.aliases)}{engine} accepts: {', '.join(accepted)} "
                f"({rules.source})", field=name))
    return problems


def tp_ratio_problem(engine: str, prefill: NodeValues, decode: NodeValues, source: str) -> list[CompileError]:
    """The larger tp must be a multiple of the smaller: connectors map ranks by an integer ratio."""
    big, small = max(prefill.tp, decode.tp), min(prefill.tp, decode.tp)
    if big % small == 0:
        return []
    fits = sorted({t for t in range(1, 2 * big + 1) if max(t, prefill.tp) % min(t, prefill.tp) == 0})
    return [node_error(
        "pd-tp-ratio", decode,
        f"KV edge {prefill.name} >> {decode.name}: {engine} maps prefill tp={prefill.tp} onto decode "
        f"tp={decode.tp} by an integer ratio, and {big} is not a multiple of {small}",
        f"give decode a tp that divides or is a multiple of {prefill.tp} (e.g. {', '.join(map(str, fits[:6]))}), "
        f"or change the prefill's ({source})", field="tp")]


def flag_args(args: dict[str, Any] | list[str]) -> list[str]:
    """``{"max-num-seqs": 8, "enforce-eager": True}`` -> ``["--max-num-seqs", "8", "--enforce-eager"]``."""
    if isinstance(args, list):
        return list(args)
    out: list[str] = []
    for key in sorted(args):
        value = args[key]
        flag = key if key.startswith("-") else "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (dict, list)):
            import json

            out += [flag, json.dumps(value, sort_keys=True, separators=(",", ":"))]
        else:
            out += [flag, str(value)]
    return out


def unless_default(flag: str, value: object, default: object = None) -> list[str]:
    """``[flag, value]`` unless ``value`` is the engine's default."""
    if value is None or value == default or value == "auto":
        return []
    return [flag, str(value)]
