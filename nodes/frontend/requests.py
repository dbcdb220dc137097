"""Parse and check a client's OpenAI request before it costs any engine time (the rules: :mod:`.openai_models`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import orjson
from pydantic import ValidationError

from nodes.common.openai_errors import RequestError

from .openai_models import INTERNAL_FIELDS, SAFE_INT, ChatCompletionRequest, CompletionRequest
from .rejections import rejection

Kind = Literal["chat", "completions"]
_MODELS: dict[Kind, Any] = {"chat": ChatCompletionRequest, "completions": CompletionRequest}
_INTERNAL = frozenset(INTERNAL_FIELDS)
_INTEGERS = ("max_tokens", "max_completion_tokens", "n", "top_logprobs", "seed", "logprobs")
_MEDIA_PARTS = ("image_url", "input_audio", "video_url", "audio_url", "image_embeds", "audio_embeds", "video_embeds")


@dataclass
class ClientRequest:
    """One checked client request."""

    kind: Kind
    path: str
    body: dict[str, Any]
    _prompt_text: str | None = field(default=None, repr=False)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def model(self) -> str:
        return self.body["model"]

    @property
    def prompt_text(self) -> str:
        """The prompt's text (chat: every text part in order), for prefix-aware routing."""
        if self._prompt_text is None:
            self._prompt_text = prompt_text(self.body)
        return self._prompt_text

    def has_media(self) -> bool:
        """Any image/audio/video content part in the messages."""
        return bool(media_parts(self.body))


def prompt_text(body: dict[str, Any]) -> str:
    """Concatenated text of the prompt (chat messages' text parts, or the completion prompt)."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return " ".join(str(p) for p in prompt)
    out = []
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(out)


def media_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    """All media content parts of a chat request, in order."""
    parts = []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            parts += [p for p in content if isinstance(p, dict) and p.get("type") in _MEDIA_PARTS]
    return parts


def parse(raw: bytes, kind: Kind, path: str, max_tokens_limit: Mapping[str, int] | None = None) -> ClientRequest:
    """Check a body against :mod:`.openai_models` (and the model's context length where known).

    Raises:
        RequestError: 400 in OpenAI's shape, naming the field as ``param``.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object", code="invalid_type")
    if not _INTERNAL.isdisjoint(body):
        name = min(_INTERNAL.intersection(body))
        raise RequestError(400, f"'{name}' is set by the frontend for the engines' handshakes; a request may not "
                           "carry it", name, "unsupported_parameter")
    _integral(body)
    model = _MODELS[kind]
    try:
        model.__pydantic_validator__.validate_python(body)
    except ValidationError as exc:
        raise rejection(exc, body) from None
    for rule in model.RULES:
        if rule.broken(body):
            raise RequestError(400, rule.message, rule.param, "invalid_value")
    limit = max_tokens_limit.get(body["model"]) if max_tokens_limit else None
    if limit is not None:
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if value is not None and value > limit:
                raise RequestError(400, f"'{name}' is {value}, more than the context length of "
                                   f"'{body['model']}' ({limit} tokens)", name, "invalid_value")
    return ClientRequest(kind=kind, path=path, body=body)



def _integral(body: dict[str, Any]) -> None:
    """JSON Schema counts 8.0 as an integer, and so do we: such numbers become ints in place, so
    that every engine reads them as ints (the mock and some servers refuse a float there)."""
    for name in _INTEGERS:
        value = body.get(name)
        if type(value) is float:
            body[name] = _whole(value)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt:
        ids = prompt[0] if isinstance(prompt[0], list) else prompt
        if any(type(i) is float for i in ids):
            ids[:] = [_whole(i) if type(i) is float else i for i in ids]


def _whole(value: float) -> float | int:
    """``value`` as an int if it is a whole number a double holds exactly (every integer field is
    bounded within that); any other float stays one, and so is refused."""
    return int(value) if value.is_integer() and -SAFE_INT <= value <= SAFE_INT else value
