"""The processor inside ``graph run --mock``: what the client sends, what the engine gets, what a refusal looks like."""

from __future__ import annotations

import base64
import io
import pathlib
import wave
from typing import Any, Iterator

import pytest

from tests import processor_media as media
from tests.e2e import RunningGraph, http_json, start_graph

pytestmark = pytest.mark.e2e_mock
MODEL = "llava-hf/llava-1.5-7b-hf"


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGraph]:
    running = start_graph("pipelines/epd.py", tmp_path_factory.mktemp("epd") / "work", "--mock")
    yield running
    running.stop()


def _chat(g: RunningGraph, part: dict[str, Any]) -> tuple[int, Any]:
    content = [{"type": "text", "text": "what is this?"}, part]
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    return http_json("POST", g.url + "/chat/completions", body, timeout=60)


def _engine_part(g: RunningGraph) -> dict[str, Any]:
    (request,) = g.received("worker-0")
    body = request.get("body", request)
    return body["messages"][0]["content"][1]


def test_video_reaches_the_engine_sampled(graph: RunningGraph) -> None:
    graph.clear()
    clip = media.video("webm", seconds=20.0, fps=5)
    status, body = _chat(graph, {"type": "video_url", "video_url": {"url": media.data_url("video/webm", clip)}})
    assert status == 200, body
    mime, frames, times = media.frames_of(_engine_part(graph)["video_url"]["url"])
    assert mime == "video/mp4"
    assert len(frames) == 32  # the Processor default max_frames; 20 s at 2 fps would be 40
    assert times[-1] == pytest.approx(19.375, abs=0.3)


def test_audio_reaches_the_engine_as_16k_mono_wav(graph: RunningGraph) -> None:
    graph.clear()
    mp3 = media.audio("mp3", seconds=1.0, rate=44100, channels=2)
    status, body = _chat(graph, {"type": "input_audio", "input_audio": {"data": media.b64(mp3), "format": "mp3"}})
    assert status == 200, body
    part = _engine_part(graph)["input_audio"]
    assert part["format"] == "wav"
    with wave.open(io.BytesIO(base64.b64decode(part["data"]))) as out:
        assert (out.getframerate(), out.getnchannels()) == (16000, 1)


def test_bomb_refused_before_the_engine(graph: RunningGraph) -> None:
    graph.clear()
    bomb = media.data_url("image/png", media.bomb_png(5000, 5000))
    status, body = _chat(graph, {"type": "image_url", "image_url": {"url": bomb}})
    assert status == 400, body
    assert body["error"]["param"] == "messages[0].content[1].image_url.url"
    assert "5000x5000" in body["error"]["message"] and "max_pixels" in body["error"]["message"]
    assert not graph.received("worker-0")


def test_private_url_refused_by_default(graph: RunningGraph, tmp_path: pathlib.Path) -> None:
    with media.MediaServer({"/a.png": ("image/png", media.image())}) as server:
        status, body = _chat(graph, {"type": "image_url", "image_url": {"url": server.url("/a.png")}})
    assert status == 400, body
    assert "allow_private_urls" in body["error"]["message"]
