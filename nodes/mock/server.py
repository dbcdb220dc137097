"""Start the mock: build the engine, bind its ports, serve them (:mod:`nodes.common.http_server`)."""

from __future__ import annotations

import logging
import sys

from ..common import http_server
from .app import MockApp
from .config import MockConfig, parse_args
from .engine import Engine
from .multinode import LeaderGate, ranks_from_env, run_worker
from .tokenizer import load_tokenizer

log = logging.getLogger("nodes.mock")


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
    """Serve until SIGINT/SIGTERM on --port (and --bootstrap-port); a rank other than 0 of a multi-host
    replica joins its leader instead."""
    logging.basicConfig(level=cfg.log_level.upper(), format=f"%(asctime)s {cfg.name} %(levelname)s %(message)s")
    ranks = ranks_from_env(cfg.nnodes, cfg.dist_port)
    if ranks is not None and not ranks.is_leader:
        run_worker(ranks, cfg.name)
    app = build_app(cfg)
    if ranks is not None:
        app.engine.gate = LeaderGate(ranks, cfg.host)
    hint = "pick another --port/--bootstrap-port"
    sockets = [http_server.bind(cfg.host, cfg.port, "nodes.mock", hint)]
    if cfg.bootstrap_port:
        sockets.append(http_server.bind(cfg.host, cfg.bootstrap_port, "nodes.mock", hint))
    ports = f"{cfg.port}" + (f" (+ bootstrap {cfg.bootstrap_port})" if cfg.bootstrap_port else "")
    print(f"nodes.mock {cfg.name}: {cfg.role} imitating {cfg.imitate}, model {cfg.model_name}, "
          f"http://{cfg.host}:{ports}", file=sys.stderr, flush=True)
    http_server.run(app, sockets, cfg.name, graceful_s=3)


def main(argv: list[str] | None = None) -> None:
    """``python -m nodes.mock``."""
    run(parse_args(argv))
