"""Nodes you write yourself: typed stages of your own code in the request path.

A node of your own is a class: its settings are pydantic fields, its ports are
typed, and one async method does its work. It runs in a process of its own
(``python -m nodes.custom``) with replicas, health, metrics and restarts, and
the frontend calls it at its place in the graph::

    class Guard(RequestNode):
        \"\"\"Refuses prompts that ask the model to drop its instructions.\"\"\"

        pattern: str = r"(?i)ignore (all )?previous instructions"

        async def handle(self, request: Request) -> Request:
            if re.search(self.pattern, request.text):
                raise Refusal("this request was refused by policy")
            return request

    with Graph("guarded") as g:
        Frontend() >> Guard() >> Prefill(model=M) >> Decode(model=M)

Two kinds:

* :class:`RequestNode` (before the model) sees the request and returns it,
  changed or not, or refuses it with :class:`Refusal` (the client gets a 400
  in OpenAI's error shape with your message). It takes ``Text`` and gives
  ``Text`` unless it says otherwise (``accepts = Media`` for a node after the
  processor, ``produces = Text`` for one that turns media into text).
* :class:`ResponseNode` (after the model) turns the answer's text into the
  text the client gets. It sees the answer as the model writes it, piece by
  piece, and yields what to send: it may pass a piece on, hold it back (yield
  later), change it, or stop the answer (return early). A non-streamed answer is
  one piece.

The class may live in the pipeline file or in a module beside it; the process
that serves it imports that file (servegraph ships the file itself to
Kubernetes and Slurm). Keep such a module self-contained: the standard
library, servegraph and installed packages.
"""

from __future__ import annotations

import os
import re
from typing import Any, AsyncIterator, ClassVar, Literal

from pydantic import Field

from ._where import caller_location
from .errors import GraphError
from .nodes import Node, ports_of
from .ports import Media, PortType, Text, Tokens

__all__ = ["Refusal", "Request", "RequestNode", "ResponseNode", "UserNode"]


class Refusal(Exception):
    """Raised by a request node to refuse a request: the client gets a 400 with this message."""


class Request:
    """An OpenAI request on its way through the graph (chat or completions).

    ``body`` is the JSON object as the client sent it, with what earlier nodes
    changed; change it in place or build a new one. The helpers below read and
    change the common parts.
    """

    __slots__ = ("body", "kind")

    def __init__(self, body: dict[str, Any], kind: Literal["chat", "completions"]) -> None:
        self.body = body
        self.kind = kind

    @property
    def text(self) -> str:
        """The prompt's text: every text part of every message (chat), or the prompt (completions)."""
        if self.kind == "completions":
            prompt = self.body.get("prompt")
            return prompt if isinstance(prompt, str) else " ".join(map(str, prompt or ()))
        parts = []
        for message in self.body.get("messages") or ():
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(parts)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages (an empty list for a completions request)."""
        return self.body.setdefault("messages", []) if self.kind == "chat" else []

    def add_system_prompt(self, text: str) -> None:
        """Put a system message first (chat); for completions, put ``text`` before the prompt."""
        if self.kind == "chat":
            self.messages.insert(0, {"role": "system", "content": text})
        elif isinstance(self.body.get("prompt"), str):
            self.body["prompt"] = f"{text}\n\n{self.body['prompt']}"


class UserNode(Node):
    """What every node of your own has: the deadline of one call of its code."""

    timeout_s: float = Field(default=10.0, gt=0, description="deadline for one call of the node's code")

    #: Methods a subclass must define (checked when the graph is validated).
    _REQUIRED: ClassVar[str] = ""
    #: The file whose code defined the class (read where the class statement ran).
    _SOURCE: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Where the class statement ran (past pydantic's and our own frames): a pipeline loaded from a
        # path is no module of sys.modules, so inspect.getsourcefile could not find it later.
        where = caller_location()
        cls._SOURCE = os.path.abspath(where.file) if where and os.path.isfile(where.file) else None

    @classmethod
    def default_name(cls) -> str:
        """``ContentGuard`` -> ``content-guard``."""
        return re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__).lower().replace("_", "-")

    @classmethod
    def handler_defined(cls) -> bool:
        """The subclass defines the method it must (not the base class's)."""
        return getattr(cls, cls._REQUIRED) is not getattr(_BASE_OF[cls.ROLE], cls._REQUIRED)

    def creation_problems(self) -> list[GraphError]:
        cls = type(self)
        problems = []
        if not cls.handler_defined():
            problems.append(GraphError(
                "no-handler", f"{cls.__name__} defines no {cls._REQUIRED}(): the node would do nothing",
                f"define `async def {cls._REQUIRED}(self, ...)` in class {cls.__name__} (see graph.custom)",
                where=self.where))
        if cls.source_file() is None:
            problems.append(GraphError(
                "no-source-file", f"{cls.__name__} is not defined in a file, so its process cannot load it",
                "define the class in the pipeline file or in a module beside it", where=self.where))
        return problems

    @classmethod
    def source_file(cls) -> str | None:
        """The file the class is defined in (None when it has none, e.g. typed at a prompt)."""
        return cls._SOURCE


class RequestNode(UserNode):
    """A node before the model: returns the request (changed or not) or raises :class:`Refusal`.

    Set ``accepts`` and ``produces`` (port types) when it is not ``Text`` in and
    out, e.g. ``accepts = Media; produces = Text`` for speech-to-text after the
    processor.
    """

    ROLE: ClassVar[str] = "request_node"
    accepts: ClassVar[PortType] = Text
    produces: ClassVar[PortType] = Text
    _REQUIRED: ClassVar[str] = "handle"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.accepts not in (Text, Tokens, Media) or cls.produces not in (Text, Tokens, Media):
            raise TypeError(f"{cls.__name__}: a request node accepts and produces Text, Tokens or Media")
        cls.INPUTS, cls.OUTPUTS = ports_of(cls.ROLE, cls.accepts, cls.produces)

    async def handle(self, request: Request) -> Request:
        """Return the request to pass on, or raise :class:`Refusal`. Define it in your class."""
        return request


class ResponseNode(UserNode):
    """A node after the model: yields the text the client gets, from the answer's text as it comes."""

    ROLE: ClassVar[str] = "response_node"
    INPUTS, OUTPUTS = ports_of(ROLE)
    _REQUIRED: ClassVar[str] = "transform"

    async def transform(self, request: Request, text: AsyncIterator[str]) -> AsyncIterator[str]:
        """Yield what the client gets, reading the answer's text pieces from ``text``. Define it in your class.

        Returning before ``text`` ends cuts the answer (finish reason ``content_filter``).
        """
        async for piece in text:
            yield piece


_BASE_OF: dict[str, type[UserNode]] = {"request_node": RequestNode, "response_node": ResponseNode}
