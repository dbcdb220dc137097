"""The processor's decoders and fetcher called directly."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time

import numpy as np
import pytest
from PIL import Image

from nodes.common.openai_errors import RequestError
from nodes.processor import fetch
from nodes.processor.audio import AudioLimits, decode_audio
from nodes.processor.embeds import check_embeds
from nodes.processor.images import check_image
from nodes.processor.video import VideoLimits, sample_times, sample_video
from tests import processor_media as media

VIDEO = VideoLimits(max_pixels=1024 * 1024, max_frames=8, max_duration_s=30.0, fps=2.0, decode_timeout_s=5.0)
AUDIO = AudioLimits(max_duration_s=30.0, sample_rate=16000, decode_timeout_s=5.0)


def _refusal(fn, *args, status: int = 400):  # type: ignore[no-untyped-def]
    with pytest.raises(RequestError) as info:
        fn(*args)
    assert info.value.status == status
    assert info.value.message.startswith("p:")
    return info.value.message


# --- images ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"),
                                       ("WEBP", "image/webp"), ("BMP", "image/bmp")])
def test_image_formats(fmt: str, mime: str) -> None:
    assert check_image(media.image(fmt, (40, 30)), 10_000, "p") == (mime, 40, 30)


def test_bomb_refused_from_header_alone() -> None:
    bomb = media.bomb_png(100000, 100000)
    assert len(bomb) < 100
    start = time.perf_counter()
    assert "pixels" in _refusal(check_image, bomb, 4096 * 4096, "p")
    assert time.perf_counter() - start < 5, "a 10-gigapixel image was decoded instead of refused from its header"
    # Under pillow's own bomb threshold, our limit speaks, with the numbers.
    assert "3000x3000 = 9000000 pixels; the limit is 1000000" in _refusal(check_image, media.bomb_png(3000, 3000),
                                                                          1_000_000, "p")


def test_image_pixel_limit_is_inclusive() -> None:
    assert check_image(media.image("PNG", (10, 10)), 100, "p")[1:] == (10, 10)
    _refusal(check_image, media.image("PNG", (10, 11)), 100, "p")


def test_formats_outside_the_whitelist_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="TIFF")
    assert "accepted format" in _refusal(check_image, buf.getvalue(), 10_000, "p")
    assert "accepted format" in _refusal(check_image, b"%!PS-Adobe-3.0 EPSF-3.0\n", 10_000, "p")


def test_truncated_image_refused() -> None:
    data = media.image("JPEG", (64, 64))
    assert "could not be decoded" in _refusal(check_image, data[: len(data) // 2], 10_000, "p")


# --- video ----------------------------------------------------------------------------------------------------------


def test_sample_times() -> None:
    assert sample_times(3.0, VIDEO) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert sample_times(8.0, VIDEO) == [k * 1.0 for k in range(8)]  # 16 at 2 fps > 8: spread evenly
    assert sample_times(0.1, VIDEO) == [0.0]
    assert sample_times(None, VIDEO) == [k * 0.5 for k in range(8)]


@pytest.mark.parametrize("fmt", ["mp4", "webm", "matroska", "avi"])
@pytest.mark.parametrize("output", ["mp4", "jpeg_frames"])
def test_video_sampled(fmt: str, output: str) -> None:
    clip = sample_video(media.video(fmt, seconds=3.0, fps=10), _with(VIDEO, output=output), "p")
    assert clip.count == 6
    assert clip.times == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], abs=0.06)
    assert (clip.width, clip.height) == (64, 48)
    mime, frames, times = media.frames_of(clip.url)
    assert mime == {"mp4": "video/mp4", "jpeg_frames": "video/jpeg"}[output]
    assert [f.shape for f in frames] == [(48, 64, 3)] * 6
    assert [int(f.mean()) for f in frames] == pytest.approx([0, 40, 80, 120, 160, 200], abs=6)  # frame k: grey 8k
    if output == "mp4":
        assert times == pytest.approx(clip.times, abs=0.002)  # the engine sees the original timestamps


def test_odd_sized_video_becomes_even_mp4() -> None:
    clip = sample_video(media.video("matroska", 1.0, 4, (33, 25)), VIDEO, "p")
    assert (clip.width, clip.height) == (33, 25)
    assert media.frames_of(clip.url)[1][0].shape == (24, 32, 3)


def test_video_limits() -> None:
    assert "12.0 s long" in _refusal(sample_video, media.video("webm", 12.0, 2), _with(VIDEO, max_duration_s=10.0), "p")
    assert "1280x1024" in _refusal(sample_video, media.video("mp4", 0.5, 2, (1280, 1024)), VIDEO, "p")
    assert "accepted container" in _refusal(sample_video, media.audio("wav"), VIDEO, "p")
    assert "no video stream" in _refusal(sample_video, media.audio("mka"), VIDEO, "p")


@pytest.mark.parametrize("changes", [{"max_frames": 1}, {"fps": 0.1}])
def test_sampling_extremes(changes: dict[str, float]) -> None:
    assert sample_video(media.video("mp4", 1.0, 8), _with(VIDEO, **changes), "p").count == 1


def test_video_stream_without_codec() -> None:
    """Found by fuzzing: an MP4 cut inside its track header has a video stream with no decoder."""
    clip = media.video("mp4", 1.0, 8, (32, 24))
    assert "codec is unknown" in _refusal(sample_video, clip[:clip.index(b"dref")], VIDEO, "p")


def test_video_decode_deadline() -> None:
    clip = media.video("mp4", 3.0, 10)
    assert "decoding took longer" in _refusal(sample_video, clip, _with(VIDEO, decode_timeout_s=1e-9), "p")


def _with(limits, **changes):  # type: ignore[no-untyped-def]
    return dataclasses.replace(limits, **changes)


# --- audio ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, rate, channels", [("wav", 44100, 2), ("wav", 8000, 1), ("mp3", 44100, 2),
                                                 ("ogg", 48000, 2), ("flac", 22050, 1)])
def test_audio_resampled_to_mono(fmt: str, rate: int, channels: int) -> None:
    decoded = decode_audio(media.audio(fmt, 1.0, rate, channels), AUDIO, "p")
    assert (decoded.sample_rate, decoded.source_rate, decoded.source_channels) == (16000, rate, channels)
    assert decoded.duration_s == pytest.approx(1.0, abs=0.08)
    assert decoded.samples.ndim == 1
    # Still a 440 Hz tone after resampling: count zero crossings.
    crossings = np.count_nonzero(np.diff(np.signbit(decoded.samples[1600:14400].astype(np.int32))))
    assert crossings == pytest.approx(2 * 440 * 0.8, rel=0.03)


def test_audio_duration_limit() -> None:
    assert "31.0 s long" in _refusal(decode_audio, media.audio("wav", 31.0, 8000, 1), AUDIO, "p")


def test_audio_duration_checked_while_decoding() -> None:
    # A WAV whose header claims a short length but holds more: the decoder's count catches it.
    wav = bytearray(media.audio("wav", 2.0, 8000, 1))
    data_at = wav.index(b"data")
    wav[data_at + 4:data_at + 8] = (100).to_bytes(4, "little")
    wav[4:8] = (36 + 100).to_bytes(4, "little")
    try:
        decoded = decode_audio(bytes(wav), _with(AUDIO, max_duration_s=1.0), "p")
    except RequestError as exc:
        assert "limit of 1 s" in exc.message or "long" in exc.message
    else:
        assert decoded.duration_s <= 1.0


# --- embeddings ----------------------------------------------------------------------------------------------------


def test_embeds_accepted_forms() -> None:
    tensor = media.b64(media.npy(np.zeros((3, 8), np.float16)))
    assert check_embeds(tensor, "image", 10_000, "p") == 48
    assert check_embeds({"image_embeds": tensor, "image_grid_thw": [1, 2, 2]}, "image", 10_000, "p") == 48
    ints = media.b64(media.npy(np.array([[1, 2, 2]], np.int64)))
    assert check_embeds({"audio_embeds": tensor, "feature_sizes": ints}, "audio", 10_000, "p") == 48 + 24
    assert check_embeds(media.b64(media.npy(np.zeros((1, 3, 8), np.float32))), "video", 10_000, "p") == 96


@pytest.mark.parametrize("payload, words, status", [
    (None, "must be a base64", 400),
    ({}, "must be a base64", 400),
    ({"image_embeds": [1.0, 2.0]}, "must be a base64 .npy tensor", 400),
    ({"image_grid_thw": [1, float("inf")], "image_embeds": "AAAA"}, "finite", 400),
    ({"image_grid_thw": [True], "image_embeds": "AAAA"}, "numbers only", 400),
    ({"image_grid_thw": [2**63], "image_embeds": "AAAA"}, "int64", 400),
    ("!!!", "not valid base64", 400),
    (media.b64(b"PK\x03\x04" + b"\0" * 32), "torch.save", 400),
    (media.b64(media.npy(np.zeros((3, 8), ">f4"))), "native byte order", 400),
    (media.b64(media.npy(np.zeros((0, 8), np.float32))), "empty", 400),
    (media.b64(media.npy(np.zeros((1, 2, 3, 4), np.float32))), "dimensions", 400),
    (media.b64(media.npy(np.zeros((2, 2), np.complex64))), "dtype <c8", 400),
    (media.b64(media.npy(np.zeros((2, 2), np.float32)) + b"extra"), "needs 16", 400),
    (media.b64(media.npy(np.zeros((100, 100), np.float32))), "larger than the limit", 413),
    (media.b64(media.npy(np.zeros((2, 2), np.float32)).replace(b"(2, 2)", b"(2, 9**99)")), "header", 400),
])
def test_embeds_refused(payload: object, words: str, status: int) -> None:
    with pytest.raises(RequestError) as info:
        check_embeds(payload, "image", 10_000, "p")
    assert info.value.status == status
    assert words in info.value.message, info.value.message
    assert info.value.param.startswith("p.image_embeds")


def test_object_arrays_never_unpickled() -> None:
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RequestError, match="dtype"):
        check_embeds(media.b64(pickled.getvalue()), "image", 10_000, "p")


# --- fetching -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address, public", [("8.8.8.8", True), ("127.0.0.1", False), ("10.0.0.1", False),
                                             ("169.254.169.254", False), ("::1", False), ("::ffff:127.0.0.1", False),
                                             ("::ffff:8.8.8.8", True), ("fe80::1%eth0", False), ("0.0.0.0", False),
                                             ("100.64.0.1", False), ("224.0.0.1", False), ("2606:4700::1111", True)])
def test_is_public(address: str, public: bool) -> None:
    assert fetch.is_public(address) is public


def test_data_url_parsing() -> None:
    limits = fetch.FetchLimits(10, 1.0, False)
    assert fetch.decode_data_url("data:IMAGE/PNG;base64,aGVsbG8=", limits, "p") == (b"hello", "image/png")
    assert _refusal(fetch.decode_data_url, "data:;base64," + "A" * 40, limits, "p", status=413)
    assert "not valid base64" in _refusal(fetch.decode_data_url, "data:x/y;base64,a b", limits, "p")


def _fetch(url: str, allow_private: bool) -> tuple[bytes, str]:
    async def go() -> tuple[bytes, str]:
        limits = fetch.FetchLimits(2**20, 2.0, allow_private)
        async with fetch.make_session(limits) as session:
            return await fetch.fetch_url(session, url, limits, "p")

    return asyncio.run(go())


def test_redirect_to_private_address_rechecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """127.0.0.1 counts as public here; it redirects to 127.0.0.2 (still loopback), which must be refused."""
    real = fetch.is_public
    monkeypatch.setattr(fetch, "is_public", lambda a: a == "127.0.0.1" or real(a))
    files = {"/a.png": ("image/png", media.image())}
    try:
        private_server = media.MediaServer(files, host="127.0.0.2")
    except OSError as exc:  # Linux routes all of 127/8 to lo; macOS only 127.0.0.1
        pytest.skip(f"cannot bind 127.0.0.2 here: {exc}")
    with media.MediaServer(files) as server, private_server as private:
        assert _fetch(server.url("/a.png"), False)[1] == "image/png"
        redirect = server.url(f"/redirect?to={private.url('/a.png')}")
        assert "non-public address (127.0.0.2)" in _refusal(_fetch, redirect, False)
        assert _fetch(redirect, True)[1] == "image/png"


def test_resolver_refuses_private_answers_at_connect_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the pre-check saw a public answer, the connection's own lookup gets loopback."""
    async def public_answer(url: str, limits: object, param: str) -> None:
        return None

    monkeypatch.setattr(fetch, "_check_host", public_answer)
    with media.MediaServer({"/a.png": ("image/png", media.image())}) as server:
        message = _refusal(_fetch, server.url("/a.png", "localhost"), False)
        assert "non-public address" in message and "allow_private_urls" in message
