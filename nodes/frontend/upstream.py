"""Pooled, long-lived HTTP clients to the engines (aiohttp: measured 8x faster than httpx here)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import aiohttp
import orjson


#: Request fields that carry one stage's hand-off to the next. The frontend writes them itself (from an
#: encoder's or prefill's answer), so an engine that rejects them reports a failure between two servers
#: (a prefill restarted and lost its KV, an encoder evicted its embeddings), never a client's mistake.
HANDOFF_FIELDS = ("kv_transfer_params", "ec_transfer_params", "disaggregated_params", "bootstrap_room")


class UpstreamError(Exception):
    """An engine could not be reached, failed, or missed its deadline."""

    def __init__(self, service: str, message: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status
        self.body = body

    @property
    def server_side(self) -> bool:
        """The failure is the graph's, not the client's: unreachable, a 5xx, or a rejected hand-off."""
        return self.status is None or self.status >= 500 or rejected_handoff(self.body)


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
    """One aiohttp session for the whole process: keep-alive connections to every engine."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(
            connector=connector, json_serialize=lambda o: orjson.dumps(o).decode(), auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "UpstreamPool.start() not called"
        return self._session

    async def post(self, service: str, url: str, body: dict, timeout_s: float) -> Reply:
        """POST JSON and read the whole answer within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self.session.post(url, data=orjson.dumps(body), headers=_JSON) as resp:
                    return Reply(resp.status, await resp.read())
        except TimeoutError:
            raise UpstreamError(service, f"no answer within {timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(service, f"unreachable ({type(exc).__name__}: {exc})") from None

    async def stream(self, service: str, url: str, body: dict, timeout_s: float) -> "Streamed":
        """POST JSON and return the open response for streaming; errors while opening raise."""
        try:
            async with asyncio.timeout(timeout_s):
                resp = await self.session.post(url, data=orjson.dumps(body), headers=_JSON)
        except TimeoutError:
            raise UpstreamError(service, f"no answer within {timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(service, f"unreachable ({type(exc).__name__}: {exc})") from None
        if resp.status != 200:
            body_bytes = await resp.read()
            resp.release()
            raise UpstreamError(service, f"HTTP {resp.status}", resp.status, body_bytes)
        return Streamed(service, resp)


_JSON = {"Content-Type": "application/json"}


class Streamed:
    """An open streaming response; iterate its raw bytes, always close it."""

    def __init__(self, service: str, resp: aiohttp.ClientResponse) -> None:
        self.service = service
        self._resp = resp
        self._on_close: list[Callable[[], None]] = []

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once when the stream is closed."""
        self._on_close.append(callback)

    async def chunks(self, idle_timeout_s: float) -> AsyncIterator[bytes]:
        """Raw bytes as they arrive; a gap longer than ``idle_timeout_s`` is an error."""
        content = self._resp.content
        try:
            while True:
                try:
                    async with asyncio.timeout(idle_timeout_s):
                        chunk = await content.readany()
                except TimeoutError:
                    raise UpstreamError(self.service, f"stream stalled for {idle_timeout_s:g} s") from None
                except aiohttp.ClientError as exc:
                    raise UpstreamError(self.service, f"stream broken ({type(exc).__name__})") from None
                if not chunk:
                    return
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._resp.close()
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()
