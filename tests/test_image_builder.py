"""The daemonless image builder's pure parts: Dockerfile parsing, the image config, .dockerignore, in-root paths.

Fast, no root and no tools needed; tests/test_e2e_image.py builds and runs the real image.
"""

from __future__ import annotations

import os
import pathlib
import tomllib

import pytest

from scripts.image import debian, rootfs
from scripts.image.build import VERSION_LABEL, _checked_version
from scripts.image.config import evaluate
from scripts.image.dockerfile import DockerfileError, parse, read, words
from scripts.image.dockerignore import BuildContext

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_repositorys_dockerfile_is_fully_supported_and_pinned() -> None:
    instructions = read(ROOT / "Dockerfile")
    state = evaluate(instructions)
    assert state.base is not None and state.base.release == "bookworm" and state.base.slim
    assert state.base.date and len(state.base.date) == 8  # a dated tag, never a moving one
    config = state.image_config()
    uid, _, gid = config.user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0  # runAsNonRoot can check it
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert config.labels[VERSION_LABEL] == version
    assert _checked_version(state, str(ROOT), "Dockerfile", instructions) == version
    assert config.entrypoint == ["graph"] and config.workdir == "/app"
    runs = " ".join(i.text for i in instructions if i.keyword == "RUN")
    assert "pip install" in runs and "-e " not in runs and "[test]" not in runs and "--only-binary=:all:" in runs


