"""Run an ASGI app the same way in every process of ours."""

from __future__ import annotations

import logging
from typing import Any

from . import http_server


def serve(app: Any, host: str, port: int, name: str) -> None:
    """Serve until SIGINT/SIGTERM on our HTTP/1.1 server (in-flight requests get 5 s to finish)."""
    _log_as(name)
    http_server.run(app, [http_server.bind(host, port, name)], name)


def serve_with_websockets(app: Any, host: str, port: int, name: str) -> None:
    """Serve under uvicorn, for apps with websocket routes (ours does not speak websockets)."""
    import uvicorn

    _log_as(name)
    uvicorn.run(app, host=host, port=port, loop="uvloop", http="httptools", ws="websockets", access_log=False,
                log_level="warning", timeout_graceful_shutdown=5, backlog=2048)


def _log_as(name: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")
