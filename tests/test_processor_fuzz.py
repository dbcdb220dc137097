"""Fuzz the processor's decoders with malformed files: only RequestError may escape, each input in bounded time.

Seeds are valid files made here (pillow, PyAV, numpy); hypothesis mutates them
(bit flips, overwritten bytes, cuts, insertions, truncation), with half of the
edits aimed at the first 512 bytes where the headers are. A crash (segfault)
would take pytest down with it; an exception of another type fails the test.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph.plan import ProcessorConfig
from nodes.common.openai_errors import RequestError
from nodes.processor.audio import AudioLimits, decode_audio
from nodes.processor.embeds import check_embeds
from nodes.processor.images import check_image
from nodes.processor.media import MediaProcessor
from nodes.processor.video import VideoLimits, sample_video
from tests import processor_media as media

#: CPU-time bound on one input (the decoders' own wall-clock deadline is 1 s below). CPU time, not wall
#: time, so that a loaded CI machine does not make the bound flaky.
PER_INPUT_CPU_S = 2.0
VIDEO = VideoLimits(max_pixels=1024 * 1024, max_frames=8, max_duration_s=30.0, fps=2.0, decode_timeout_s=1.0)
AUDIO = AudioLimits(max_duration_s=30.0, sample_rate=16000, decode_timeout_s=1.0)
#: SERVEGRAPH_FUZZ_SCALE=N runs N times the examples, randomly seeded (a deeper run than CI's fixed one).
SCALE = int(os.environ.get("SERVEGRAPH_FUZZ_SCALE", "1"))
FUZZ = settings(deadline=None, derandomize=SCALE == 1, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

mutated = media.mutated
IMAGES = [media.image(fmt, (24, 16)) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP")]
VIDEOS = [media.video("mp4", 1.0, 8, (32, 24)), media.video("webm", 1.0, 8, (32, 24)),
          media.video("avi", 1.0, 8, (32, 24))]
AUDIOS = [media.audio("wav", 0.5, 8000, 1), media.audio("mp3", 0.5, 22050, 2), media.audio("ogg", 0.5, 48000, 1),
          media.audio("flac", 0.5, 16000, 1)]
TENSORS = [media.npy(np.ones((4, 8), np.float32)), media.npy(np.ones((1, 2, 4), np.float16))]


def _only_request_errors(fn: Callable[..., Any], *args: Any) -> None:
    start = time.process_time()
    try:
        fn(*args)
    except RequestError as exc:
        assert exc.status in (400, 413) and exc.message.startswith("p"), exc.message
    assert time.process_time() - start < PER_INPUT_CPU_S


@settings(FUZZ, max_examples=300 * SCALE)
@given(mutated(IMAGES))
def test_fuzz_images(data: bytes) -> None:
    _only_request_errors(check_image, data, 1024 * 1024, "p")


@settings(FUZZ, max_examples=200 * SCALE)
@given(mutated(VIDEOS))
def test_fuzz_video(data: bytes) -> None:
    _only_request_errors(sample_video, data, VIDEO, "p")


@settings(FUZZ, max_examples=200 * SCALE)
@given(mutated(AUDIOS))
def test_fuzz_audio(data: bytes) -> None:
    _only_request_errors(decode_audio, data, AUDIO, "p")


@settings(FUZZ, max_examples=300 * SCALE)
@given(mutated(TENSORS))
def test_fuzz_embeds(data: bytes) -> None:
    _only_request_errors(check_embeds, media.b64(data), "image", 2**20, "p")


def test_fuzz_seeds_are_valid() -> None:
    """The seeds decode: the fuzzing starts from files that reach deep into each decoder."""
    for data in IMAGES:
        check_image(data, 1024 * 1024, "p")
    for data in VIDEOS:
        assert sample_video(data, VIDEO, "p").count
    for data in AUDIOS:
        assert decode_audio(data, AUDIO, "p").duration_s > 0.4
    for data in TENSORS:
        check_embeds(media.b64(data), "image", 2**20, "p")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_KEYS = st.sampled_from(["image_url", "video_url", "input_audio", "audio_url", "image_embeds", "audio_embeds",
                         "video_embeds", "url", "data", "format", "type"])
_PART = st.one_of(
    _JSON,
    st.fixed_dictionaries({"type": st.sampled_from(["image_url", "video_url", "input_audio", "audio_url",
                                                    "image_embeds", "video_embeds", "text"])},
                          optional={"image_url": _JSON, "video_url": _JSON, "input_audio": _JSON, "audio_url": _JSON,
                                    "image_embeds": _JSON, "video_embeds": _JSON}),
    st.dictionaries(_KEYS, _JSON | st.sampled_from(["data:", "data:image/png;base64,", "data:video/jpeg;base64,,",
                                                     "http://", "https://[::1", "data:;base64,AAAA"]), max_size=3),
)


@settings(FUZZ, max_examples=200 * SCALE)
@given(st.lists(st.one_of(st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(_PART, max_size=3)}),
                          _JSON), max_size=3))
def test_fuzz_request_shapes(messages: list[Any]) -> None:
    """Odd JSON in messages and parts: a RequestError or the body back, nothing else (no network: private refused)."""
    config = ProcessorConfig(port=1, max_bytes=2**20, max_pixels=2**20, max_frames=4, max_duration_s=10,
                             fetch_timeout_s=0.5, allow_private_urls=False, decode_timeout_s=1.0)

    async def go() -> None:
        processor = MediaProcessor(config, session=None)  # type: ignore[arg-type]
        try:
            await processor.process({"messages": messages})
        except RequestError as exc:
            assert exc.status in (400, 413)

    _LOOP.run_until_complete(go())


_LOOP = asyncio.new_event_loop()
