"""Walk a chat request's content parts and replace each media part by its checked, inlined form.

What each part becomes (the forms vLLM's chat API reads):

* ``image_url`` -> ``data:<mime>;base64,...`` of the original bytes, after pillow
  decoded them fully within the pixel limit.
* ``video_url`` -> the sampled frames as ``data:video/mp4;base64,...`` (H.264,
  original timestamps), or with ``video_format="jpeg_frames"`` vLLM's
  ``data:video/jpeg;base64,<frame>,<frame>,...`` (see :mod:`.video`).
* ``input_audio`` -> ``{"data": <base64 WAV>, "format": "wav"}``; ``audio_url``
  -> ``data:audio/wav;base64,...``: mono 16-bit PCM at the configured rate.
* ``image_embeds`` / ``audio_embeds`` / ``video_embeds`` -> unchanged, once
  checked (see :mod:`.embeds`).

Anything else (text parts, unknown types) passes through untouched.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import time
from typing import Any, Callable, TypeVar

import aiohttp
from PIL import Image

from graph.plan import ProcessorConfig
from nodes.common.openai_errors import RequestError

from .audio import AudioLimits, decode_audio
from .embeds import MODALITIES, check_embeds
from .errors import refuse
from .fetch import FetchLimits, decode_base64, decode_data_url, fetch_url, split_data_url, too_large
from .images import check_image
from .metrics import BYTES, DECODE_SECONDS, PARTS
from .video import VideoLimits, encode_mp4, jpeg_frames_url, sample_video

T = TypeVar("T")
_EMBEDS = {f"{m}_embeds": m for m in MODALITIES}
#: Content-part type -> the kind its metrics are counted under.
_KINDS = {"image_url": "image", "video_url": "video", "input_audio": "audio", "audio_url": "audio",
          **{key: "embeds" for key in _EMBEDS}}


class MediaProcessor:
    """Checks and inlines the media parts of requests under one config."""

    def __init__(self, config: ProcessorConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.fetch_limits = FetchLimits(config.max_bytes, config.fetch_timeout_s, config.allow_private_urls)
        self.video_limits = VideoLimits(config.max_pixels, config.max_frames, config.max_duration_s,
                                        config.video_fps, config.decode_timeout_s, config.video_format)
        self.audio_limits = AudioLimits(config.max_duration_s, config.audio_sample_rate, config.decode_timeout_s)
        # Decoding is CPU-bound: at most one per core, off the event loop so /health stays responsive.
        self._slots = asyncio.Semaphore(os.cpu_count() or 1)

    async def process(self, body: dict[str, Any]) -> None:
        """Replace every media part of ``body['messages']`` in place; parts are fetched and decoded concurrently.

        Raises:
            RequestError: the first refused part in request order (400, or 413 when too large), naming it.
        """
        messages = body.get("messages")
        if messages is None:
            return
        if not isinstance(messages, list):
            raise RequestError(400, "'messages' must be an array", "messages")
        jobs = []
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            for j, part in enumerate(content):
                if isinstance(part, dict) and isinstance(part.get("type"), str):
                    jobs.append(self._part(part, f"messages[{i}].content[{j}]"))
        for outcome in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    async def _part(self, part: dict[str, Any], param: str) -> None:
        kind = _KINDS.get(part["type"])
        if kind is None:
            return
        handler = {"image_url": self._image, "video_url": self._video, "input_audio": self._input_audio,
                   "audio_url": self._audio_url}.get(part["type"], self._embeds)
        try:
            await handler(part, param)
        except RequestError:
            PARTS.labels(kind, "refused").inc()
            raise
        PARTS.labels(kind, "ok").inc()

    async def _image(self, part: dict[str, Any], param: str) -> None:
        url, field = _url(part, "image_url", param)
        data = await self._load(url, field, "image")
        mime, _, _ = await self._decode("image", check_image, data, self.config.max_pixels, field)
        _set_url(part, "image_url", f"data:{mime};base64,{base64.b64encode(data).decode()}")

    async def _video(self, part: dict[str, Any], param: str) -> None:
        url, field = _url(part, "video_url", param)
        if url.startswith("data:") and split_data_url(url, field)[0] == "video/jpeg":
            BYTES.labels("video").inc(len(url) * 3 // 4)
            out = await self._decode("video", self._jpeg_frames, url, field)
        else:
            data = await self._load(url, field, "video")
            out = (await self._decode("video", sample_video, data, self.video_limits, field)).url
        _set_url(part, "video_url", out)

    async def _input_audio(self, part: dict[str, Any], param: str) -> None:
        audio = part.get("input_audio")
        field = param + ".input_audio.data"
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise refuse(field, "input_audio must be an object with 'data' (base64) and 'format'")
        data = decode_base64(audio["data"], self.config.max_bytes, field)
        BYTES.labels("audio").inc(len(data))
        decoded = await self._decode("audio", decode_audio, data, self.audio_limits, field)
        part["input_audio"] = {**audio, "data": base64.b64encode(decoded.wav()).decode(), "format": "wav"}

    async def _audio_url(self, part: dict[str, Any], param: str) -> None:
        url, field = _url(part, "audio_url", param)
        data = await self._load(url, field, "audio")
        decoded = await self._decode("audio", decode_audio, data, self.audio_limits, field)
        _set_url(part, "audio_url", "data:audio/wav;base64," + base64.b64encode(decoded.wav()).decode())

    async def _embeds(self, part: dict[str, Any], param: str) -> None:
        key = part["type"]
        size = await self._decode("embeds", check_embeds, part.get(key), _EMBEDS[key], self.config.max_bytes, param)
        BYTES.labels("embeds").inc(size)

    async def _load(self, url: str, field: str, kind: str) -> bytes:
        if url.startswith("data:"):
            data, _ = decode_data_url(url, self.fetch_limits, field)
        else:
            data, _ = await fetch_url(self.session, url, self.fetch_limits, field)
        BYTES.labels(kind).inc(len(data))
        return data

    async def _decode(self, kind: str, fn: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            start = time.perf_counter()
            try:
                return await asyncio.to_thread(fn, *args)
            finally:
                DECODE_SECONDS.labels(kind).observe(time.perf_counter() - start)

    def _jpeg_frames(self, url: str, field: str) -> str:
        """A ``data:video/jpeg;base64,<f1>,<f2>...`` URL (vLLM's frame-list form): check each frame.

        Over ``max_frames`` frames are thinned evenly; the result is in the configured output form.
        """
        payloads = url.split(",")[1:]
        if sum(len(p) for p in payloads) * 3 // 4 > self.config.max_bytes:
            raise too_large(self.config.max_bytes, field)
        if len(payloads) > self.config.max_frames:
            step = len(payloads) / self.config.max_frames
            payloads = [payloads[int(k * step)] for k in range(self.config.max_frames)]
        frames = []
        for k, payload in enumerate(payloads):
            where = f"{field} frame {k}"
            frame = decode_base64(payload, self.config.max_bytes, where)
            check_image(frame, self.config.max_pixels, where, formats=("JPEG",))
            frames.append(frame)
        if self.video_limits.output == "jpeg_frames":
            return jpeg_frames_url(frames)
        return encode_mp4([Image.open(io.BytesIO(f)) for f in frames], self.video_limits.fps)

def _url(part: dict[str, Any], key: str, param: str) -> tuple[str, str]:
    value = part.get(key)
    url = value.get("url") if isinstance(value, dict) else value
    field = f"{param}.{key}.url"
    if not isinstance(url, str) or not url:
        raise refuse(field, f"{key}.url must be a non-empty string (an http(s) or data: URL)")
    return url, field


def _set_url(part: dict[str, Any], key: str, url: str) -> None:
    value = part.get(key)
    part[key] = {**value, "url": url} if isinstance(value, dict) else {"url": url}
