"""OpenAI chat content parts -> template text + media digests and placeholder token ids.

Accepted parts: ``text`` (and ``refusal``, read as text, as vLLM does), ``image_url``
(data: or http(s) URL), ``input_audio`` (base64 ``data`` + ``format``), ``video_url``,
``audio_url``, and precomputed ``image_embeds``/``audio_embeds``/``video_embeds``.
A data URL's bytes are decoded and hashed; an http(s) URL is hashed as a string
(the mock fetches nothing: in a graph the processor turns URLs into data URLs).
Each media item becomes ``mm_tokens`` placeholder ids drawn from its digest, so
different bytes give different prompt ids, block hashes and output text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from ..common.openai_errors import RequestError
from .tokenizer import MEDIA_SENTINEL

_URL_PARTS = {"image_url": "image", "video_url": "video", "audio_url": "audio"}
_EMBEDS = ("image_embeds", "audio_embeds", "video_embeds")


@dataclass(frozen=True)
class MediaItem:
    """One media part of a request.

    Attributes:
        kind: image | video | audio | image_embeds.
        digest: hex blake2b-128 of kind + bytes (or of the URL string for http(s)).
        nbytes: size of the decoded bytes (0 for URLs).
    """

    kind: str
    digest: str
    nbytes: int

    def token_ids(self, count: int, base: int, span: int) -> list[int]:
        """``count`` placeholder ids in ``[base, base + span)`` derived from the digest."""
        raw = hashlib.shake_128(bytes.fromhex(self.digest)).digest(4 * count)
        return [base + int.from_bytes(raw[i:i + 4], "little") % span for i in range(0, 4 * count, 4)]


def flatten_messages(messages: Any, max_media_bytes: int) -> tuple[list[dict[str, Any]], list[MediaItem]]:
    """Validate chat ``messages``; return them with text content (sentinels for media) and the media.

    Raises:
        RequestError: 400 naming the offending field.
    """
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list of message objects", "messages")
    flat: list[dict[str, Any]] = []
    media: list[MediaItem] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RequestError(400, f"{where} must be an object with 'role' and 'content'", where)
        role = msg.get("role")
        if not isinstance(role, str) or not role:
            raise RequestError(400, f"{where}.role must be a non-empty string", f"{where}.role")
        content = msg.get("content")
        if content is None or isinstance(content, str):
            text = content or ""
        elif isinstance(content, list):
            text = "".join(_part_text(part, f"{where}.content[{j}]", media, max_media_bytes)
                           for j, part in enumerate(content))
        else:
            raise RequestError(400, f"{where}.content must be a string or a list of content parts",
                               f"{where}.content")
        flat.append({"role": role, "content": text})
    return flat, media


def media_only(messages: list[Any]) -> bool:
    """True when no message has text (an encoder request: only media parts)."""
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str) and content.strip():
            return False
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "text" for p in content):
            return False
    return True


def _part_text(part: Any, where: str, media: list[MediaItem], max_bytes: int) -> str:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise RequestError(400, f"{where} must be an object with a 'type'", where)
    kind = part["type"]
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            raise RequestError(400, f"{where}.{kind} must be a string", f"{where}.{kind}")
        return text
    if kind in _URL_PARTS:
        ref = part.get(kind)
        url = ref.get("url") if isinstance(ref, dict) else ref
        if not isinstance(url, str) or not url:
            raise RequestError(400, f"{where}.{kind}.url must be a non-empty string", f"{where}.{kind}.url")
        media.append(_from_url(_URL_PARTS[kind], url, f"{where}.{kind}.url", max_bytes))
    elif kind == "input_audio":
        ref = part.get("input_audio")
        data = ref.get("data") if isinstance(ref, dict) else None
        if not isinstance(data, str) or not data:
            raise RequestError(400, f"{where}.input_audio.data must be base64 audio", f"{where}.input_audio.data")
        media.append(_digest("audio", _b64(data, f"{where}.input_audio.data", max_bytes)))
    elif kind in _EMBEDS:
        data = part.get(kind)
        if not isinstance(data, (str, dict)) or not data:
            raise RequestError(400, f"{where}.{kind} must be base64 tensor data", f"{where}.{kind}")
        raw = data.encode() if isinstance(data, str) else repr(sorted(data.items())).encode()
        media.append(_digest(kind, raw))
    else:
        raise RequestError(
            400, f"{where}: unsupported content part type '{kind}' (text, refusal, image_url, input_audio, "
            "video_url, audio_url, image_embeds, audio_embeds, video_embeds)", f"{where}.type")
    return MEDIA_SENTINEL


def _from_url(kind: str, url: str, where: str, max_bytes: int) -> MediaItem:
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise RequestError(400, f"{where}: data URL must look like data:<mime>;base64,<data>", where)
        return _digest(kind, _b64(payload, where, max_bytes))
    if url.startswith(("http://", "https://")):
        return MediaItem(kind, hashlib.blake2b((kind + "\0" + url).encode(), digest_size=16).hexdigest(), 0)
    raise RequestError(400, f"{where}: URL must be a data: URL or http(s), got '{url[:40]}'", where)


def _b64(data: str, where: str, max_bytes: int) -> bytes:
    if len(data) * 3 // 4 > max_bytes:
        raise RequestError(413, f"{where}: media is larger than {max_bytes} bytes (--max-media-bytes)", where)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{where}: invalid base64 data", where) from None


def _digest(kind: str, raw: bytes) -> MediaItem:
    h = hashlib.blake2b(kind.encode() + b"\0", digest_size=16)
    h.update(raw)
    return MediaItem(kind, h.hexdigest(), len(raw))
