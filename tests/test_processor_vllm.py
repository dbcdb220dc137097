"""What the processor sends on is what vLLM's own media loaders read (run with the vLLM venv).

Feeds the processor's output for each kind to vLLM's ``MediaIO`` classes (the
code its chat API runs on content parts). Skipped with a printed reason where
vLLM is not importable: ``VENV/bin/python -m pytest tests/test_processor_vllm.py``
with the venv from scripts/setup-vllm.sh.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import sys

import numpy as np
import pytest

from nodes.processor.audio import AudioLimits, decode_audio
from nodes.processor.video import VideoLimits, sample_video
from tests import processor_media as media

pytestmark = pytest.mark.e2e_vllm

if importlib.util.find_spec("vllm") is None:
    _REASON = "needs vllm (VENV/bin/python -m pytest tests/test_processor_vllm.py, VENV from scripts/setup-vllm.sh)"
    print(f"SKIP tests/test_processor_vllm.py: {_REASON}", file=sys.stderr)
    pytest.skip(_REASON, allow_module_level=True)

from vllm.multimodal.media.audio import AudioMediaIO  # noqa: E402
from vllm.multimodal.media.image import ImageEmbeddingMediaIO, ImageMediaIO  # noqa: E402
from vllm.multimodal.media.video import VideoMediaIO  # noqa: E402

VIDEO = VideoLimits(max_pixels=1024 * 1024, max_frames=8, max_duration_s=60.0, fps=2.0, decode_timeout_s=10.0)


def _load_video(url: str) -> tuple[np.ndarray, dict]:
    header, payload = url.split(",", 1)
    loaded = VideoMediaIO(ImageMediaIO(), num_frames=32).load_base64(header[5:].split(";")[0], payload)
    frames, meta = loaded.media if hasattr(loaded, "media") else loaded
    return np.asarray(frames), meta


def test_vllm_reads_the_mp4_with_its_timing() -> None:
    clip = sample_video(media.video("webm", 3.0, 10), VIDEO, "p")
    frames, meta = _load_video(clip.url)
    assert frames.shape == (6, 48, 64, 3)
    assert (meta["total_num_frames"], meta["fps"], meta["duration"]) == (6, 2.0, 3.0)


def test_vllm_reads_the_jpeg_frame_list() -> None:
    clip = sample_video(media.video("mp4", 3.0, 10), dataclasses.replace(VIDEO, output="jpeg_frames"), "p")
    frames, _ = _load_video(clip.url)
    assert frames.shape == (6, 48, 64, 3)


def test_vllm_reads_the_wav() -> None:
    decoded = decode_audio(media.audio("mp3", 1.0, 44100, 2), AudioLimits(60.0, 16000, 10.0), "p")
    samples, rate = AudioMediaIO().load_base64("audio/wav", base64.b64encode(decoded.wav()).decode())
    assert rate == 16000 and samples.ndim == 1 and abs(len(samples) - 16000) < 800


def test_vllm_reads_the_npy_embeddings() -> None:
    tensor = ImageEmbeddingMediaIO().load_base64("", media.b64(media.npy(np.ones((16, 64), np.float32))))
    assert tuple(tensor.shape) == (16, 64)
