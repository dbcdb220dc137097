"""``python -m nodes.processor --config processor-0.json --name processor-0``."""

from __future__ import annotations

import argparse
import sys

from graph.plan import ProcessorConfig

from ..common.config import ConfigError, load_config
from ..common.serve import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.processor")
    parser.add_argument("--config", required=True, help="the processor's config slice (JSON)")
    parser.add_argument("--name", default="processor", help="service name, for logs")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, ProcessorConfig)
    except ConfigError as exc:
        print(f"{args.name}: {exc}", file=sys.stderr)
        return 2
    from .app import create_app

    serve(create_app(config), config.host, config.port, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
