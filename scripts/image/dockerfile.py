"""Read a Dockerfile into instructions: the subset that ``scripts/build-image.sh`` executes.

Parsing follows Docker's Dockerfile reference: parser directives at the top,
``\\`` line continuations, comment lines (also inside a continued instruction),
the JSON (exec) form of RUN, CMD and ENTRYPOINT, and ``$VAR`` / ``${VAR}`` /
``${VAR:-default}`` / ``${VAR:+alt}`` substitution (the environment as it was
before the instruction) in FROM, ENV, LABEL, WORKDIR, USER, COPY and EXPOSE.
Whatever else a Dockerfile may hold is refused here, with its line, so the
daemonless build never silently differs from ``docker build``.
"""

from __future__ import annotations

import json
import pathlib
import re
from dataclasses import dataclass, field

#: Instructions the builder executes; every other one is refused with the reason in _REFUSED.
SUPPORTED = ("FROM", "RUN", "COPY", "ENV", "WORKDIR", "USER", "LABEL", "ENTRYPOINT", "CMD", "EXPOSE")

_REFUSED = {
    "ADD": "ADD fetches URLs and unpacks archives; use COPY for files of the build context",
    "ARG": "build arguments are not supported; write the value in the instruction (or in ENV)",
    "VOLUME": "VOLUME is not supported; mount volumes at run time (Kubernetes emptyDir, docker run -v)",
    "HEALTHCHECK": "HEALTHCHECK is not supported; Kubernetes probes check health",
    "ONBUILD": "ONBUILD is not supported",
    "SHELL": "SHELL is not supported; RUN uses /bin/sh -c",
    "STOPSIGNAL": "STOPSIGNAL is not supported; the entrypoint handles SIGTERM",
    "MAINTAINER": "MAINTAINER is not supported; use LABEL org.opencontainers.image.authors=...",
}

_CONTINUED = re.compile(r"\\[ \t]*$")
_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::([-+])(.*))?", re.S)


