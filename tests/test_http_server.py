"""Our HTTP/1.1 server (nodes/common/http_server.py) as clients see it, over real sockets.

The server runs in its own process (tests/fakes/http_app.py); the tests write bytes
by hand where a library client would hide what they check (pipelining, a body sent
after 100 Continue, a request that does not parse, a reader that stops reading).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

import pytest

from tests.e2e import ROOT, free_port_block

pytestmark = pytest.mark.timeout(120)


class Served:
    def __init__(self, port: int, proc: subprocess.Popen) -> None:
        self.port = port
        self.proc = proc

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def state(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/state")
        return json.loads(conn.getresponse().read())


def _start(keep_alive_s: float | None = None) -> Served:
    port = free_port_block(1)
    args = [sys.executable, "-m", "tests.fakes.http_app", str(port)] + ([str(keep_alive_s)] if keep_alive_s else [])
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Served(port, proc)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"test server exited: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("test server did not start")


def _stop(served: Served) -> str:
    served.proc.send_signal(signal.SIGTERM)
    try:
        out, _ = served.proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        served.proc.kill()
        out, _ = served.proc.communicate()
    return out or ""


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    served = _start()
    yield served
    _stop(served)


def _read_response(sock: socket.socket, buffered: bytearray | None = None,
                   head_only: bool = False) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One response read off ``sock`` (status line, headers, de-chunked body; no body for a HEAD or a
    stream's ``head_only``); leftovers stay in ``buffered``."""
    data = buffered if buffered is not None else bytearray()

    def need(n_or_marker: int | bytes) -> bytes:
        while True:
            if isinstance(n_or_marker, bytes):
                at = data.find(n_or_marker)
                if at >= 0:
                    out = bytes(data[:at])
                    del data[:at + len(n_or_marker)]
                    return out
            elif len(data) >= n_or_marker:
                out = bytes(data[:n_or_marker])
                del data[:n_or_marker]
                return out
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; have {bytes(data)!r}")
            data.extend(chunk)

    head = need(b"\r\n\r\n").split(b"\r\n")
    status = head[0]
    headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in head[1:])}
    if head_only:
        body = b""
    elif headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size = int(need(b"\r\n"), 16)
            if size == 0:
                need(b"\r\n")
                break
            body += need(size)
            need(b"\r\n")
    elif b"content-length" in headers and not status.startswith(b"HTTP/1.1 100"):
        body = need(int(headers[b"content-length"]))
    else:
        body = b""
    return status, headers, body


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_keep_alive_serves_several_requests_on_one_connection_with_a_date(server: Served) -> None:
    with server.connect() as sock:
        for _ in range(3):
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = _read_response(sock)
            assert status == b"HTTP/1.1 200 OK" and body == b"hello"
            assert headers[b"content-length"] == b"5" and b"date" in headers
            assert b"connection" not in headers


def test_pipelined_requests_are_answered_in_order(server: Served) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /wait?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nsecond"
                     b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        buffered = bytearray()
        bodies = [_read_response(sock, buffered)[2] for _ in range(3)]
    assert bodies == [b"waited", b"second", b"hello"]


def test_chunked_request_body_is_read_whole(server: Served) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        status, headers, body = _read_response(sock)
    assert status == b"HTTP/1.1 200 OK" and body == b"hello world"
    assert headers[b"transfer-encoding"] == b"chunked"


def test_large_body_is_read_through_flow_control(server: Served) -> None:
    payload = os.urandom(3 << 20)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/echo", body=payload)
    assert conn.getresponse().read() == payload


def test_expect_100_continue_gets_the_interim_answer_before_the_body(server: Served) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        buffered = bytearray()
        status, _, _ = _read_response(sock, buffered)
        assert status == b"HTTP/1.1 100 Continue"
        sock.sendall(b"ping")
        status, _, body = _read_response(sock, buffered)
    assert status == b"HTTP/1.1 200 OK" and body == b"ping"


