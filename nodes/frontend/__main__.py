"""``python -m nodes.frontend --config frontend-0.json --name frontend-0``."""

from __future__ import annotations

import sys

from graph.plan import FrontendConfig

from ..common.config import service_args
from ..common.serve import serve


def main(argv: list[str] | None = None) -> int:
    args = service_args("python -m nodes.frontend", __doc__, FrontendConfig, "frontend", argv)
    from .app import create_app

    serve(create_app(args.config), args.config.host, args.port, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
