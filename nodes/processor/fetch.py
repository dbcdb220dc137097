"""Fetch media from data: and http(s) URLs under limits, refusing private addresses unless allowed.

The address check happens twice on purpose: :func:`fetch_url` checks every URL
(the first and each redirect target) before connecting, for a clear message,
and :class:`PublicResolver` checks the addresses aiohttp actually connects to,
so a DNS name that answers differently the second time (DNS rebinding) is
still refused.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from .errors import refuse

_MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class FetchLimits:
    """Bounds on one download."""

    max_bytes: int
    timeout_s: float
    allow_private: bool


class PrivateAddressError(OSError):
    """A host resolved to a loopback, private, link-local or otherwise non-public address."""


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP literal) is globally routable; IPv4-mapped IPv6 is judged as IPv4."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PublicResolver(AbstractResolver):
    """aiohttp resolver that refuses any host with a non-public address."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not is_public(result["host"]):
                raise PrivateAddressError(f"media host '{host}' resolves to a non-public address ({result['host']})")
        return results

    async def close(self) -> None:
        await self._inner.close()


def make_session(limits: FetchLimits) -> aiohttp.ClientSession:
    """The processor's one download session (no proxies from the environment, no cookies kept)."""
    connector: dict[str, Any] = {"limit": 64}
    if not limits.allow_private:
        connector["resolver"] = PublicResolver()
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(**connector),
        timeout=aiohttp.ClientTimeout(total=limits.timeout_s),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


def too_large(limit: int, param: str) -> Exception:
    """The 413 for media over the byte limit."""
    return refuse(param, f"media is larger than the limit of {limit} bytes; raise Processor(max_bytes=...) "
                         "to accept it", 413)


def decode_base64(payload: str, max_bytes: int, param: str) -> bytes:
    """Strict base64 -> bytes, refusing oversize payloads before decoding them."""
    if len(payload) > 4 * ((max_bytes + 2) // 3) + 4:
        raise too_large(max_bytes, param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise refuse(param, "payload is not valid base64") from None
    if len(data) > max_bytes:
        raise too_large(max_bytes, param)
    return data


def split_data_url(url: str, param: str) -> tuple[str, str]:
    """``data:<mime>;base64,<payload>`` -> (mime, payload), payload still base64."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:"):
        raise refuse(param, "malformed data URL: expected data:<mime>;base64,<payload>")
    if ";base64" not in header:
        raise refuse(param, "data URL must be base64-encoded (data:<mime>;base64,<payload>)")
    return header[5:].split(";")[0].lower() or "application/octet-stream", payload


def decode_data_url(url: str, limits: FetchLimits, param: str) -> tuple[bytes, str]:
    """``data:<mime>;base64,<payload>`` -> (bytes, mime)."""
    mime, payload = split_data_url(url, param)
    return decode_base64(payload, limits.max_bytes, param), mime


async def fetch_url(session: aiohttp.ClientSession, url: str, limits: FetchLimits, param: str) -> tuple[bytes, str]:
    """Download ``url`` within the byte and time limits; each redirect target is re-checked.

    Returns:
        (body, content type without parameters).

    Raises:
        RequestError: 400 for a refused host, a failed or slow download, 413 for oversize media.
    """
    try:
        async with asyncio.timeout(limits.timeout_s):
            for _ in range(_MAX_REDIRECTS + 1):
                await _check_host(url, limits, param)
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise refuse(param, f"fetching media failed: HTTP {resp.status} from {_host(url)}")
                    if resp.content_length is not None and resp.content_length > limits.max_bytes:
                        raise too_large(limits.max_bytes, param)
                    data = bytearray()
                    async for chunk in resp.content.iter_chunked(65536):
                        data += chunk
                        if len(data) > limits.max_bytes:
                            raise too_large(limits.max_bytes, param)
                    mime = resp.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip().lower()
                    return bytes(data), mime
            raise refuse(param, f"too many redirects (more than {_MAX_REDIRECTS})")
    except TimeoutError:
        raise refuse(param, f"fetching media took longer than {limits.timeout_s:g} s "
                            "(Processor(fetch_timeout_s=...))") from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, PrivateAddressError):
            raise refuse(param, f"{exc.os_error}; set Processor(allow_private_urls=True) to allow it") from None
        raise refuse(param, f"fetching media failed: cannot connect to {_host(url)}") from None
    except (aiohttp.ClientError, ValueError) as exc:
        raise refuse(param, f"fetching media failed: {type(exc).__name__}") from None


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


async def _check_host(url: str, limits: FetchLimits, param: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse(param, "media URL is malformed") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse(param, f"media URL must be http(s) or data:, not '{parts.scheme}:'")
    if limits.allow_private:
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(parts.hostname, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise refuse(param, f"cannot resolve media host '{parts.hostname}'") from None
    for info in infos:
        if not is_public(str(info[4][0])):
            raise refuse(param, f"media host '{parts.hostname}' resolves to a non-public address ({info[4][0]}); "
                                "set Processor(allow_private_urls=True) to allow it")
