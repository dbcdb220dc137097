"""``python -m nodes.custom --config guard-0.json --name guard-0``: serve a node of your own."""

from __future__ import annotations

import os
import sys

from graph.plan import UserNodeConfig

from ..common.config import service_args
from ..common.serve import serve, serve_with_websockets
from .loader import LoadError, load_node


def main(argv: list[str] | None = None) -> int:
    args = service_args("python -m nodes.custom", __doc__, UserNodeConfig, "node", argv)
    config = args.config
    code = os.path.join(os.path.dirname(os.path.abspath(args.config_path)), config.file)
    try:
        node = load_node(code, config.qualname, config.settings, config.kind)
    except LoadError as exc:
        print(f"{args.name}: {exc}", file=sys.stderr)
        return 2
    from .app import NodeApp

    # A response node streams over websockets, which only uvicorn serves here; a request node is plain HTTP.
    run = serve_with_websockets if config.kind == "response" else serve
    run(NodeApp(node, config.node), config.host, args.port, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
