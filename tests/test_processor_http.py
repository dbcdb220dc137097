"""The real processor process (``python -m nodes.processor``) over HTTP, fetching from a local media server."""

from __future__ import annotations

import base64
import io
import json
import pathlib
import subprocess
import sys
import time
import wave
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests import processor_media as media
from tests.e2e import ROOT, free_port_block, http_json, metric_sum, metrics

LIMITS = {"max_bytes": 2 * 2**20, "max_pixels": 1024 * 1024, "max_frames": 4, "max_duration_s": 10.0,
          "fetch_timeout_s": 1.0, "video_fps": 2.0, "audio_sample_rate": 8000, "decode_timeout_s": 5.0}


class Processor:
    """One ``python -m nodes.processor`` process on a free port."""

    def __init__(self, tmp: pathlib.Path, name: str, **config: Any) -> None:
        self.port = free_port_block(1)
        path = tmp / f"{name}.json"
        path.write_text(json.dumps({"host": "127.0.0.1", "port": self.port, **config}))
        self.proc = subprocess.Popen([sys.executable, "-m", "nodes.processor", "--config", str(path), "--name", name],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if http_json("GET", self.url("/health"), timeout=1)[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{name} did not become healthy in 30 s")

    def url(self, path: str) -> str:
        """URL of ``path`` on this processor."""
        return f"http://127.0.0.1:{self.port}{path}"

    def process(self, *parts: dict[str, Any]) -> tuple[int, Any]:
        """POST a one-message chat body holding ``parts`` after a text part."""
        body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, *parts]}]}
        return http_json("POST", self.url("/v1/process"), body, timeout=30)

    def close(self) -> None:
        """Stop the process (and make sure it was still alive: it must not crash on any input)."""
        assert self.proc.poll() is None, "the processor died during the tests"
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def server() -> Iterator[media.MediaServer]:
    files = {
        "/a.png": ("image/png", media.image("PNG")),
        "/a.jpg": ("image/jpeg", media.image("JPEG")),
        "/bomb.png": ("image/png", media.bomb_png(5000, 5000)),
        "/clip.mp4": ("video/mp4", media.video("mp4", seconds=3.0)),
        "/long.webm": ("video/webm", media.video("webm", seconds=12.0, fps=2)),
        "/tone.mp3": ("audio/mpeg", media.audio("mp3", seconds=1.0)),
        "/big.bin": ("application/octet-stream", b"\0" * (3 * 2**20)),
        "/text.txt": ("text/plain", b"hello, not an image"),
    }
    with media.MediaServer(files, slow_s=3.0) as srv:
        yield srv


@pytest.fixture(scope="module")
def proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processor]:
    p = Processor(tmp_path_factory.mktemp("proc"), "processor-open", allow_private_urls=True, **LIMITS)
    yield p
    p.close()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processor]:
    p = Processor(tmp_path_factory.mktemp("strict"), "processor-strict", allow_private_urls=False, **LIMITS)
    yield p
    p.close()


def _part(body: Any) -> dict[str, Any]:
    return body["messages"][0]["content"][1]


def _decoded_data_url(url: str) -> tuple[str, list[bytes]]:
    header, _, payload = url.partition(",")
    return header, [base64.b64decode(p) for p in payload.split(",")]


def _refused(status: int, body: Any, code: int, *words: str) -> None:
    assert status == code, body
    message = body["error"]["message"]
    assert body["error"]["param"].startswith("messages[0].content[1]"), body
    assert message.startswith("messages[0].content[1]"), message
    for word in words:
        assert word in message, message


# --- what comes back for each kind -------------------------------------------------------------------------------


@pytest.mark.parametrize("path, mime", [("/a.png", "image/png"), ("/a.jpg", "image/jpeg")])
def test_image_from_http_is_inlined(proc: Processor, server: media.MediaServer, path: str, mime: str) -> None:
    status, body = proc.process({"type": "image_url", "image_url": {"url": server.url(path), "detail": "low"}})
    assert status == 200, body
    header, (data,) = _decoded_data_url(_part(body)["image_url"]["url"])
    assert header == f"data:{mime};base64"
    assert data == server.files[path][1]
    assert _part(body)["image_url"]["detail"] == "low"
    assert body["messages"][0]["content"][0] == {"type": "text", "text": "hi"}


