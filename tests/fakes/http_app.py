"""A small ASGI app served by nodes.common.http_server, for its tests and the client's.

``python -m tests.fakes.http_app PORT [KEEP_ALIVE_S]``. Routes (what each test needs of a server):
GET /hello (sized body), POST /echo (the request body back, chunked), GET /whoami (the
client's port: which connection a request came on), GET /stream?n=N&size=B (N writes
through the DirectBody, waiting whenever it is paused), GET /wait?s=S (answers after S
seconds), GET /hang (starts a stream and never writes: the client must go away),
GET /boom (raises), GET /nostart (returns without answering), GET /state (what the
app saw: disconnects, pauses).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any
from urllib.parse import parse_qs

import orjson

from nodes.common import http_cycle, http_server

STATE: dict[str, Any] = {"disconnects": 0, "paused": 0, "streams_done": 0, "lifespan": []}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            STATE["lifespan"].append(msg["type"])
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/hello":
        await _send(send, 200, b"hello", [(b"content-length", b"5"), (b"content-type", b"text/plain")])
    elif path == "/echo":
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/whoami":
        await _send(send, 200, orjson.dumps({"port": scope["client"][1]}), [])
    elif path == "/stream":
        await _stream(scope, receive, send, int(query.get("n", "10")), int(query.get("size", "16")))
    elif path == "/wait":
        await asyncio.sleep(float(query.get("s", "1")))
        await _send(send, 200, b"waited", [])
    elif path == "/hang":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        msg = await receive()
        while msg["type"] != "http.disconnect":
            msg = await receive()
        STATE["disconnects"] += 1
    elif path == "/boom":
        raise RuntimeError("boom")
    elif path == "/nostart":
        return
    elif path == "/state":
        await _send(send, 200, orjson.dumps(STATE), [])
    else:
        await _send(send, 404, b"no such route", [])


async def _send(send: Any, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stream(scope: dict[str, Any], receive: Any, send: Any, n: int, size: int) -> None:
    body = scope["extensions"]["servegraph.body"]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for i in range(n):
        if body.gone:
            STATE["disconnects"] += 1
            return
        body.write(b"%08d" % i + b"x" * (size - 8))
        if body.paused:
            STATE["paused"] += 1
            await http_cycle.resumed(body)
        elif i % 64 == 63:
            await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    STATE["streams_done"] += 1


if __name__ == "__main__":
    port = int(sys.argv[1])
    keep_alive_s = float(sys.argv[2]) if len(sys.argv) > 2 else http_server.KEEP_ALIVE_S
    http_server.run(app, [http_server.bind("127.0.0.1", port, "http_app")], "http_app", graceful_s=3,
                    keep_alive_s=keep_alive_s)
