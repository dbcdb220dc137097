"""Is a service ready? One HTTP GET, no client library (it runs many times a second)."""

from __future__ import annotations

import asyncio


async def probe(host: str, port: int, path: str, timeout_s: float = 2.0) -> int | None:
    """The HTTP status of ``GET http://host:port/path``, or None if nothing answered."""
    try:
        return await asyncio.wait_for(_get_status(host, port, path), timeout_s)
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return None


async def _get_status(host: str, port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
