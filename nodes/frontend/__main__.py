"""``python -m nodes.frontend --config frontend-0.json --name frontend-0``."""

from __future__ import annotations

import argparse
import sys

from graph.plan import FrontendConfig

from ..common.config import ConfigError, load_config
from ..common.serve import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.frontend", description=__doc__)
    parser.add_argument("--config", required=True, help="the frontend's config slice (JSON)")
    parser.add_argument("--name", default="frontend", help="service name, for logs")
    parser.add_argument("--port", type=int, default=None, help="override the config's port")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, FrontendConfig)
    except ConfigError as exc:
        print(f"{args.name}: {exc}", file=sys.stderr)
        return 2
    from .app import create_app

    serve(create_app(config), config.host, args.port or config.port, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
