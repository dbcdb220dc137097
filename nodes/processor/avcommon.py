"""What video and audio decoding share: opening a container safely, the decode deadline, errors."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import av

from .errors import refuse

S = TypeVar("S", bound=av.stream.Stream)

#: Exceptions through which PyAV/FFmpeg report a malformed or unsupported file.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    av.error.FFmpegError, OSError, ValueError, EOFError, IndexError, KeyError, UnicodeError, MemoryError,
    ZeroDivisionError, OverflowError,
)


def open_container(data: bytes, demuxers: str, param: str) -> av.container.InputContainer:
    """Open in-memory media with only ``demuxers`` allowed.

    The whitelist keeps out demuxers that open other files or URLs by
    themselves (hls, concat, ...): a media file must not make the processor
    read anything else.

    Raises:
        RequestError: not a file of an allowed container format.
    """
    try:
        return av.open(io.BytesIO(data), mode="r", options={"format_whitelist": demuxers}, metadata_errors="replace")
    except DECODE_ERRORS as exc:
        raise refuse(param, f"not a media file in an accepted container ({demuxers}): {_why(exc)}") from None


@dataclass
class Deadline:
    """Wall-clock budget for decoding one part."""

    seconds: float
    param: str
    start: float = 0.0

    def __post_init__(self) -> None:
        self.start = time.monotonic()

    def check(self) -> None:
        """Refuse once the budget is spent."""
        if time.monotonic() - self.start > self.seconds:
            raise refuse(self.param, f"decoding took longer than {self.seconds:g} s (Processor(decode_timeout_s=...))")


def video_stream(container: av.container.InputContainer, param: str) -> av.video.stream.VideoStream:
    """The first video stream, if it has a decoder.

    Raises:
        RequestError: no video stream, or its codec is unknown.
    """
    return _first(container.streams.video, "video", param)


def audio_stream(container: av.container.InputContainer, param: str) -> av.audio.stream.AudioStream:
    """The first audio stream, if it has a decoder.

    Raises:
        RequestError: no audio stream, or its codec is unknown.
    """
    return _first(container.streams.audio, "audio", param)


def _first(streams: Sequence[S], kind: str, param: str) -> S:
    if not streams:
        raise refuse(param, f"the file has no {kind} stream")
    if streams[0].codec_context is None:
        raise refuse(param, f"the {kind} stream's codec is unknown or unsupported")
    return streams[0]


def header_duration(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """The duration the headers claim, in seconds, if any."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def decode_failed(param: str, exc: BaseException) -> Exception:
    """The 400 for a file the decoder gave up on."""
    return refuse(param, f"media could not be decoded: {_why(exc)}")


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
