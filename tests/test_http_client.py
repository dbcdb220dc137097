"""Our HTTP/1.1 client (nodes/common/http_client.py) against real servers.

Our own server in its own process (tests/fakes/http_app.py) for the usual paths, and
a few lines of asyncio server in the test for what a server should not do but
sometimes does: close a kept-alive connection, break off a body, go quiet.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Awaitable, Callable, Iterator

import pytest

from nodes.common.http_client import Broken, HttpClient, Stalled, Unreachable
from tests.e2e import free_port_block
from tests.test_http_server import Served, _start, _stop

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    served = _start()
    yield served
    _stop(served)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


async def _port_of(client: HttpClient, url: str) -> int:
    resp = await client.request("GET", url)
    return json.loads(await resp.read())["port"]


def test_answers_come_whole_and_the_connection_is_kept(server: Served) -> None:
    async def test() -> None:
        client = HttpClient()
        base = f"http://127.0.0.1:{server.port}"
        resp = await client.request("POST", base + "/echo", b"x" * 100_000)
        assert resp.status == 200 and await resp.read() == b"x" * 100_000
        ports = {await _port_of(client, base + "/whoami") for _ in range(5)}
        assert len(ports) == 1  # one connection, kept alive
        await client.close()

    run(test)


def test_a_connection_idle_too_long_is_not_reused(server: Served) -> None:
    async def test() -> None:
        client = HttpClient(idle_s=0.2)
        url = f"http://127.0.0.1:{server.port}/whoami"
        first = await _port_of(client, url)
        assert await _port_of(client, url) == first
        await asyncio.sleep(0.4)
        assert await _port_of(client, url) != first
        await client.close()

    run(test)


def test_unreachable_is_said_at_once() -> None:
    async def test() -> None:
        client = HttpClient(connect_timeout_s=5)
        port = free_port_block(1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Unreachable, match=f"127.0.0.1:{port}"):
            await client.request("GET", f"http://127.0.0.1:{port}/")
        assert loop.time() - started < 2
        with pytest.raises(Unreachable, match="cannot resolve"):
            await client.request("GET", "http://no-such-host.invalid/")
        await client.close()

    run(test)


def test_piped_chunks_of_one_read_arrive_in_one_call(server: Served) -> None:
    async def test() -> None:
        client = HttpClient()
        resp = await client.request("GET", f"http://127.0.0.1:{server.port}/stream?n=2000&size=64")
        calls: list[bytes] = []
        await resp.pipe(calls.append, idle_timeout_s=5)
        body = b"".join(calls)
        assert [int(body[i * 64:i * 64 + 8]) for i in range(2000)] == list(range(2000))
        assert len(calls) < 2000  # the server's 2000 writes were read in fewer pieces, each handed on once
        await client.close()

    run(test)


async def _raw_server(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    return head + await reader.readexactly(length)


def test_a_kept_connection_the_server_closed_is_replaced_without_an_error() -> None:
    """The server answers each request and closes the connection without saying so (as one whose
    keep-alive ran out does): the next request goes out on a new connection."""
    async def test() -> None:
        seen: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            seen.append(writer.get_extra_info("peername")[1])
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()

        server, url = await _raw_server(handle)
        client = HttpClient()
        for _ in range(3):
            resp = await client.request("POST", url, b"{}")
            assert await resp.read() == b"ok"
            await asyncio.sleep(0.1)  # the close arrives while the connection sits in the pool
        assert len(set(seen)) == 3
        await client.close()
        server.close()

    run(test)


def test_a_body_broken_off_or_gone_quiet_is_an_error_not_an_end() -> None:
    async def test() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            if b"/quiet" in request:
                await asyncio.sleep(5)
            writer.close()

        server, url = await _raw_server(handle)
        client = HttpClient()
        resp = await client.request("GET", url + "broken")
        with pytest.raises(Broken):
            await resp.read()
        got: list[bytes] = []
        resp = await client.request("GET", url + "quiet")
        with pytest.raises(Stalled):
            await resp.pipe(got.append, idle_timeout_s=0.3)
        assert got == [b"hello"]
        resp = await client.request("GET", url + "quiet")
        with pytest.raises(Stalled):
            async for _ in resp.chunks(0.3):
                pass
        await client.close()
        server.close()

    run(test)


def test_what_the_sink_raises_ends_the_pipe_and_drops_the_connection(server: Served) -> None:
    async def test() -> None:
        client = HttpClient()
        base = f"http://127.0.0.1:{server.port}"
        first = await _port_of(client, base + "/whoami")
        resp = await client.request("GET", base + "/stream?n=100000&size=64")

        def refuse(_chunk: bytes) -> None:
            raise ValueError("not this")

        with pytest.raises(ValueError, match="not this"):
            await resp.pipe(refuse, idle_timeout_s=5)
        # the stream's connection (the one /whoami used) is closed, not handed on mid-body
        assert await _port_of(client, base + "/whoami") != first
        await client.close()

    run(test)


def test_detached_stream_returns_its_connection_once_the_body_ends(server: Served) -> None:
    async def test() -> None:
        client = HttpClient()
        base = f"http://127.0.0.1:{server.port}"
        first = await _port_of(client, base + "/whoami")
        resp = await client.request("GET", base + "/stream?n=50&size=32")
        seen: list[bytes] = []

        def until_first(chunk: bytes) -> None:
            seen.append(chunk)
            resp.detach()  # as the relay does at [DONE]

        await resp.pipe(until_first, idle_timeout_s=5)
        assert seen
        await asyncio.sleep(0.1)
        assert await _port_of(client, base + "/whoami") == first
        await client.close()

    run(test)


def test_a_cancelled_pipe_closes_its_connection_and_the_server_sees_it(server: Served) -> None:
    async def test() -> None:
        client = HttpClient()
        before = server.state()["disconnects"]
        resp = await client.request("GET", f"http://127.0.0.1:{server.port}/hang")
        task = asyncio.ensure_future(resp.pipe(lambda _c: None, idle_timeout_s=30))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(50):
            if server.state()["disconnects"] > before:
                break
            await asyncio.sleep(0.05)
        assert server.state()["disconnects"] == before + 1
        await client.close()

    run(test)


def test_paused_reading_holds_the_server_back(server: Served) -> None:
    async def test() -> None:
        client = HttpClient()
        before = server.state()["paused"]
        resp = await client.request("GET", f"http://127.0.0.1:{server.port}/stream?n=65536&size=1024")
        got = bytearray()
        paused: list[bool] = []

        def take(chunk: bytes) -> None:
            got.extend(chunk)
            if len(got) >= (1 << 20) and not paused:
                paused.append(True)
                resp.pause_reading()
                asyncio.get_running_loop().call_later(1.0, resp.resume_reading)

        await resp.pipe(take, idle_timeout_s=10)
        assert len(got) == 65536 * 1024
        assert server.state()["paused"] > before  # the server's writer waited on us
        await client.close()

    run(test)


def test_socket_setup_is_applied_to_every_connection(server: Served) -> None:
    async def test() -> None:
        made: list[int] = []

        def setup(sock: socket.socket) -> None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            made.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))

        client = HttpClient(setup)
        await (await client.request("GET", f"http://127.0.0.1:{server.port}/hello")).read()
        assert made == [1]
        await client.close()

    run(test)
