"""The node roles a user writes in a pipeline: plain typed objects.

Each role is a pydantic model whose fields are the node's settings and whose
class-level ``INPUTS``/``OUTPUTS`` are its typed ports. Creating a node inside
``with Graph(...)`` adds it to that graph; ``a >> b`` joins them (see
:mod:`graph.graph`). A bad field value does not raise in the user's file: it is
recorded as a :class:`GraphError` and reported with every other problem.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ._where import caller_location
from .errors import GraphError, SourceLocation
from .ports import REQUEST_TYPES, Answer, Embeddings, KV, Media, Port, PortType, Text
from .settings import EngineSettings, FrontendSettings, ProcessorSettings, Resources, RouterSettings


class Node(BaseModel):
    """Base of every role. Fields common to all nodes."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    ROLE: ClassVar[str] = "node"
    INPUTS: ClassVar[tuple[Port, ...]] = ()
    OUTPUTS: ClassVar[tuple[Port, ...]] = ()

    name: str | None = Field(default=None, description="unique node name (DNS-1123); default: the role")
    replicas: int = Field(default=1, ge=1, description="identical copies behind the frontend")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    resources: Resources = Field(default_factory=Resources)
    platform: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="target-only settings: platform['k8s'], platform['slurm']"
    )

    _where: SourceLocation | None = PrivateAttr(default=None)
    _graph: Any = PrivateAttr(default=None)
    _bad_fields: list[tuple[dict[str, Any], Any]] = PrivateAttr(default_factory=list)

    def __init__(self, **data: Any) -> None:
        where = caller_location()
        bad: list[dict[str, Any]] = []
        try:
            super().__init__(**data)
        except ValidationError as exc:
            bad = list(exc.errors(include_url=False))
            rejected = {str((e.get("loc") or ("?",))[0]) for e in bad}
            good = {k: v for k, v in data.items() if k not in rejected}
            try:
                super().__init__(**good)
            except ValidationError:
                super().__init__()
        self._where = where
        self._bad_fields = [(e, data.get(str((e.get("loc") or ("?",))[0]))) for e in bad]
        from .graph import Graph  # circular at import time only

        Graph.adopt(self, self.creation_problems())

    def creation_problems(self) -> list[GraphError]:
        """Problems of the node's class itself, found when a node of it is made (none for built-in roles)."""
        return []

    def field_problems(self) -> list[GraphError]:
        """The fields given at creation that were rejected (the node keeps their defaults)."""
        bad = (self.__pydantic_private__ or {}).get("_bad_fields") or []  # fast path past pydantic's __getattr__
        return [_field_error(self, err, value) for err, value in bad]

    # Identity, not field equality: two identical decoders are two nodes.
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    @property
    def where(self) -> SourceLocation | None:
        """File and line where the node was created."""
        return self._where

    @property
    def role(self) -> str:
        """The role name, e.g. ``prefill``."""
        return self.ROLE

    @classmethod
    def default_name(cls) -> str:
        """The name a node of this class gets when it is given none (numbered when taken)."""
        return cls.ROLE.replace("_", "-")

    def __getitem__(self, port: str) -> "PortRef":
        """``node["kv"]``: name a port explicitly, e.g. ``a["kv"] >> b["kv"]``."""
        return PortRef(self, port)

    def __rshift__(self, other: Any) -> Any:
        from .graph import connect

        return connect(self, other, caller_location())

    def __rrshift__(self, other: Any) -> Any:
        from .graph import connect

        return connect(other, self, caller_location())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class PortRef:
    """A node with one port named: the producer's output or the consumer's input."""

    def __init__(self, node: Node, port: str) -> None:
        self.node = node
        self.port = port

    def __rshift__(self, other: Any) -> Any:
        from .graph import connect

        return connect(self, other, caller_location())

    def __rrshift__(self, other: Any) -> Any:
        from .graph import connect

        return connect(other, self, caller_location())

    def __repr__(self) -> str:
        return f"{self.node!r}[{self.port!r}]"


class EngineNode(Node, EngineSettings):
    """A node served by an inference engine (its settings: :class:`graph.settings.EngineSettings`)."""


_REQUEST = Port("requests", REQUEST_TYPES)
#: The answer of a final stage, for nodes that rewrite it (graph.custom.ResponseNode); may stay unconnected.
_ANSWER = Port("answer", (Answer,), optional=True)


class Frontend(Node, FrontendSettings):
    """The OpenAI-compatible HTTP entry point. Exactly one per graph."""

    ROLE: ClassVar[str] = "frontend"
    OUTPUTS: ClassVar[tuple[Port, ...]] = (Port("requests", (Text,)),)


class Router(Node, RouterSettings):
    """Chooses a replica of the next stage for each request."""

    ROLE: ClassVar[str] = "router"
    INPUTS: ClassVar[tuple[Port, ...]] = (Port("requests", REQUEST_TYPES, required=True),)
    OUTPUTS: ClassVar[tuple[Port, ...]] = (Port("requests", REQUEST_TYPES),)