class DockerfileError(Exception):
    """A Dockerfile the builder cannot execute faithfully; names the file and line."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case), the text after it, its first line and its --flags."""

    keyword: str
    text: str
    line: int
    flags: dict[str, str] = field(default_factory=dict)

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form RUN/CMD/ENTRYPOINT, or None for the shell form."""
        if not self.text.startswith("["):
            return None
        try:
            value = json.loads(self.text)
        except ValueError:
            return None  # Docker too treats a malformed array as the shell form
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None

    def command(self) -> list[str]:
        """RUN/CMD/ENTRYPOINT as argv: the exec form as written, the shell form under /bin/sh -c."""
        exec_form = self.exec_form()
        return exec_form if exec_form is not None else ["/bin/sh", "-c", self.text]


def read(path: str | pathlib.Path) -> list[Instruction]:
    """Parse the Dockerfile at ``path``.

    Raises:
        DockerfileError: an unsupported instruction, flag, directive or syntax, by line.
    """
    return parse(pathlib.Path(path).read_text(encoding="utf-8"), str(path))


def parse(text: str, path: str = "Dockerfile") -> list[Instruction]:
    """Parse Dockerfile ``text`` (``path`` only names it in errors)."""
    lines = text.splitlines()
    start = _directives(lines, path)
    out: list[Instruction] = []
    i = start
    while i < len(lines):
        first = i
        stripped = lines[i].strip()
        i += 1
        if not stripped or stripped.startswith("#"):
            continue
        # As BuildKit joins a continued instruction: the backslash (and blanks after it) goes, the rest stays.
        text = lines[first].strip()
        while _CONTINUED.search(text):
            text = _CONTINUED.sub("", text)
            while i < len(lines) and (not lines[i].strip() or lines[i].strip().startswith("#")):
                i += 1  # comment and empty lines inside a continued instruction are dropped, as Docker does
            if i >= len(lines):
                break
            text += lines[i].rstrip()
            i += 1
        out.append(_instruction(text.strip(), first + 1, path))
    if not out or out[0].keyword != "FROM":
        raise DockerfileError(path, out[0].line if out else 1, "the first instruction must be FROM")
    extra = [ins for ins in out[1:] if ins.keyword == "FROM"]
    if extra:
        raise DockerfileError(path, extra[0].line, "multi-stage builds (a second FROM) are not supported")
    return out


def _directives(lines: list[str], path: str) -> int:
    """Check the parser directives at the top; returns the index of the first line after them."""
    for i, line in enumerate(lines):
        match = _DIRECTIVE.match(line.strip())
        if not match:
            return i
        name, value = match.group(1).lower(), match.group(2)
        if name == "escape" and value != "\\":
            raise DockerfileError(path, i + 1, f"escape={value}: only the default escape character \\ is supported")
        if name not in ("syntax", "escape", "check"):
            return i  # an unknown directive is a comment, and ends the directives
    return len(lines)


def _instruction(text: str, line: int, path: str) -> Instruction:
    keyword, _, rest = text.partition(" ")
    keyword, rest = keyword.upper(), rest.strip()
    if keyword in _REFUSED:
        raise DockerfileError(path, line, _REFUSED[keyword])
    if keyword not in SUPPORTED:
        raise DockerfileError(path, line, f"unknown instruction {keyword}")
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    allowed = {"COPY": {"chown"}}.get(keyword, set())
    unknown = sorted(set(flags) - allowed)
    if unknown:
        raise DockerfileError(path, line, f"{keyword} --{unknown[0]} is not supported"
                              + (" (BuildKit-only mounts and networks)" if keyword == "RUN" else ""))
    if keyword in ("RUN", "COPY") and re.search(r"<<-?\s*[\"']?[A-Za-z_]", rest):
        raise DockerfileError(path, line, f"{keyword} with a heredoc (<<) is not supported; write the commands inline")
    if not rest and keyword not in ("CMD", "ENTRYPOINT"):
        raise DockerfileError(path, line, f"{keyword} needs arguments")
    return Instruction(keyword, rest, line, flags)


def words(text: str, env: dict[str, str]) -> list[str]:
    """Split ``text`` into words as Docker does: quotes group, backslash escapes, ``$VAR`` expands from ``env``.

    Raises:
        ValueError: an unterminated quote or ``${``.
    """
    out: list[str] = []
    current: list[str] = []
    started = False
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                current.append(c)
        elif c == "\\" and i + 1 < len(text) and (not quote or text[i + 1] in '"\\$'):
            i += 1
            current.append(text[i])
            started = True
        elif c == "$":
            value, i = _expand_at(text, i, env)
            current.append(value)
            started = True
        elif quote == '"':
            if c == '"':
                quote = ""
            else:
                current.append(c)
        elif c in "'\"":
            quote, started = c, True
        elif c.isspace():
            if started:
                out.append("".join(current))
            current, started = [], False
        else:
            current.append(c)
            started = True
        i += 1
    if quote:
        raise ValueError(f"unterminated {quote} quote")
    if started:
        out.append("".join(current))
    return out


def expand(text: str, env: dict[str, str]) -> str:
    """``text`` with its variables expanded and its quotes removed, as one word (WORKDIR, USER)."""
    return " ".join(words(text, env))


def pairs(text: str, env: dict[str, str], keyword: str) -> list[tuple[str, str]]:
    """KEY=VALUE pairs of ENV and LABEL (and ENV's old ``KEY VALUE`` form).

    Raises:
        ValueError: a word without ``=`` (LABEL), or an empty key.
    """
    split = words(text, env)
    if keyword == "ENV" and split and "=" not in split[0]:
        return [(split[0], " ".join(split[1:]))]
    out = []
    for word in split:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ValueError(f"{keyword} wants KEY=VALUE pairs, got {word!r}")
        out.append((key, value))
    return out


def _expand_at(text: str, i: int, env: dict[str, str]) -> tuple[str, int]:
    """Expand the ``$`` at ``text[i]``; returns the value and the index of the last character used."""
    if text.startswith("${", i):
        end = text.find("}", i)
        if end < 0:
            raise ValueError("unterminated ${")
        body = text[i + 2:end]
        match = _BRACED.fullmatch(body)
        if not match:
            raise ValueError(f"${{{body}}}: only ${{VAR}}, ${{VAR:-default}} and ${{VAR:+alt}} are supported")
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = env.get(name, "")
        if op == "-":
            value = value or arg
        elif op == "+":
            value = arg if value else ""
        return value, end
    match = _VARIABLE.match(text, i + 1)
    if not match:
        return "$", i
    return env.get(match.group(0), ""), match.end() - 1