def test_version_label_and_pyproject_must_agree(tmp_path: pathlib.Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "9.9.9"\n')
    text = f'FROM debian:bookworm-20250520-slim\nLABEL {VERSION_LABEL}="1.0.0"\n'
    instructions = parse(text)
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: .*'1.0.0' but pyproject.toml's version is '9.9.9'"):
        _checked_version(evaluate(instructions), str(tmp_path), "Dockerfile", instructions)


def test_continuations_comments_and_forms() -> None:
    text = """# syntax=docker/dockerfile:1
FROM debian:bookworm-20250520-slim
RUN apt-get update \\
# a comment inside is dropped
 && apt-get install -y \\

    python3
CMD ["graph", "--help"]
ENTRYPOINT graph run
"""
    ins = parse(text)
    assert [i.keyword for i in ins] == ["FROM", "RUN", "CMD", "ENTRYPOINT"]
    # Joined as BuildKit's own parser joins it (checked against it): the backslash goes, the blanks stay.
    assert ins[1].line == 3
    assert ins[1].command() == ["/bin/sh", "-c", "apt-get update  && apt-get install -y     python3"]
    assert ins[2].command() == ["graph", "--help"]
    assert ins[3].command() == ["/bin/sh", "-c", "graph run"]


@pytest.mark.parametrize("line, message", [
    ("ADD https://example.invalid/x /x", "Dockerfile:2: ADD fetches URLs"),
    ("ARG VERSION=1", "Dockerfile:2: build arguments are not supported"),
    ("HEALTHCHECK CMD true", "Dockerfile:2: HEALTHCHECK is not supported"),
    ("RUN --mount=type=cache,target=/root/.cache pip install .", "Dockerfile:2: RUN --mount is not supported"),
    ("COPY --from=builder /x /x", "Dockerfile:2: COPY --from is not supported"),
    ("RUN <<EOF\necho hi\nEOF", "Dockerfile:2: RUN with a heredoc"),
    ("FROM debian:bookworm-slim", "Dockerfile:2: multi-stage builds"),
    ("FROBNICATE x", "Dockerfile:2: unknown instruction FROBNICATE"),
])
def test_unsupported_instructions_are_refused_by_line(line: str, message: str) -> None:
    with pytest.raises(DockerfileError) as err:
        parse(f"FROM debian:bookworm-20250520-slim\n{line}\n")
    assert str(err.value).startswith(message)


def test_only_a_debian_base_can_be_debootstrapped() -> None:
    for ref in ("python:3.11.9-slim-bookworm", "debian:latest", "ubuntu:24.04", "debian:bookworm@sha256:00"):
        with pytest.raises(DockerfileError, match="debootstrap"):
            evaluate(parse(f"FROM {ref}\n"))
    base = debian.parse_ref("docker.io/library/debian:trixie-20250811")
    assert (base.release, base.date, base.slim) == ("trixie", "20250811", False)


def test_env_label_user_workdir_expansion_as_docker_does() -> None:
    state = evaluate(parse("""FROM debian:bookworm-20250520-slim
ENV A=1 B="two words" C='$A'
ENV A=2 D=$A E=${A} F=${NOPE:-dflt} G=${A:+set} H=\\$A
ENV OLD form with spaces
LABEL "k"="v $B"
WORKDIR /srv
WORKDIR sub/../app
USER ${A}:$A
ENTRYPOINT ["graph"]
"""))
    env = dict(item.split("=", 1) for item in state.image_config().env)
    assert env["B"] == "two words" and env["C"] == "$A"
    assert (env["A"], env["D"], env["E"]) == ("2", "1", "1")  # one instruction sees the values from before it
    assert (env["F"], env["G"], env["H"]) == ("dflt", "set", "$A")
    assert env["OLD"] == "form with spaces" and env["PATH"] == debian.BASE_ENV["PATH"]
    assert state.labels == {"k": "v two words"}
    assert state.workdir == "/srv/app" and state.user == "2:2"
    assert state.cmd == []  # a new ENTRYPOINT drops the base image's CMD ["bash"]


def test_bad_values_name_the_line() -> None:
    with pytest.raises(DockerfileError, match="Dockerfile:2: LABEL: LABEL wants KEY=VALUE"):
        evaluate(parse("FROM debian:bookworm-20250520-slim\nLABEL novalue\n"))
    with pytest.raises(DockerfileError, match="Dockerfile:2: EXPOSE"):
        evaluate(parse("FROM debian:bookworm-20250520-slim\nEXPOSE http\n"))
    with pytest.raises(ValueError, match="unterminated"):
        words('a "b', {})


def test_dockerignore_follows_dockers_rules(tmp_path: pathlib.Path) -> None:
    for rel in ("pkg/a.py", "pkg/__pycache__/a.pyc", "pkg/sub/b.py", "pkg/sub/keep.log", "other/x.py",
                ".venv/lib/big.so", "__pycache__/c.pyc", "top.log", "README.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / ".dockerignore").write_text("# allowlist\n*\n!pkg\n!README.md\n**/__pycache__\n*.log\n"
                                            "pkg/**/*.log\n!pkg/sub/keep.log\n")
    ctx = BuildContext(tmp_path)
    files = sorted(p for p in ctx.walk(".") if (tmp_path / p).is_file())
    assert files == ["README.md", "pkg/a.py", "pkg/sub/b.py", "pkg/sub/keep.log"]
    assert ctx.excluded(".venv") and ctx.excluded("top.log") and ctx.excluded("__pycache__")
    assert ctx._prunable(".venv") and not ctx._prunable("pkg")
    with pytest.raises(ValueError, match="excluded by .dockerignore"):
        ctx.resolve("other")
    with pytest.raises(ValueError, match="outside the build context"):
        ctx.resolve("../x")
    before = ctx.digest()
    (tmp_path / ".venv/lib/big.so").write_text("changed")  # outside the context: same digest
    assert ctx.digest() == before
    (tmp_path / "pkg/a.py").write_text("changed")
    assert ctx.digest() != before


def test_the_repositorys_context_is_the_package_and_the_pipelines() -> None:
    top = {p.split("/")[0] for p in BuildContext(ROOT).walk(".")} - {"."}
    assert top == {"pyproject.toml", "README.md", "graph", "nodes", "compiler", "pipelines"}


def test_paths_resolve_inside_the_root(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "rootfs"
    (root / "run").mkdir(parents=True)
    (root / "var").mkdir()
    os.symlink("/run", root / "var" / "run")  # as Debian has it: absolute, meant for the image's root
    os.symlink("../../..", root / "var" / "up")
    assert rootfs.host_path(str(root), "/var/run/x") == str(root / "run" / "x")
    assert rootfs.host_path(str(root), "/var/up/etc/passwd") == str(root / "etc" / "passwd")
    assert rootfs.host_path(str(root), "/../../etc") == str(root / "etc")
    made = rootfs.makedirs(str(root), "/var/run/servegraph/a", os.getuid(), os.getgid())
    assert made == str(root / "run" / "servegraph" / "a") and os.path.isdir(made)


def test_users_resolve_from_the_images_passwd(tmp_path: pathlib.Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                         "servegraph:x:10001:10001::/home/servegraph:/usr/sbin/nologin\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nservegraph:x:10001:\nextra:x:20:servegraph\n")
    who = rootfs.identity(str(tmp_path), "servegraph")
    assert (who.uid, who.gid, who.groups, who.home) == (10001, 10001, [20, 10001], "/home/servegraph")
    assert rootfs.identity(str(tmp_path), "").uid == 0
    numeric = rootfs.identity(str(tmp_path), "4242:4343")
    assert (numeric.uid, numeric.gid, numeric.home) == (4242, 4343, "/")
    assert rootfs.owner(str(tmp_path), "servegraph") == (10001, 10001)
    with pytest.raises(ValueError, match="not in the image's /etc/passwd"):
        rootfs.identity(str(tmp_path), "nobody")
