"""Decode audio with PyAV, downmix to mono and resample; the result is 16-bit PCM WAV."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import av
import numpy as np

from .avcommon import DECODE_ERRORS, Deadline, audio_stream, decode_failed, header_duration, open_container
from .errors import refuse

#: Containers accepted for audio (FFmpeg demuxer names; "mov" covers m4a, "matroska" covers webm).
DEMUXERS = "wav,mp3,ogg,flac,aac,mov,matroska,webm"


@dataclass(frozen=True)
class AudioLimits:
    """What audio may be and what it becomes."""

    max_duration_s: float
    sample_rate: int
    decode_timeout_s: float


@dataclass(frozen=True)
class DecodedAudio:
    """Mono 16-bit PCM at ``sample_rate``, and as a WAV file."""

    samples: np.ndarray
    sample_rate: int
    source_rate: int
    source_channels: int

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate

    def wav(self) -> bytes:
        """The samples as a WAV file."""
        buf = io.BytesIO()
        with wave.open(buf, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.sample_rate)
            out.writeframes(self.samples.astype("<i2").tobytes())
        return buf.getvalue()


def decode_audio(data: bytes, limits: AudioLimits, param: str) -> DecodedAudio:
    """Decode the first audio stream of ``data`` to mono at ``limits.sample_rate``.

    The duration is checked from the headers before decoding and again as
    samples come out, since headers may lie or be absent.

    Raises:
        RequestError: not audio, too long, too slow to decode, or corrupt.
    """
    deadline = Deadline(limits.decode_timeout_s, param)
    container = open_container(data, DEMUXERS, param)
    try:
        with container:
            return _decode(container, limits, deadline, param)
    except DECODE_ERRORS as exc:
        raise decode_failed(param, exc) from None


def _decode(container: av.container.InputContainer, limits: AudioLimits, deadline: Deadline,
            param: str) -> DecodedAudio:
    stream = audio_stream(container, param)
    duration = header_duration(container, stream)
    if duration is not None and duration > limits.max_duration_s:
        raise refuse(param, f"audio is {duration:.1f} s long; the limit is {limits.max_duration_s:g} s "
                            "(Processor(max_duration_s=...))")
    max_samples = int(limits.max_duration_s * limits.sample_rate)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=limits.sample_rate)
    chunks: list[np.ndarray] = []
    total = 0
    for frame in container.decode(stream):
        deadline.check()
        if not isinstance(frame, av.AudioFrame):
            continue
        frame.pts = None  # the resampler only needs the samples; odd pts in corrupt files upset it
        for out in resampler.resample(frame):
            total = _keep(chunks, out, total, max_samples, limits, param)
    for out in resampler.resample(None):
        total = _keep(chunks, out, total, max_samples, limits, param)
    if total == 0:
        raise refuse(param, "the audio has no decodable samples")
    return DecodedAudio(np.concatenate(chunks), limits.sample_rate, stream.sample_rate or 0, stream.channels or 0)


def _keep(chunks: list[np.ndarray], frame: av.AudioFrame, total: int, max_samples: int, limits: AudioLimits,
          param: str) -> int:
    samples = frame.to_ndarray().reshape(-1)
    total += len(samples)
    if total > max_samples:
        raise refuse(param, f"audio runs past the limit of {limits.max_duration_s:g} s (Processor(max_duration_s=...))")
    chunks.append(samples)
    return total
