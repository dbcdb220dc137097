"""Port types and the ports each node role exposes.

A port type says what travels over an edge:

* ``Text``: OpenAI requests (chat/completions), media still as references.
* ``Tokens``: the same request, tokenized.
* ``Media``: the request with its media fetched, checked and inlined.
* ``Embeddings``: multimodal embeddings (a tensor) — a NIXL edge between GPU nodes.
* ``KV``: KV-cache blocks — a NIXL edge between GPU nodes.
* ``Answer``: the model's answer on its way back to the client (to the nodes that rewrite it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class PortType(str, Enum):
    """What travels over an edge."""

    TEXT = "Text"
    TOKENS = "Tokens"
    MEDIA = "Media"
    EMBEDDINGS = "Embeddings"
    KV = "KV"
    ANSWER = "Answer"

    @property
    def is_tensor(self) -> bool:
        """True for types that move as tensors (over NIXL between GPU nodes)."""
        return self in (PortType.EMBEDDINGS, PortType.KV)


Text = PortType.TEXT
Tokens = PortType.TOKENS
Media = PortType.MEDIA
Embeddings = PortType.EMBEDDINGS
KV = PortType.KV
Answer = PortType.ANSWER

#: A request port accepts an OpenAI request in any of its forms.
REQUEST_TYPES: tuple[PortType, ...] = (Text, Tokens, Media)


@dataclass(frozen=True)
class Port:
    """One input or output of a node role.

    Args:
        name: the port's name, unique among the node's inputs (or outputs).
        accepts: the types this port carries (an output carries exactly one).
        required: an input that must be connected for the node to do its job.
        optional: an output that may stay unconnected (the answer of a final stage).
    """

    name: str
    accepts: tuple[PortType, ...]
    required: bool = False
    optional: bool = False

    @property
    def type(self) -> PortType:
        """The (first) type of the port; outputs have exactly one."""
        return self.accepts[0]

    def describe(self) -> str:
        """``name: A|B`` for messages."""
        return f"{self.name}: {'|'.join(t.value for t in self.accepts)}"
