"""Decode a video with PyAV, sample its frames and re-encode them for the engines.

Sampling: one frame every ``1/fps`` seconds of the video, unless that gives
more than ``max_frames``, in which case ``max_frames`` frames spread evenly
over the whole duration. Each kept frame is the first whose timestamp reaches
its target time. When the headers give no duration, frames are taken every
``1/fps`` seconds from the start until ``max_frames`` are kept.

Output (``Processor(video_format=...)``):

* ``mp4`` (default): the kept frames as an H.264 MP4 (MPEG-4 part 2 where the
  PyAV build lacks libx264) with their original timestamps. Every engine
  takes a video file in ``video_url`` (vLLM, SGLang, TensorRT-LLM, the mock),
  and it is a file we wrote, not the client's.
* ``jpeg_frames``: vLLM's frame-list form ``data:video/jpeg;base64,<f1>,<f2>,...``
  (vLLM only): engines decode nothing but JPEGs.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, Protocol

import av
from PIL import Image

from .avcommon import DECODE_ERRORS, Deadline, decode_failed, header_duration, open_container, video_stream
from .errors import refuse

#: Containers accepted for video (FFmpeg demuxer names; "mov" is mp4/m4v/3gp, "matroska" is mkv/webm).
DEMUXERS = "mov,matroska,webm,avi,gif"
_JPEG_QUALITY = 90
_MS = Fraction(1, 1000)
VideoFormat = Literal["mp4", "jpeg_frames"]


@dataclass(frozen=True)
class VideoLimits:
    """What a video may be and how it is sampled."""

    max_pixels: int
    max_frames: int
    max_duration_s: float
    fps: float
    decode_timeout_s: float
    output: VideoFormat = "mp4"


@dataclass(frozen=True)
class SampledVideo:
    """The sampled video as a ``data:`` URL for the engines, and what was kept."""

    url: str
    times: list[float]
    duration_s: float | None
    width: int
    height: int

    @property
    def count(self) -> int:
        """Frames kept."""
        return len(self.times)


def sample_times(duration_s: float | None, limits: VideoLimits) -> list[float]:
    """Target timestamps (seconds) of the frames to keep."""
    step = 1.0 / limits.fps
    if duration_s is None:
        return [k * step for k in range(limits.max_frames)]
    count = max(1, min(limits.max_frames, math.ceil(duration_s * limits.fps)))
    step = max(step, duration_s / count)
    return [k * step for k in range(count)]


def sample_video(data: bytes, limits: VideoLimits, param: str) -> SampledVideo:
    """Check ``data`` against ``limits`` and return its sampled frames.

    Dimensions and duration are read from the headers and checked before any
    frame is decoded; they are checked again on every decoded frame, since
    headers may lie.

    Raises:
        RequestError: not a video, too many pixels, too long, too slow to decode, or corrupt.
    """
    deadline = Deadline(limits.decode_timeout_s, param)
    container = open_container(data, DEMUXERS, param)
    try:
        with container:
            return _sample(container, limits, deadline, param)
    except DECODE_ERRORS as exc:
        raise decode_failed(param, exc) from None


def _sample(container: av.container.InputContainer, limits: VideoLimits, deadline: Deadline,
            param: str) -> SampledVideo:
    stream = video_stream(container, param)
    width, height = stream.codec_context.width, stream.codec_context.height
    _check_pixels(width, height, limits, param)
    duration = header_duration(container, stream)
    if duration is not None and duration > limits.max_duration_s:
        raise refuse(param, f"video is {duration:.1f} s long; the limit is {limits.max_duration_s:g} s "
                            "(Processor(max_duration_s=...))")
    targets = sample_times(duration, limits)
    rate = float(stream.average_rate) if stream.average_rate else limits.fps
    sink: _Sink = Mp4Sink(limits.fps) if limits.output == "mp4" else JpegFramesSink()
    times: list[float] = []
    for index, frame in enumerate(container.decode(stream)):
        deadline.check()
        if not isinstance(frame, av.VideoFrame):
            continue
        _check_pixels(frame.width, frame.height, limits, param)
        t = float(frame.time) if frame.time is not None else index / rate
        if t > limits.max_duration_s:
            raise refuse(param, f"video runs past the limit of {limits.max_duration_s:g} s "
                                "(Processor(max_duration_s=...))")
        if t + 1e-6 >= targets[len(times)]:
            sink.add(frame, t)
            times.append(t)
            if len(times) == len(targets):
                break
    if not times:
        raise refuse(param, "the video has no decodable frames")
    return SampledVideo(sink.finish(), times, duration, width, height)


def _check_pixels(width: int, height: int, limits: VideoLimits, param: str) -> None:
    if width * height > limits.max_pixels:
        raise refuse(param, f"video frames are {width}x{height} = {width * height} pixels; the limit is "
                            f"{limits.max_pixels} (Processor(max_pixels=...))")


class _Sink(Protocol):
    def add(self, frame: av.VideoFrame, t: float) -> None: ...

    def finish(self) -> str: ...


def jpeg(frame: av.VideoFrame) -> bytes:
    """One frame as JPEG bytes."""
    buf = io.BytesIO()
    frame.to_image().save(buf, format="JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue()


@dataclass
class JpegFramesSink:
    """Collects frames as JPEGs for vLLM's ``data:video/jpeg;base64,<f1>,<f2>,...``."""

    frames: list[bytes] = field(default_factory=list)

    def add(self, frame: av.VideoFrame, t: float) -> None:
        """Keep ``frame``."""
        self.frames.append(jpeg(frame))

    def finish(self) -> str:
        """The frame-list data URL."""
        return jpeg_frames_url(self.frames)


