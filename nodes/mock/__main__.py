"""``python -m nodes.mock --help``."""

from .server import main

main()