def test_image_from_data_url(proc: Processor) -> None:
    png = media.image("PNG", (5, 7))
    status, body = proc.process({"type": "image_url", "image_url": {"url": media.data_url("image/png", png)}})
    assert status == 200, body
    assert Image.open(io.BytesIO(_decoded_data_url(_part(body)["image_url"]["url"])[1][0])).size == (5, 7)


def test_video_is_sampled_to_max_frames(proc: Processor, server: media.MediaServer) -> None:
    status, body = proc.process({"type": "video_url", "video_url": {"url": server.url("/clip.mp4")}})
    assert status == 200, body
    mime, frames, times = media.frames_of(_part(body)["video_url"]["url"])
    assert mime == "video/mp4"
    assert len(frames) == LIMITS["max_frames"]  # 3 s at 2 fps would be 6
    assert [f.shape for f in frames] == [(48, 64, 3)] * 4
    assert times == pytest.approx([0.0, 0.8, 1.5, 2.3], abs=0.06)  # spread over the clip
    shades = [int(f.mean()) for f in frames]
    assert shades == pytest.approx([0, 64, 120, 184], abs=8), shades  # frame k of the clip is grey 8k


def test_short_video_sampled_at_fps(proc: Processor) -> None:
    clip = media.video("webm", seconds=1.0, fps=10)
    status, body = proc.process({"type": "video_url", "video_url": {"url": media.data_url("video/webm", clip)}})
    assert status == 200, body
    assert len(media.frames_of(_part(body)["video_url"]["url"])[1]) == 2  # 1 s at 2 fps


def test_video_jpeg_frame_list_is_checked_and_capped(proc: Processor) -> None:
    frames = [media.image("JPEG", (16, 16)) for _ in range(6)]
    url = "data:video/jpeg;base64," + ",".join(media.b64(f) for f in frames)
    status, body = proc.process({"type": "video_url", "video_url": {"url": url}})
    assert status == 200, body
    mime, out, _ = media.frames_of(_part(body)["video_url"]["url"])
    assert (mime, len(out), out[0].shape) == ("video/mp4", LIMITS["max_frames"], (16, 16, 3))


def test_input_audio_is_resampled_to_mono(proc: Processor) -> None:
    wav = media.audio("wav", seconds=1.0, rate=44100, channels=2)
    status, body = proc.process({"type": "input_audio", "input_audio": {"data": media.b64(wav), "format": "wav"}})
    assert status == 200, body
    assert _part(body)["input_audio"]["format"] == "wav"
    with wave.open(io.BytesIO(base64.b64decode(_part(body)["input_audio"]["data"]))) as out:
        assert (out.getframerate(), out.getnchannels(), out.getsampwidth()) == (8000, 1, 2)
        assert abs(out.getnframes() - 8000) < 200


def test_audio_url_mp3_from_http(proc: Processor, server: media.MediaServer) -> None:
    status, body = proc.process({"type": "audio_url", "audio_url": {"url": server.url("/tone.mp3")}})
    assert status == 200, body
    header, (wav,) = _decoded_data_url(_part(body)["audio_url"]["url"])
    assert header == "data:audio/wav;base64"
    with wave.open(io.BytesIO(wav)) as out:
        assert (out.getframerate(), out.getnchannels()) == (8000, 1)


def test_image_embeds_pass_through(proc: Processor) -> None:
    payload = media.b64(media.npy(np.ones((16, 64), np.float32)))
    status, body = proc.process({"type": "image_embeds", "image_embeds": payload})
    assert status == 200, body
    assert _part(body)["image_embeds"] == payload
    grid = {"image_embeds": payload, "image_grid_thw": [1, 4, 4]}
    status, body = proc.process({"type": "image_embeds", "image_embeds": grid, "uuid": "u1"})
    assert status == 200, body
    assert _part(body) == {"type": "image_embeds", "image_embeds": grid, "uuid": "u1"}


# --- refusals ------------------------------------------------------------------------------------------------------


def test_private_hosts_refused_unless_allowed(strict: Processor, server: media.MediaServer) -> None:
    for url in (server.url("/a.png"), server.url("/a.png", "localhost"), "http://169.254.169.254/latest/meta-data",
                "http://[::1]/x.png", "http://10.1.2.3/x.png", "http://0.0.0.0/x.png"):
        status, body = strict.process({"type": "image_url", "image_url": {"url": url}})
        _refused(status, body, 400, "non-public address", "allow_private_urls")


