"""Find the pipeline-file line that created an object (skipping our own frames)."""

from __future__ import annotations

import functools
import os
import sys

from .errors import SourceLocation

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def caller_location() -> SourceLocation | None:
    """The first stack frame outside the ``graph`` package (the user's line)."""
    frame = sys._getframe(1)
    while frame is not None:
        shown = _user_file(frame.f_code.co_filename)
        if shown is not None:
            return SourceLocation(shown, frame.f_lineno)
        frame = frame.f_back
    return None


@functools.lru_cache(maxsize=256)
def _user_file(co_filename: str) -> str | None:
    """The path to show for a frame's file, or None for our own, pydantic's and the interpreter's frames.

    Cached: a generated 10,000-node graph asks this 20,000 times for one file.
    The working directory is read once per file name, which is fine for a CLI run.
    """
    if co_filename.startswith("<"):  # <frozen abc> and the like: the interpreter's own frames
        return None
    filename = os.path.abspath(co_filename)
    if filename.startswith(_PACKAGE_DIR + os.sep) or "pydantic" in filename:
        return None
    return _display_path(filename)


def _display_path(path: str) -> str:
    """Relative to the working directory when below it, so messages stay short."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
