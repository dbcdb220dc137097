"""Run an ASGI app under uvicorn the same way in every process of ours."""

from __future__ import annotations

import logging
from typing import Any


def serve(app: Any, host: str, port: int, name: str) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn finishes in-flight requests first)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    loop = "uvloop"
    http = "httptools"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401
    except ImportError:
        http = "h11"
    uvicorn.run(
        app, host=host, port=port, loop=loop, http=http, access_log=False, log_level="warning",
        timeout_graceful_shutdown=5, backlog=2048,
    )