class Processor(Node, ProcessorSettings):
    """Fetches, checks and inlines the media of a request (images, video, audio)."""

    ROLE: ClassVar[str] = "processor"
    INPUTS: ClassVar[tuple[Port, ...]] = (Port("requests", (Text,), required=True),)
    OUTPUTS: ClassVar[tuple[Port, ...]] = (Port("media", (Media,)),)


class Encoder(EngineNode):
    """Runs the vision/audio encoder alone and hands embeddings on."""

    ROLE: ClassVar[str] = "encoder"
    INPUTS: ClassVar[tuple[Port, ...]] = (Port("media", (Media, Text), required=True),)
    OUTPUTS: ClassVar[tuple[Port, ...]] = (Port("embeddings", (Embeddings,)),)


class Prefill(EngineNode):
    """Computes the prompt's KV cache and hands it to a decode node."""

    ROLE: ClassVar[str] = "prefill"
    INPUTS: ClassVar[tuple[Port, ...]] = (_REQUEST, Port("embeddings", (Embeddings,)))
    OUTPUTS: ClassVar[tuple[Port, ...]] = (Port("kv", (KV,)),)


class Decode(EngineNode):
    """Generates tokens from KV computed elsewhere."""

    ROLE: ClassVar[str] = "decode"
    INPUTS: ClassVar[tuple[Port, ...]] = (Port("kv", (KV,), required=True),)
    OUTPUTS: ClassVar[tuple[Port, ...]] = (_ANSWER,)


class Worker(EngineNode):
    """An aggregated engine: encodes (if multimodal), prefills and decodes itself."""

    ROLE: ClassVar[str] = "worker"
    INPUTS: ClassVar[tuple[Port, ...]] = (_REQUEST,)
    OUTPUTS: ClassVar[tuple[Port, ...]] = (_ANSWER,)


class EncodePrefill(EngineNode):
    """Encoder and prefill in one engine (EP/D): hands KV to a decode node."""

    ROLE: ClassVar[str] = "encode_prefill"
    INPUTS: ClassVar[tuple[Port, ...]] = (_REQUEST,)
    OUTPUTS: ClassVar[tuple[Port, ...]] = (Port("kv", (KV,)),)


class PrefillDecode(EngineNode):
    """Prefill and decode in one engine, fed by a separate encoder (E/PD)."""

    ROLE: ClassVar[str] = "prefill_decode"
    INPUTS: ClassVar[tuple[Port, ...]] = (_REQUEST, Port("embeddings", (Embeddings,)))
    OUTPUTS: ClassVar[tuple[Port, ...]] = (_ANSWER,)


ROLES: dict[str, type[Node]] = {
    cls.ROLE: cls
    for cls in (Frontend, Router, Processor, Encoder, Prefill, Decode, Worker, EncodePrefill, PrefillDecode)
}


def _field_error(node: Node, err: dict[str, Any], value: Any) -> GraphError:
    """Turn one of pydantic's complaints into a GraphError naming the node and field."""
    cls = type(node)
    loc = err.get("loc") or ("?",)
    field = str(loc[0])
    label = node.name or cls.ROLE
    if err.get("type") == "extra_forbidden":
        known = ", ".join(sorted(n for n in cls.model_fields if n != "name"))
        close = difflib.get_close_matches(field, list(cls.model_fields), n=1)
        message = f"{cls.__name__} '{label}' has no field '{field}'"
        hint = (f"did you mean '{close[0]}'? " if close else "") + f"known fields: {known}"
    else:
        shown = ".".join(str(p) for p in loc)
        message = f"{cls.__name__} '{label}' field '{shown}' = {value!r}: {err.get('msg')}"
        hint = _field_hint(cls, field)
    return GraphError("bad-field", message, hint, node=node.name, field=field, where=node.where)


def _field_hint(cls: type[Node], field: str) -> str:
    info = cls.model_fields.get(field)
    if info is None:
        return ""
    desc = f" ({info.description})" if info.description else ""
    return f"set {field}{desc} to a valid value"


def port_types(ports: tuple[Port, ...]) -> set[PortType]:
    """All types carried by a set of ports."""
    return {t for p in ports for t in p.accepts}


def ports_of(role: str, accepts: str | None = None, produces: str | None = None) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
    """(inputs, outputs) of a role; a node of your own (graph.custom) has the port types it declares."""
    if role == "request_node":
        return (Port("requests", (PortType(accepts),), required=True),), (Port("requests", (PortType(produces),)),)
    if role == "response_node":
        return (Port("answer", (Answer,), required=True),), (_ANSWER,)
    cls = ROLES[role]
    return cls.INPUTS, cls.OUTPUTS
