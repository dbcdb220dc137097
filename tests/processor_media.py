"""Media made in the test (pillow, PyAV, numpy) and a local HTTP server that serves it, for the processor tests."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np
from hypothesis import strategies as st
from PIL import Image


def image(fmt: str = "PNG", size: tuple[int, int] = (32, 24)) -> bytes:
    """A small gradient image in ``fmt``."""
    w, h = size
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    pixels[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims ``width`` x ``height`` (CRC fixed, so only the size lies)."""
    data = bytearray(image("PNG", (1, 1)))
    ihdr = 8  # after the signature: length(4) "IHDR"(4) data(13) crc(4)
    data[ihdr + 8:ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4:ihdr + 21])) & 0xFFFFFFFF
    data[ihdr + 21:ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def video(fmt: str = "mp4", seconds: float = 3.0, fps: int = 10, size: tuple[int, int] = (64, 48)) -> bytes:
    """A video whose frame k is a flat grey of brightness 8k (so sampled frames can be told apart)."""
    codec = {"mp4": "mpeg4", "webm": "libvpx", "matroska": "mpeg4", "avi": "mpeg4"}[fmt]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(int(seconds * fps)):
            pixels = np.full((size[1], size[0], 3), (8 * k) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def audio(fmt: str = "wav", seconds: float = 1.0, rate: int = 44100, channels: int = 2) -> bytes:
    """A 440 Hz tone in ``fmt`` (wav, mp3, ogg (opus: 48 kHz), flac, mka (flac in matroska))."""
    codec = {"wav": "pcm_s16le", "mp3": "libmp3lame", "ogg": "libopus", "flac": "flac", "mka": "flac"}[fmt]
    layout = "stereo" if channels == 2 else "mono"
    t = np.arange(int(seconds * rate)) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16)
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska" if fmt == "mka" else fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        sample_fmt = stream.codec_context.format.name
        chunk = 1152
        for start in range(0, len(tone), chunk):
            piece = np.repeat(tone[start:start + chunk, None], channels, axis=1)
            frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for converted in av.AudioResampler(format=sample_fmt, layout=layout, rate=rate).resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def frames_of(url: str) -> tuple[str, list[np.ndarray], list[float]]:
    """What the processor sent on for a video: (mime, RGB frames, timestamps), from either output form."""
    header, _, payload = url.partition(",")
    mime = header.removeprefix("data:").removesuffix(";base64")
    if mime == "video/jpeg":
        frames = [np.asarray(Image.open(io.BytesIO(base64.b64decode(p))).convert("RGB")) for p in payload.split(",")]
        return mime, frames, []
    with av.open(io.BytesIO(base64.b64decode(payload))) as container:
        decoded = [(f.to_ndarray(format="rgb24"), float(f.time)) for f in container.decode(video=0)]
    return mime, [f for f, _ in decoded], [t for _, t in decoded]


def npy(array: np.ndarray) -> bytes:
    """``numpy.save`` output."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def b64(data: bytes) -> str:
    """Base64 text."""
    return base64.b64encode(data).decode()


def data_url(mime: str, data: bytes) -> str:
    """``data:<mime>;base64,...``."""
    return f"data:{mime};base64,{b64(data)}"


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with 1-8 edits."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        where = draw(st.one_of(st.integers(0, min(511, len(data) - 1)), st.integers(0, len(data) - 1)))
        op = draw(st.sampled_from(("flip", "set", "cut", "insert", "truncate")))
        if op == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[where] = draw(st.sampled_from((0, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255)))))
        elif op == "cut":
            del data[where:where + draw(st.integers(1, 64))]
        elif op == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[where:]
    return bytes(data)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up early (timeouts, size limits) are what the tests provoke


class MediaServer:
    """A threaded HTTP server (on 127.0.0.1 unless told) with fixed bodies and special routes.

    ``/slow`` answers after ``slow_s``; ``/huge`` streams ``huge_bytes``
    without a Content-Length; ``/redirect?to=URL`` redirects there;
    ``/loop`` redirects to itself.
    """

    def __init__(self, files: dict[str, tuple[str, bytes]], slow_s: float = 5.0, huge_bytes: int = 8 * 2**20,
                 host: str = "127.0.0.1") -> None:
        self.files = files
        self.slow_s = slow_s
        self.huge_bytes = huge_bytes
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.route(self)

            def log_message(self, *_: object) -> None:
                pass

        self.host = host
        self.httpd = _QuietServer((host, 0), _Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str, host: str | None = None) -> str:
        """The URL of ``path`` on this server (by its address, or by ``host``)."""
        return f"http://{host or self.host}:{self.port}{path}"

    def route(self, req: BaseHTTPRequestHandler) -> None:
        """Answer one GET."""
        path, _, query = req.path.partition("?")
        if path == "/slow":
            time.sleep(self.slow_s)
            self._send(req, 200, "image/png", image())
        elif path == "/huge":
            req.send_response(200)
            req.send_header("Content-Type", "application/octet-stream")
            req.send_header("Connection", "close")
            req.end_headers()
            block = b"\0" * 65536
            try:
                for _ in range(self.huge_bytes // len(block)):
                    req.wfile.write(block)
            except OSError:
                pass  # the processor hung up once over its limit, as it should
        elif path == "/redirect":
            self._redirect(req, query.removeprefix("to="))
        elif path == "/loop":
            self._redirect(req, "/loop")
        elif path in self.files:
            mime, body = self.files[path]
            self._send(req, 200, mime, body)
        else:
            self._send(req, 404, "text/plain", b"not found")

    def _send(self, req: BaseHTTPRequestHandler, status: int, mime: str, body: bytes) -> None:
        req.send_response(status)
        req.send_header("Content-Type", mime)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        try:
            req.wfile.write(body)
        except OSError:
            pass

    def _redirect(self, req: BaseHTTPRequestHandler, location: str) -> None:
        req.send_response(302)
        req.send_header("Location", location)
        req.send_header("Content-Length", "0")
        req.end_headers()

    def __enter__(self) -> "MediaServer":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