def test_redirect_target_rechecked(strict: Processor, proc: Processor, server: media.MediaServer) -> None:
    # Allowed: the open processor follows the redirect to the file.
    status, body = proc.process({"type": "image_url", "image_url": {"url": server.url("/redirect?to=/a.png")}})
    assert status == 200, body
    status, body = proc.process({"type": "image_url", "image_url": {"url": server.url("/loop")}})
    _refused(status, body, 400, "too many redirects")
    status, body = proc.process(
        {"type": "image_url", "image_url": {"url": server.url("/redirect?to=file:///etc/passwd")}})
    _refused(status, body, 400, "http(s) or data:")


def test_fetch_timeout(proc: Processor, server: media.MediaServer) -> None:
    start = time.monotonic()
    status, body = proc.process({"type": "image_url", "image_url": {"url": server.url("/slow")}})
    _refused(status, body, 400, "longer than 1 s")
    assert time.monotonic() - start < server.slow_s, "the fetch deadline did not cut the slow download short"


@pytest.mark.parametrize("path", ["/big.bin", "/huge"])
def test_oversize_download_is_413(proc: Processor, server: media.MediaServer, path: str) -> None:
    status, body = proc.process({"type": "image_url", "image_url": {"url": server.url(path)}})
    _refused(status, body, 413, "larger than the limit")


def test_oversize_data_url_is_413(proc: Processor) -> None:
    url = media.data_url("image/png", b"\0" * (LIMITS["max_bytes"] + 10))
    _refused(*proc.process({"type": "image_url", "image_url": {"url": url}}), 413, "larger than the limit")


