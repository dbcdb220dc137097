"""The image config as a Dockerfile's instructions leave it: env, user, workdir, entrypoint, cmd, labels, ports.

:func:`evaluate` runs the instructions without touching a filesystem, so the
config (and every variable or syntax error) is known before the minutes of
building, and tests can check the Dockerfile's config on their own.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from . import debian
from .dockerfile import DockerfileError, Instruction, expand, pairs, words
from .oci import ImageConfig


@dataclass
class State:
    """What the instructions so far have set; ``apply`` one more."""

    path: str = "Dockerfile"
    base: debian.DebianBase | None = None
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    cmd_from_base: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)

    def apply(self, ins: Instruction) -> None:
        """Apply ``ins``'s effect on the config (RUN and COPY have none).

        Raises:
            DockerfileError: a bad value, naming the instruction's line.
        """
        try:
            self._apply(ins)
        except ValueError as exc:
            raise DockerfileError(self.path, ins.line, f"{ins.keyword}: {exc}") from None

    def _apply(self, ins: Instruction) -> None:
        kw = ins.keyword
        if kw == "FROM":
            split = words(ins.text, self.env)
            if len(split) != 1:
                raise ValueError("only FROM <image> is supported (no AS name, no --platform)")
            self.base = debian.parse_ref(split[0])
            # Debian's images set PATH and CMD ["bash"], nothing else.
            self.env, self.cmd, self.cmd_from_base = dict(debian.BASE_ENV), ["bash"], True
        elif kw == "ENV":
            self.env.update(pairs(ins.text, self.env, "ENV"))
        elif kw == "LABEL":
            self.labels.update(pairs(ins.text, self.env, "LABEL"))
        elif kw == "WORKDIR":
            self.workdir = posixpath.normpath(posixpath.join(self.workdir, expand(ins.text, self.env)))
        elif kw == "USER":
            self.user = expand(ins.text, self.env)
        elif kw == "ENTRYPOINT":
            self.entrypoint = ins.command() if ins.text else []
            if self.cmd_from_base:  # Docker: a new ENTRYPOINT drops the CMD inherited from the base image
                self.cmd, self.cmd_from_base = [], False
        elif kw == "CMD":
            self.cmd, self.cmd_from_base = (ins.command() if ins.text else []), False
        elif kw == "EXPOSE":
            for port in words(ins.text, self.env):
                number, _, proto = port.partition("/")
                if not number.isdigit() or proto not in ("", "tcp", "udp"):
                    raise ValueError(f"{port!r} is not PORT or PORT/tcp|udp")
                self.exposed_ports.append(f"{number}/{proto or 'tcp'}")

    def image_config(self) -> ImageConfig:
        """The image config these instructions produce."""
        return ImageConfig(user=self.user, env=[f"{k}={v}" for k, v in self.env.items()],
                           workdir=self.workdir, entrypoint=list(self.entrypoint), cmd=list(self.cmd),
                           labels=dict(self.labels), exposed_ports=sorted(set(self.exposed_ports)))


def evaluate(instructions: list[Instruction], path: str = "Dockerfile") -> State:
    """The state after all ``instructions`` (a dry run: no filesystem)."""
    state = State(path=path)
    for ins in instructions:
        state.apply(ins)
    return state
