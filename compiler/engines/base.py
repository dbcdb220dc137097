"""What every engine adapter is: everything the rest of servegraph needs to know about one engine.

An adapter subclasses :class:`EngineAdapter`, sets its facts (the roles it can
play, the frontend protocol it speaks, how its KV moves, its pinned image, the
values it accepts) and implements :meth:`EngineAdapter.command`. The planner,
the checks, ``--mock``, ``graph doctor`` and the targets ask the adapter; no
other module names an engine. See docs/adding-an-engine.md.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from graph.plan import DynamoWorker
from graph.settings import EngineSettings

from ..errors import CompileError, NodeValues, did_you_mean, label, node_error


class EngineInput(EngineSettings):
    """One engine replica as the planner hands it to an adapter: the node's settings plus the wiring.

    The settings are :class:`graph.settings.EngineSettings` (tp, dtype, ...: None or
    ``"auto"`` means the engine's default); the rest is what the planner chose.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str = Field(description="the graph node's name")
    service: str = Field(description="this replica's service name (node-replica)")
    role: str = Field(description="encoder | prefill | decode | worker | encode_prefill | prefill_decode")
    model: str = ""
    served_model_name: str = ""
    host: str = Field(default="0.0.0.0", description="the address it listens on")
    port: int = Field(default=0, description="its HTTP port")
    extra_ports: dict[str, int] = Field(default_factory=dict, description="ports asked for with extra_ports()")
    device: str = Field(default="gpu", description="gpu or cpu")
    consumes_embeddings: bool = Field(default=False, description="a separate encoder feeds it (E/PD, E/P/D)")
    encoder_urls: tuple[str, ...] = Field(default=(), description="base URLs of the encoder replicas feeding it")
    encoder_cache_dir: str | None = Field(default=None, description="shared folder for encoder output, if used")
    cpu_cores: str | None = Field(default=None, description="cores to bind its threads to on a shared CPU host")
    multimodal: bool = Field(default=False, description="the graph's requests carry media (it has a Processor, "
                                                        "an Encoder or an EncodePrefill)")
    separate_encoder: bool = Field(default=False, description="the graph has an Encoder node of its own")


@dataclass(frozen=True)
class EngineCommand:
    """What an adapter produces for one replica.

    ``follower_argv``: what the other hosts of a replica over several hosts run, when that is not ``argv``
    (the Plan's :attr:`graph.plan.Service.follower_argv`); None: every host runs ``argv``.
    """

    argv: list[str]
    env: dict[str, str]
    health_path: str = "/health"
    startup_timeout_s: float = 600.0
    config_file: str | None = None
    config: dict[str, Any] | None = None
    follower_argv: list[str] | None = None


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


@dataclass(frozen=True)
class Installation:
    """How ``graph doctor`` finds an engine here, and how to get it.

    Args:
        dists: distributions that provide it (the first one found is reported).
        module: the module it imports as (None: found by ``binary`` instead).
        binary: a command it installs, when it is not a Python package.
        fix: what to run to get it.
    """

    dists: tuple[str, ...] = ()
    module: str | None = None
    binary: str | None = None
    fix: str = ""

    def found(self) -> tuple[bool, str]:
        """(present, what was found or "not installed")."""
        if self.binary is not None:
            path = shutil.which(self.binary)
            return path is not None, path or "not installed"
        version = next((v for v in map(_version, self.dists) if v), None)
        present = version is not None and (self.module is None or importlib.util.find_spec(self.module) is not None)
        return present, f"{self.dists[0]} {version}" if present else "not installed"


class EngineAdapter:
    """The base of every engine adapter. Class attributes are the engine's facts; override what differs."""

    #: The name a graph uses (``engine=...``) and the registry key.
    name: ClassVar[str] = ""
    #: The name people know it by, for messages.
    title: ClassVar[str] = ""
    #: The engine version this adapter's flags and facts were checked against.
    version: ClassVar[str] = ""
    #: The roles this engine can play.
    roles: ClassVar[frozenset[str]] = frozenset({"worker"})
    #: The frontend protocol it speaks (a module of nodes/frontend/protocols): "openai" is plain
    #: OpenAI-compatible serving, no disaggregation handshake.
    protocol: ClassVar[str] = "openai"
    #: Which side moves the KV over NIXL between prefill and decode (None: it has no P/D).
    kv_transfer: ClassVar[Literal["READ", "WRITE"] | None] = None
    #: How a separate encoder's embeddings reach this engine's language model: "nixl" (our tensor
    #: edge), "files" (a folder both see), or "engine" (the language model fetches them itself).
    embeddings_transfer: ClassVar[Literal["nixl", "files", "engine"]] = "nixl"
    #: How it hands embeddings over when that is not our NIXL edge, in one sentence (``graph inspect
    #: --edges`` and ``graph compile`` print it): what writes/reads what, and where the fact was read.
    embeddings_how: ClassVar[str] = ""
    #: The container image of this engine version (None: it runs in ours).
    image: ClassVar[str | None] = None
    #: CPU cores per GPU it wants on a cluster (its step's or pod's request), at least 1 in all.
    cpus_per_gpu: ClassVar[int] = 4
    #: The built-in mock engine: no real work, no GPUs of its own.
    simulated: ClassVar[bool] = False
    #: The values it accepts (None: not checked).
    rules: ClassVar[ValueRules | None] = None
    #: How ``graph doctor`` finds it.
    installation: ClassVar[Installation] = Installation()

    def extra_ports(self, role: str) -> list[str]:
        """Names of ports besides ``http`` this role needs (e.g. ``nixl_side_channel``)."""
        return []

    def command(self, spec: EngineInput) -> EngineCommand:
        """argv/env for one replica."""
        raise NotImplementedError

    def check_node(self, node: NodeValues) -> list[CompileError]:
        """Problems of one node's values that this engine would reject at start."""
        problems = self.value_problems(node)
        if node.mock or node.imitate:
            problems.append(node_error(
                "mock-field", node, f"{label(node)} sets mock settings but its engine is '{node.engine}'",
                "use engine='mock' (or --mock on the command line), or drop imitate=/mock=", field="mock"))
        return problems

    def value_problems(self, node: NodeValues) -> list[CompileError]:
        """The role and values of a node this engine serves (or a mock stands in for) that it cannot take."""
        problems = []
        if node.role not in self.roles:
            can = ", ".join(sorted(self.roles))
            problems.append(node_error(
                "engine-role", node, f"{label(node)}: {self.title or self.name} cannot be a {node.role}",
                f"it can play: {can}; use another engine for this node, or another shape of graph", field="engine"))
        if self.rules is not None:
            problems += check_values(self.title or self.name, self.rules, node)
        return problems

    def check_kv_pair(self, prefill: NodeValues, decode: NodeValues) -> list[CompileError]:
        """Problems of a prefill -> decode KV edge that this engine's connector cannot map."""
        return []

    def protocol_for(self, node: NodeValues) -> str:
        """The frontend protocol a node of this engine speaks (the mock's depends on whom it imitates)."""
        return self.protocol

    def dynamo(self, spec: EngineInput) -> DynamoWorker | None:
        """This replica as a component of NVIDIA Dynamo's DynamoGraphDeployment (None: Dynamo cannot run it)."""
        return None


def _label(node: NodeValues) -> str:
    return f"{label(node)}"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_values(engine: str, rules: ValueRules, node: NodeValues) -> list[CompileError]:
    """``dtype`` and ``kv_cache_dtype`` against the engine's accepted values, with did-you-mean."""
    problems = []
    for name, value, accepted in (("dtype", node.dtype, rules.dtypes),
                                  ("kv_cache_dtype", node.kv_cache_dtype, rules.kv_cache_dtypes)):
        if value not in accepted:
            problems.append(node_error(
                f"bad-{name.replace('_', '-')}", node,
                f"{label(node)}: {engine} does not accept {name}={value!r}",
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
            out += [flag, json.dumps(value, sort_keys=True, separators=(",", ":"))]
        else:
            out += [flag, str(value)]
    return out


def unless_default(flag: str, value: object, default: object = None) -> list[str]:
    """``[flag, value]`` unless ``value`` is the engine's default."""
    if value is None or value == default or value == "auto":
        return []
    return [flag, str(value)]


def without_flags(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """``args`` without each of ``flags`` and the value after it."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            out.append(arg)
    return out


def dynamo_component(role: str) -> str:
    """The DynamoGraphDeployment component name of a worker in ``role`` (prefill, decode, else worker)."""
    return {"prefill": "prefill", "encode_prefill": "prefill", "decode": "decode"}.get(role, "worker")


def dynamo_mode_args(role: str) -> list[str]:
    """Dynamo's ``--disaggregation-mode`` for ``role`` (vLLM's and TRT-LLM's workers take the same values)."""
    mode = {"encoder": "encode", "prefill": "prefill", "encode_prefill": "prefill", "decode": "decode"}.get(role)
    return ["--disaggregation-mode", mode] if mode else []
