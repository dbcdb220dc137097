"""The build context as ``docker build`` sees it: the folder minus what ``.dockerignore`` excludes.

Matching follows Docker's rules (moby/patternmatcher): patterns are cleaned
paths relative to the context root; ``*`` and ``?`` stay within one path
element, ``**`` spans any number of them; a path is excluded when the last
pattern matching it or one of its parent folders is not a ``!`` exception.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class _Pattern:
    text: str
    regex: re.Pattern[str]
    exception: bool

    def matches(self, rel: str) -> bool:
        """Whether the pattern matches ``rel`` or one of its parent folders."""
        if self.regex.match(rel):
            return True
        parts = rel.split("/")
        return any(self.regex.match("/".join(parts[:n])) for n in range(1, len(parts)))


class BuildContext:
    """Files of a build context folder that COPY may use.

    Args:
        root: the context folder; its ``.dockerignore`` (if any) is read.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(root)
        path = os.path.join(self.root, ".dockerignore")
        lines = open(path, encoding="utf-8").read().splitlines() if os.path.exists(path) else []
        self.patterns = [p for p in (_compile(line) for line in lines) if p is not None]

    def excluded(self, rel: str) -> bool:
        """Whether the context-relative path ``rel`` (``/``-separated) is left out of the context."""
        out = False
        for pattern in self.patterns:
            if pattern.matches(rel):
                out = not pattern.exception
        return out

    def resolve(self, source: str) -> str:
        """The context-relative path of a COPY source (``.`` for the root).

        Raises:
            ValueError: the source leaves the context, is excluded, or does not exist.
        """
        rel = posixpath.normpath(source.lstrip("/")) if source not in ("", ".", "./") else "."
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"COPY source {source!r} is outside the build context")
        if rel != "." and self.excluded(rel) and not self._exception_below(rel):
            raise ValueError(f"COPY source {source!r} is excluded by .dockerignore")
        if not os.path.lexists(os.path.join(self.root, rel)):
            raise ValueError(f"COPY source {source!r} does not exist in the build context")
        return rel

    def walk(self, rel: str) -> Iterator[str]:
        """Context-relative paths under ``rel`` (itself included) that are in the context, parents first."""
        top = os.path.join(self.root, rel)
        if not os.path.isdir(top) or os.path.islink(top):
            if rel == "." or not self.excluded(rel):
                yield rel
            return
        for folder, dirs, files in os.walk(top):
            here = os.path.relpath(folder, self.root).replace(os.sep, "/")
            if here == "." or not self.excluded(here):
                yield here
            dirs[:] = sorted(d for d in dirs if not self._prunable(_join(here, d)))
            for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(folder, d))):
                path = _join(here, name)
                if not self.excluded(path):
                    yield path

    def digest(self, *extra: str) -> str:
        """sha256 over the whole context (paths, modes, contents, link targets) and the ``extra`` files."""
        h = hashlib.sha256()
        for rel in [*self.walk("."), *extra]:
            path = os.path.join(self.root, rel)
            st = os.lstat(path)
            h.update(f"{rel}\0{st.st_mode:o}\0".encode())
            if os.path.islink(path):
                h.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            h.update(b"\0")
        return h.hexdigest()

    def _prunable(self, rel: str) -> bool:
        """An excluded folder no exception pattern can reach into: not walked at all (.venv, .git)."""
        return self.excluded(rel) and not self._exception_below(rel)

    def _exception_below(self, rel: str) -> bool:
        for pattern in self.patterns:
            if pattern.exception:
                literal = re.split(r"[*?\[\\]", pattern.text, maxsplit=1)[0]
                if literal.startswith(rel + "/") or (rel + "/").startswith(literal):
                    return True
        return False


def _join(folder: str, name: str) -> str:
    return name if folder == "." else f"{folder}/{name}"


def _compile(line: str) -> _Pattern | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    exception = text.startswith("!")
    text = posixpath.normpath(text[1:].strip() if exception else text).lstrip("/")
    return _Pattern(text, re.compile(_regex(text)), exception)


def _regex(pattern: str) -> str:
    out = ["^"]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return "".join(out)
