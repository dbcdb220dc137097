"""Find the pipeline-file line that created an object (skipping our own frames)."""

from __future__ import annotations

import os
import sys

from .errors import SourceLocation

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def caller_location() -> SourceLocation | None:
    """The first stack frame outside the ``graph`` package (the user's line)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR + os.sep) and "pydantic" not in filename:
            return SourceLocation(_display_path(filename), frame.f_lineno)
        frame = frame.f_back
    return None


def _display_path(path: str) -> str:
    """Relative to the working directory when below it, so messages stay short."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