def jpeg_frames_url(frames: list[bytes]) -> str:
    """vLLM's frame-list data URL for JPEG ``frames``."""
    return "data:video/jpeg;base64," + ",".join(base64.b64encode(f).decode() for f in frames)


class Mp4Sink:
    """Encodes frames into an in-memory MP4 as they come, keeping their timestamps."""

    def __init__(self, fps: float) -> None:
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, "w", format="mp4")  # writes nothing until the first packet
        self._fps = Fraction(fps).limit_denominator(1000)
        self._stream: av.video.stream.VideoStream | None = None
        self._last_pts = -1

    def add(self, frame: av.VideoFrame, t: float) -> None:
        """Encode ``frame`` at time ``t`` (seconds)."""
        # yuv420p needs even sizes: drop the odd last row/column by rescaling it away.
        width, height = max(2, frame.width - frame.width % 2), max(2, frame.height - frame.height % 2)
        if self._stream is None:
            self._stream = self._open_stream(width, height)
        out = frame.reformat(width=self._stream.width, height=self._stream.height, format="yuv420p")
        self._last_pts = max(self._last_pts + 1, round(t * 1000))
        out.pts, out.time_base = self._last_pts, _MS
        for packet in self._stream.encode(out):
            self._out.mux(packet)

    def finish(self) -> str:
        """Flush the encoder and return the MP4 as a data URL."""
        assert self._stream is not None
        for packet in self._stream.encode():
            self._out.mux(packet)
        self._out.close()
        return "data:video/mp4;base64," + base64.b64encode(self._buf.getvalue()).decode()

    def _open_stream(self, width: int, height: int) -> av.video.stream.VideoStream:
        if "libx264" in av.codecs_available:
            stream = self._out.add_stream("libx264", rate=self._fps, options={"crf": "18", "preset": "veryfast"})
        else:
            stream = self._out.add_stream("mpeg4", rate=self._fps, options={"qscale": "2"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = _MS
        return stream


def encode_mp4(images: list[Image.Image], fps: float) -> str:
    """Still ``images`` as an MP4 data URL at ``fps`` (for frame lists given by the client)."""
    sink = Mp4Sink(fps)
    for k, img in enumerate(images):
        sink.add(av.VideoFrame.from_image(img.convert("RGB")), k / fps)
    return sink.finish()
