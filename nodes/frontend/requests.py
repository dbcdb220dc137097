"""Parse and check a client's OpenAI request before it costs any engine time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from nodes.common.openai_errors import RequestError

Kind = Literal["chat", "completions"]
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


def parse(raw: bytes, kind: Kind, path: str) -> ClientRequest:
    """Check the fields every engine needs; anything wrong is a 400 naming the field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "'model' is required and must be a string", "model")
    if kind == "chat":
        _check_messages(body.get("messages"))
    else:
        _check_prompt(body.get("prompt"))
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise RequestError(400, f"'{name}' must be a positive integer, got {value!r}", name)
    if body.get("n", 1) != 1:
        raise RequestError(400, "only n=1 is supported", "n")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
            raise RequestError(400, f"'{name}' must be a non-negative number, got {value!r}", name)
    if "stream" in body and not isinstance(body["stream"], bool):
        raise RequestError(400, f"'stream' must be true or false, got {body['stream']!r}", "stream")
    return ClientRequest(kind=kind, path=path, body=body)


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(400, f"messages[{i}] must be an object with a 'role'", f"messages[{i}].role")
        content = m.get("content")
        if content is None and m["role"] == "assistant":
            continue
        if not isinstance(content, (str, list)):
            raise RequestError(400, f"messages[{i}].content must be a string or a list of parts", f"messages[{i}].content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise RequestError(400, f"messages[{i}].content[{j}] must be an object with a 'type'",
                                       f"messages[{i}].content[{j}].type")


def _check_prompt(prompt: Any) -> None:
    ok = isinstance(prompt, str) or (
        isinstance(prompt, list) and prompt and (all(isinstance(p, str) for p in prompt) or all(
            isinstance(p, int) and not isinstance(p, bool) for p in prompt))
    )
    if not ok:
        raise RequestError(400, "'prompt' must be a string, a list of strings or a list of token ids", "prompt")
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) and len(prompt) != 1:
        raise RequestError(400, "batched prompts are not supported; send one prompt per request", "prompt")