@pytest.mark.parametrize("part, words", [
    ({"type": "image_url", "image_url": {"url": media.data_url("image/png", media.bomb_png(100000, 100000))}},
     ("pixels",)),
    ({"type": "image_url", "image_url": {"url": media.data_url("image/png", media.bomb_png(2000, 2000))}},
     ("2000x2000", "max_pixels")),
    ({"type": "image_url", "image_url": {"url": media.data_url("image/png", media.image("PNG")[:60])}},
     ("could not be decoded",)),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,***"}}, ("not valid base64",)),
    ({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}, ("base64-encoded",)),
    ({"type": "image_url", "image_url": {}}, ("non-empty string",)),
    ({"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}, ("http(s) or data:",)),
    ({"type": "video_url", "video_url": {"url": media.data_url("video/mp4", b"\0" * 1000)}}, ("accepted container",)),
    ({"type": "video_url", "video_url": {"url": media.data_url("video/webm", media.video("webm", 12.0, 2))}},
     ("12.0 s long", "max_duration_s")),
    ({"type": "video_url", "video_url": {"url": media.data_url("video/mp4", media.video("mp4", 1.0, 4, (1280, 1024)))}},
     ("1280x1024", "max_pixels")),
    ({"type": "video_url", "video_url": {"url": "data:video/jpeg;base64," + media.b64(media.image("PNG"))}},
     ("accepted format (JPEG)",)),
    ({"type": "input_audio", "input_audio": {"data": media.b64(media.audio("wav", 11.0, 8000, 1)), "format": "wav"}},
     ("11.0 s long",)),
    ({"type": "input_audio", "input_audio": {"data": media.b64(media.image("PNG")), "format": "wav"}},
     ("accepted container",)),
    ({"type": "input_audio", "input_audio": "abc"}, ("must be an object",)),
    ({"type": "image_embeds", "image_embeds": media.b64(b"\x80\x02" + b"\0" * 64)}, ("torch.save",)),
    ({"type": "image_embeds", "image_embeds": media.b64(media.npy(np.array([[np.nan, 1.0]], np.float32)))},
     ("NaN",)),
    ({"type": "image_embeds", "image_embeds": media.b64(media.npy(np.ones((2, 3), np.int64)))}, ("dtype <i8",)),
    ({"type": "image_embeds", "image_embeds": media.b64(media.npy(np.ones(5, np.float32)))}, ("shape (5,)",)),
    ({"type": "image_embeds", "image_embeds": media.b64(media.npy(np.ones((4, 4), np.float32))[:-8])},
     ("needs 64",)),
    ({"type": "image_embeds", "image_embeds": {"image_grid_thw": [1, 2, 2]}}, ("under 'image_embeds'",)),
])
def test_refusals_say_why_and_name_the_part(proc: Processor, part: dict[str, Any], words: tuple[str, ...]) -> None:
    _refused(*proc.process(part), 400, *words)


def test_audio_without_audio_stream(proc: Processor) -> None:
    clip = media.video("mp4", 1.0, 4)
    status, body = proc.process({"type": "input_audio", "input_audio": {"data": media.b64(clip), "format": "mp3"}})
    _refused(status, body, 400, "no audio stream")


def test_bad_bodies(proc: Processor) -> None:
    assert http_json("POST", proc.url("/v1/process"), [1, 2])[0] == 400
    status, body = http_json("POST", proc.url("/v1/process"), {"messages": "x"})
    assert status == 400 and body["error"]["param"] == "messages"
    import urllib.request

    req = urllib.request.Request(proc.url("/v1/process"), data=b"{nope", method="POST")
    try:
        urllib.request.urlopen(req, timeout=5)
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and b"not valid JSON" in exc.read()
    else:
        raise AssertionError("invalid JSON accepted")


def test_text_only_body_is_unchanged(proc: Processor) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
    assert http_json("POST", proc.url("/v1/process"), body) == (200, body)


def test_metrics_count_kinds_outcomes_bytes_and_decode_time(proc: Processor) -> None:
    png = media.image("PNG")
    assert proc.process({"type": "image_url", "image_url": {"url": media.data_url("image/png", png)}})[0] == 200
    proc.process({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})
    values = metrics(proc.url(""))
    assert metric_sum(values, "servegraph_processor_media_parts_total", kind="image", outcome="ok") >= 1
    assert metric_sum(values, "servegraph_processor_media_parts_total", kind="image", outcome="refused") >= 1
    assert metric_sum(values, "servegraph_processor_media_bytes_total", kind="image") >= len(png)
    assert metric_sum(values, "servegraph_processor_decode_seconds_count", kind="image") >= 2
    assert metric_sum(values, "servegraph_processor_requests_total", status="400") >= 1


_SEEDS = {"image": [media.image("PNG"), media.image("JPEG"), media.image("GIF")],
          "video": [media.video("mp4", 1.0, 8, (32, 24)), media.video("webm", 1.0, 8, (32, 24))],
          "audio": [media.audio("wav", 0.5, 8000, 1), media.audio("mp3", 0.5, 22050, 1)],
          "embeds": [media.npy(np.ones((4, 8), np.float32))]}


def _media_part(kind: str, data: bytes) -> dict[str, Any]:
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": media.data_url("image/png", data)}}
    if kind == "video":
        return {"type": "video_url", "video_url": {"url": media.data_url("video/mp4", data)}}
    if kind == "audio":
        return {"type": "input_audio", "input_audio": {"data": media.b64(data), "format": "wav"}}
    return {"type": "image_embeds", "image_embeds": media.b64(data)}


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(sorted(_SEEDS)).flatmap(lambda kind: st.tuples(st.just(kind), media.mutated(_SEEDS[kind]))))
def test_fuzzed_files_over_http_never_5xx(proc: Processor, case: tuple[str, bytes]) -> None:
    status, body = proc.process(_media_part(*case))
    assert status in (200, 400, 413), body
    if status != 200:
        assert body["error"]["param"].startswith("messages[0].content[1]"), body
    assert proc.proc.poll() is None


def test_parts_fetched_concurrently_and_first_refusal_reported(proc: Processor, server: media.MediaServer) -> None:
    slow = {"type": "image_url", "image_url": {"url": server.url("/slow")}}
    bad = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    start = time.monotonic()
    status, body = proc.process(slow, slow, bad)
    assert status == 400, body
    assert body["error"]["param"] == "messages[0].content[1].image_url.url"  # in request order, not finishing order
    assert time.monotonic() - start < 2.5  # two 1 s timeouts side by side, not one after the other


@pytest.mark.parametrize("path, words", [("/missing.png", ("HTTP 404",)), ("/text.txt", ("not an image",)),
                                         ("/bomb.png", ("5000x5000", "max_pixels"))])
def test_bad_downloads_refused(proc: Processor, server: media.MediaServer, path: str, words: tuple[str, ...]) -> None:
    _refused(*proc.process({"type": "image_url", "image_url": {"url": server.url(path)}}), 400, *words)


def test_long_video_from_http_refused(proc: Processor, server: media.MediaServer) -> None:
    status, body = proc.process({"type": "video_url", "video_url": {"url": server.url("/long.webm")}})
    _refused(status, body, 400, "12.0 s long")
