"""Start the mock: build the engine, bind its ports, run uvicorn (uvloop + httptools when present)."""

from __future__ import annotations

import logging
import socket
import sys

from .app import MockApp
from .config import MockConfig, parse_args
from .engine import Engine
from .tokenizer import load_tokenizer

log = logging.getLogger("nodes.mock")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"nodes.mock: cannot listen on {host}:{port}: {exc.strerror} "
                         "(another process holds the port? pick another --port/--bootstrap-port)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def build_app(cfg: MockConfig) -> MockApp:
    """The ASGI app for ``cfg`` (loads the tokenizer).

    Raises:
        SystemExit: the tokenizer cannot be loaded.
    """
    try:
        tokenizer = load_tokenizer(cfg.tokenizer)
    except ValueError as exc:
        raise SystemExit(f"nodes.mock: {exc}") from None
    return MockApp(Engine(cfg, tokenizer))


def run(cfg: MockConfig) -> None:
    """Serve until SIGINT/SIGTERM on --port (and --bootstrap-port)."""
    import uvicorn

    logging.basicConfig(level=cfg.log_level.upper(), format=f"%(asctime)s {cfg.name} %(levelname)s %(message)s")
    app = build_app(cfg)
    sockets = [_bind(cfg.host, cfg.port)]
    if cfg.bootstrap_port:
        sockets.append(_bind(cfg.host, cfg.bootstrap_port))
    loop, http = "asyncio", "h11"
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        pass
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        pass
    config = uvicorn.Config(app, loop=loop, http=http, lifespan="on", access_log=False,
                            log_level=cfg.log_level, timeout_graceful_shutdown=3, backlog=2048)
    server = uvicorn.Server(config)
    ports = f"{cfg.port}" + (f" (+ bootstrap {cfg.bootstrap_port})" if cfg.bootstrap_port else "")
    print(f"nodes.mock {cfg.name}: {cfg.role} imitating {cfg.imitate}, model {cfg.model_name}, "
          f"http://{cfg.host}:{ports}", file=sys.stderr, flush=True)
    server.run(sockets=sockets)


def main(argv: list[str] | None = None) -> None:
    """``python -m nodes.mock``."""
    run(parse_args(argv))