def test_head_has_the_headers_and_no_body_and_the_connection_goes_on(server: Served) -> None:
    with server.connect() as sock:
        sock.sendall(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        buffered = bytearray()
        status, headers, _ = _read_response(sock, buffered, head_only=True)
        assert status == b"HTTP/1.1 200 OK" and headers[b"content-length"] == b"5"
        # had the HEAD carried a body, the next response would not start with a status line
        status, _, body = _read_response(sock, buffered)
    assert status == b"HTTP/1.1 200 OK" and body == b"hello"


def test_malformed_request_gets_400_and_the_connection_closes(server: Served) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost x\r\n\r\n")
        status, _, body = _read_response(sock)
        assert status == b"HTTP/1.1 400 Bad Request" and b"malformed" in body
        assert _closed(sock)


def test_oversized_headers_get_431(server: Served) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n")
        status, _, _ = _read_response(sock)
        assert status.startswith(b"HTTP/1.1 431")
        assert _closed(sock)


def test_http_1_0_gets_an_answer_and_a_close(server: Served) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.0\r\nContent-Length: 3\r\n\r\nold")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head and body == b"old"


def test_app_failures_are_500s_and_the_server_goes_on(server: Served) -> None:
    for path in ("/boom", "/nostart"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 500 and resp.read() == b"Internal Server Error"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/hello")
    assert conn.getresponse().read() == b"hello"


def test_a_client_that_goes_away_is_seen_by_the_app(server: Served) -> None:
    before = server.state()["disconnects"]
    sock = server.connect()
    sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
    _read_response(sock, head_only=True)  # the app is waiting now
    sock.close()
    deadline = time.monotonic() + 5
    while server.state()["disconnects"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.state()["disconnects"] == before + 1


def test_a_reader_that_stops_pauses_the_writer_and_loses_nothing(server: Served) -> None:
    n, size = 32768, 1024  # 32 MiB: more than loopback's socket buffers hold
    before = server.state()["paused"]
    with server.connect() as sock:
        sock.sendall(f"GET /stream?n={n}&size={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(1.0)  # not reading: the server's buffer fills and the app must wait
        paused = server.state()["paused"] - before
        data = bytearray()
        while not data.endswith(b"\r\n0\r\n\r\n"):
            chunk = sock.recv(1 << 20)
            assert chunk, "connection closed before the end of the stream"
            data += chunk
    head, _, chunked = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and paused >= 1
    body, at = [], 0
    while True:
        end = chunked.index(b"\r\n", at)
        length = int(chunked[at:end], 16)
        if length == 0:
            break
        body.append(chunked[end + 2:end + 2 + length])
        at = end + 4 + length
    joined = b"".join(body)
    assert len(joined) == n * size
    assert [int(joined[i * size:i * size + 8]) for i in range(n)] == list(range(n))


def test_idle_connections_close_after_the_keep_alive_time() -> None:
    served = _start(keep_alive_s=0.5)
    try:
        with served.connect() as sock:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            _read_response(sock)
            started = time.monotonic()
            assert _closed(sock)
            assert 0.3 < time.monotonic() - started < 3
    finally:
        _stop(served)


def test_sigterm_finishes_what_is_in_flight_then_exits() -> None:
    served = _start()
    try:
        idle = served.connect()
        busy = served.connect()
        busy.sendall(b"GET /wait?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        served.proc.send_signal(signal.SIGTERM)
        status, headers, body = _read_response(busy)
        assert body == b"waited" and headers.get(b"connection") == b"close"
        assert _closed(idle)
        assert served.proc.wait(timeout=10) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", served.port), timeout=2)
    finally:
        out = _stop(served)
    assert "Traceback" not in out


def test_lifespan_runs_startup_and_shutdown() -> None:
    served = _start()
    try:
        assert served.state()["lifespan"] == ["lifespan.startup"]
    finally:
        _stop(served)


def test_a_port_in_use_is_named_with_what_to_do(server: Served) -> None:
    proc = subprocess.run([sys.executable, "-m", "tests.fakes.http_app", str(server.port)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert f"cannot listen on 127.0.0.1:{server.port}" in proc.stderr and "another process" in proc.stderr
    assert "Traceback" not in proc.stderr
