"""Pooled, long-lived HTTP connections to the engines (our HTTP/1.1 client, :mod:`nodes.common.http_client`).

A replica whose host died (power, network: no TCP reset comes back) would hold
every request sent to it until the stage's deadline. So upstream sockets use TCP
keepalive and ``TCP_USER_TIMEOUT``: an open connection to a dead host breaks
after about :data:`DEAD_PEER_S` (a stream then migrates, a request fails over),
and a new one gives up connecting after as long.
"""

from __future__ import annotations

import asyncio
import math
import socket
from dataclasses import dataclass
from typing import Callable

import aiohttp
import orjson

from ..common.http_client import HttpClient, HttpClientError, Response, Stalled


#: Request fields that carry one stage's hand-off to the next. The frontend writes them itself (from an
#: encoder's or prefill's answer), so an engine that rejects them reports a failure between two servers
#: (a prefill restarted and lost its KV, an encoder evicted its embeddings), never a client's mistake.
HANDOFF_FIELDS = ("kv_transfer_params", "ec_transfer_params", "disaggregated_params", "bootstrap_room")

#: Seconds after which a connection to a host that stopped answering counts as broken (keepalive
#: probes after 2 s of silence, 1 s apart; unacknowledged data for this long), and the longest
#: wait to connect. A slow engine is not a dead host: its kernel still answers the probes.
DEAD_PEER_S = 5


class UpstreamError(Exception):
    """An engine could not be reached, failed, or missed its deadline."""

    def __init__(self, service: str, message: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status
        self.body = body

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Extra headers for the client's error response."""
        return []

    @property
    def server_side(self) -> bool:
        """The failure is the graph's, not the client's: unreachable, a 5xx, or a rejected hand-off."""
        return self.status is None or self.status >= 500 or rejected_handoff(self.body)


class Unavailable(UpstreamError):
    """Every replica of a stage sits out after failing to answer: the request fails at once (503
    with Retry-After) rather than waiting on replicas that are down."""

    def __init__(self, stage: str, down: list[str], retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        self.retry_after = max(1, math.ceil(retry_after_s))
        super().__init__(stage, f"no replica can take a request now ({', '.join(down)} could not be reached and "
                         f"{'is' if len(down) == 1 else 'are'} tried again shortly); retry in "
                         f"{self.retry_after} s", 503)

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after).encode())]


def rejected_handoff(body: bytes) -> str | None:
    """The hand-off field an engine's 4xx error body names as its ``param``, if any."""
    if b"_params" not in body and b"bootstrap_room" not in body:
        return None
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    param = error.get("param") if isinstance(error, dict) else None
    if isinstance(param, str):
        return next((f for f in HANDOFF_FIELDS if param == f or param.startswith(f + ".")), None)
    return None


@dataclass
class Reply:
    """A complete upstream answer."""

    status: int
    body: bytes

    def json(self) -> dict:
        """The body parsed (``{}`` when it is not a JSON object)."""
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}


class UpstreamPool:
    """Keep-alive connections to every engine (our HTTP/1.1 client), and an aiohttp session for
    the websockets to nodes of the user's own."""

    def __init__(self) -> None:
        self._client: HttpClient | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._client = HttpClient(_detect_dead_peer, connect_timeout_s=DEAD_PEER_S)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """An aiohttp session, made on first use (websockets)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4, socket_factory=_aiohttp_socket)
            self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",),
                                                  timeout=aiohttp.ClientTimeout(total=None, sock_connect=DEAD_PEER_S))
        return self._session

    async def _open(self, service: str, method: str, url: str, body: bytes, timeout_s: float) -> Response:
        assert self._client is not None, "UpstreamPool.start() not called"
        try:
            async with asyncio.timeout(timeout_s):
                return await self._client.request(method, url, body, _JSON if body else ())
        except TimeoutError:
            raise UpstreamError(service, f"no answer within {timeout_s:g} s") from None
        except HttpClientError as exc:
            raise UpstreamError(service, f"unreachable ({exc})") from None

    async def post(self, service: str, url: str, body: dict, timeout_s: float) -> Reply:
        """POST JSON and read the whole answer within ``timeout_s``."""
        return await self._whole(service, "POST", url, orjson.dumps(body), timeout_s)

    async def get(self, service: str, url: str, timeout_s: float) -> Reply:
        """GET and read the whole answer within ``timeout_s``."""
        return await self._whole(service, "GET", url, b"", timeout_s)

    async def _whole(self, service: str, method: str, url: str, body: bytes, timeout_s: float) -> Reply:
        deadline = asyncio.get_running_loop().time() + timeout_s
        resp = await self._open(service, method, url, body, timeout_s)
        try:
            async with asyncio.timeout_at(deadline):
                return Reply(resp.status, await resp.read())
        except TimeoutError:
            raise UpstreamError(service, f"no answer within {timeout_s:g} s") from None
        except HttpClientError as exc:
            raise UpstreamError(service, f"answer broken off ({exc})") from None
        finally:
            resp.close()

    async def stream(self, service: str, url: str, body: dict, timeout_s: float) -> "Streamed":
        """POST JSON and return the open response for streaming; errors while opening raise."""
        resp = await self._open(service, "POST", url, orjson.dumps(body), timeout_s)
        if resp.status != 200:
            try:
                async with asyncio.timeout(timeout_s):
                    body_bytes = await resp.read()
            except (TimeoutError, HttpClientError):
                body_bytes = b""
            finally:
                resp.close()
            raise UpstreamError(service, f"HTTP {resp.status}", resp.status, body_bytes)
        return Streamed(service, resp)


_JSON = (("content-type", "application/json"),)


def _detect_dead_peer(sock: socket.socket) -> None:
    """Socket options that notice a dead peer within about :data:`DEAD_PEER_S` (Linux, where present)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", DEAD_PEER_S - 2),
                        ("TCP_USER_TIMEOUT", DEAD_PEER_S * 1000)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def _aiohttp_socket(addr_info: tuple) -> socket.socket:
    family, type_, proto = addr_info[:3]
    sock = socket.socket(family=family, type=type_, proto=proto)
    _detect_dead_peer(sock)
    return sock


class Streamed:
    """An open streaming response: pipe its raw bytes; always close or finish it."""

    def __init__(self, service: str, resp: Response) -> None:
        self.service = service
        self._resp = resp
        self._on_close: list[Callable[[], None]] = []

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once when the stream is closed or finished."""
        self._on_close.append(callback)

    async def pipe(self, on_data: Callable[[bytes], None], idle_timeout_s: float) -> None:
        """Hand each chunk to ``on_data`` as it arrives, until the body ends; raises what ``on_data``
        raised, or UpstreamError when the stream breaks or stays silent for ``idle_timeout_s``."""
        try:
            await self._resp.pipe(on_data, idle_timeout_s)
        except Stalled:
            raise UpstreamError(self.service, f"stream stalled for {idle_timeout_s:g} s") from None
        except HttpClientError as exc:
            raise UpstreamError(self.service, f"stream broken ({exc})") from None

    def pause_reading(self) -> None:
        self._resp.pause_reading()

    def resume_reading(self) -> None:
        self._resp.resume_reading()

    def finish(self) -> None:
        """The stream said all it had to ([DONE]): its connection is reused once the body ends."""
        self._resp.detach()
        self._closed()

    def close(self) -> None:
        self._resp.close()
        self._closed()

    def _closed(self) -> None:
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()
