"""``scripts/build-image.sh``: build the Dockerfile's image without a Docker daemon.

Usage: ``python3 -m scripts.image.build [--file Dockerfile] [--context .] [--out build/image] [--mirror URL]``
(as root, from the repository root; needs debootstrap and umoci).

Every build starts from nothing (the previous output is removed) and writes:

* ``build/image/servegraph/``: an OCI image layout with the tag ``<version>``
  (``oci:build/image/servegraph:<version>`` for skopeo), one layer per FROM,
  RUN and COPY;
* ``build/image/build.json``: the tag, a digest of the build context and of
  this builder (a later run of the tests reuses the image only while both
  match), the layer sizes, the unpacked size and the build time.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import posixpath
import shutil
import subprocess
import sys
import time
import tomllib

from . import debian, oci, rootfs, sandbox
from .config import State, evaluate
from .dockerfile import DockerfileError, Instruction, read, words
from .dockerignore import BuildContext

VERSION_LABEL = "org.opencontainers.image.version"
#: Debian's CA bundle. RUN steps see the host's over the image's (a bind mount, in no layer), so a build
#: behind a TLS-intercepting proxy reaches PyPI as the host does; the image keeps its own bundle.
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
BUILDER_FILES = ("scripts/build-image.sh", *(f"scripts/image/{name}" for name in sorted(
    os.listdir(os.path.dirname(os.path.abspath(__file__)))) if name.endswith(".py")))


class BuildError(Exception):
    """The build cannot go on; the message says why and what to do."""


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 on success, 1 on a build error, 2 on a Dockerfile the builder refuses."""
    parser = argparse.ArgumentParser(prog="scripts/build-image.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", default="Dockerfile", help="the Dockerfile (default: Dockerfile)")
    parser.add_argument("--context", default=".", help="the build context folder (default: .)")
    parser.add_argument("--out", default="build/image", help="output folder (default: build/image)")
    parser.add_argument("--name", default="servegraph", help="image name: the layout folder (default: servegraph)")
    parser.add_argument("--mirror", default=debian.DEFAULT_MIRROR, help="Debian mirror for FROM and apt")
    parser.add_argument("--security-mirror", default=debian.DEFAULT_SECURITY_MIRROR)
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="print RUN output only when the step fails (its last lines); progress lines stay")
    parser.add_argument("--no-host-ca", action="store_true",
                        help=f"RUN steps trust only the image's CA bundle, not the host's ({HOST_CA})")
    args = parser.parse_args(argv)
    os.umask(0o022)
    try:
        instructions = read(args.file)
        state = evaluate(instructions, args.file)
        context = BuildContext(args.context)
        tag = _checked_version(state, args.context, args.file, instructions)
        _check_host()
        started = time.monotonic()
        host_ca = None if args.no_host_ca or not os.path.isfile(HOST_CA) else HOST_CA
        summary = Build(context, args.out, args.name, tag, args.mirror, args.security_mirror, host_ca,
                        quiet=args.quiet).run(instructions, args.file)
    except DockerfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BuildError, RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    seconds = time.monotonic() - started
    summary["seconds"] = round(seconds, 1)
    with open(os.path.join(args.out, "build.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, sort_keys=True)
        fh.write("\n")
    layout = os.path.relpath(summary["layout"])
    _log(f"image {args.name}:{tag} built in {seconds:.0f}s: {len(summary['layers'])} layers, "
         f"{summary['compressed_bytes'] / 1e6:.0f} MB compressed, {summary['unpacked_bytes'] / 1e6:.0f} MB unpacked")
    _log(f"  OCI layout: {layout} (tag {tag})")
    _log("  run it:     python3 -m scripts.image.run -- --help")
    _log(f"  push it:    skopeo copy oci:{layout}:{tag} docker://REGISTRY/{args.name}:{tag}")
    return 0


class Build:
    """One build of a Dockerfile into ``out/<name>`` (an OCI layout), through the runtime bundle ``out/bundle``.

    Args:
        host_ca: a host CA bundle RUN steps see over the image's own (see HOST_CA), or None.
        quiet: hold back RUN output, printing its last lines only if the step fails.
    """

    def __init__(self, context: BuildContext, out: str, name: str, tag: str, mirror: str, security_mirror: str,
                 host_ca: str | None = None, quiet: bool = False) -> None:
        self.context, self.out, self.name, self.tag = context, os.path.abspath(out), name, tag
        self.mirror, self.security_mirror, self.host_ca = mirror, security_mirror, host_ca
        self.layout = oci.Layout(os.path.join(self.out, name), tag)
        self.bundle = os.path.join(self.out, "bundle")
        self.root = os.path.join(self.bundle, "rootfs")
        self.state = State()
        self.pending = ""  # a config-only change to the filesystem (WORKDIR's folder) not in a layer yet
        self.quiet = quiet

    def run(self, instructions: list[Instruction], path: str) -> dict:
        """Execute ``instructions``; returns the build summary (without the time)."""
        self.state.path = path
        digest = context_digest(self.context, path)
        for folder in (self.layout.path, self.bundle, os.path.join(self.out, "build.json")):
            rootfs.remove_tree(folder)
        os.makedirs(self.out, exist_ok=True)
        try:
            for n, ins in enumerate(instructions, 1):
                first = ins.text if len(ins.text) <= 100 else ins.text[:97] + "..."
                _log(f"[{n}/{len(instructions)}] {ins.keyword} {first}")
                began = time.monotonic()
                self._execute(ins)
                if ins.keyword in ("FROM", "RUN", "COPY"):
                    _log(f"      done in {time.monotonic() - began:.1f}s")
            if self.pending:
                self.layout.repack(self.bundle, self.pending)
            _log("writing the image config, dropping unreferenced blobs")
            self.layout.configure(self.state.image_config())
            self.layout.gc()
            unpacked = _disk_usage(self.root)
        finally:
            rootfs.remove_tree(self.bundle)
        sizes = self.layout.layer_sizes()
        return {"image": f"{self.name}:{self.tag}", "layout": self.layout.path, "tag": self.tag,
                "context_sha256": digest, "layers": sizes, "compressed_bytes": sum(sizes),
                "unpacked_bytes": unpacked, "base": self.state.base.ref if self.state.base else None,
                "mirror": self.mirror}

    def _execute(self, ins: Instruction) -> None:
        self.state.apply(ins)
        if ins.keyword == "FROM":
            self._from()
        elif ins.keyword == "RUN":
            self._run(ins)
            self._layer(f"RUN {ins.text}")
        elif ins.keyword == "COPY":
            self._copy(ins)
            self._layer(f"COPY {ins.text}")
        elif ins.keyword == "WORKDIR":
            if not os.path.isdir(rootfs.host_path(self.root, self.state.workdir)):
                rootfs.makedirs(self.root, self.state.workdir)
                self.pending = f"WORKDIR {self.state.workdir}"

    def _from(self) -> None:
        base = self.state.base
        assert base is not None
        self.layout.create()
        self.layout.unpack(self.bundle)
        dated = f"{base.date[:4]}-{base.date[4:6]}-{base.date[6:]}" if base.date else ""
        _log(f"      base: debian {base.release} (minbase{', slim' if base.slim else ''}) from {self.mirror}"
             + (f"; {base.ref} is the release as of {dated}, this is the release as the mirror serves it today"
                if dated and "snapshot.debian.org" not in self.mirror else ""))
        debian.bootstrap(base, self.root, self._as_root, self.mirror, self.security_mirror, log=_indent)
        self._layer(f"FROM {base.ref} (debootstrap --variant=minbase {base.release})")

    def _as_root(self, args: list[str]) -> None:
        code = sandbox.run(sandbox.Spec(rootfs=self.root, args=args, env=[f"PATH={debian.BASE_ENV['PATH']}"]), _indent)
        if code != 0:
            raise BuildError(f"{' '.join(args)} in the base image exited with {code}")

    def _run(self, ins: Instruction) -> None:
        who = self._identity(ins)
        env = dict(self.state.env)
        env.setdefault("HOME", who.home)  # as Docker does for RUN
        host_files = ["/etc/resolv.conf"]
        if self.host_ca and os.path.isfile(rootfs.host_path(self.root, self.host_ca)):
            host_files.append(self.host_ca)
            for name in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE"):
                env.setdefault(name, self.host_ca)  # this step's environment only, never the image config
        rootfs.makedirs(self.root, self.state.workdir)
        spec = sandbox.Spec(rootfs=self.root, args=ins.command(), env=[f"{k}={v}" for k, v in env.items()],
                            cwd=self.state.workdir, uid=who.uid, gid=who.gid, groups=who.groups,
                            host_files=host_files, hostname="build")
        held: collections.deque[str] = collections.deque(maxlen=80)
        code = sandbox.run(spec, held.append if self.quiet else lambda line: _log(f"      | {line}"))
        if code != 0:
            for line in held:
                _log(f"      | {line}")
            raise BuildError(f"{self.state.path}:{ins.line}: RUN exited with status {code}")

    def _copy(self, ins: Instruction) -> None:
        try:
            exec_form = ins.exec_form()
            split = exec_form if exec_form is not None else words(ins.text, self.state.env)
            if len(split) < 2:
                raise ValueError("COPY wants at least one source and a destination")
            *sources, dest = split
            if len(sources) > 1 and not dest.endswith("/"):
                raise ValueError(f"with several sources the destination must end with '/', not {dest!r}")
            uid, gid = rootfs.owner(self.root, ins.flags["chown"]) if "chown" in ins.flags else (0, 0)
            target = posixpath.normpath(posixpath.join(self.state.workdir, dest))
            for source in sources:
                self._copy_one(self.context.resolve(source), target, dest.endswith("/") or len(sources) > 1, uid, gid)
        except ValueError as exc:
            raise DockerfileError(self.state.path, ins.line, f"COPY: {exc}") from None

    def _copy_one(self, rel: str, target: str, into: bool, uid: int, gid: int) -> None:
        source = os.path.join(self.context.root, rel)
        if os.path.isdir(source) and not os.path.islink(source):
            rootfs.makedirs(self.root, target)  # a folder's contents are copied, not the folder itself
            for path in self.context.walk(rel):
                if path == rel:
                    continue
                self._copy_entry(os.path.join(self.context.root, path),
                                 posixpath.join(target, posixpath.relpath(path, rel)), uid, gid)
            return
        if into or os.path.isdir(rootfs.host_path(self.root, target)):
            target = posixpath.join(target, posixpath.basename(rel))
        self._copy_entry(source, target, uid, gid)

    def _copy_entry(self, source: str, inside: str, uid: int, gid: int) -> None:
        """Copy one entry to the image path ``inside``: its folder's symlinks are followed in the image, its own is not."""
        parent = rootfs.makedirs(self.root, posixpath.dirname(inside))
        rootfs.copy_entry(source, os.path.join(parent, posixpath.basename(inside)), uid, gid)

    def _identity(self, ins: Instruction) -> rootfs.Identity:
        try:
            return rootfs.identity(self.root, self.state.user)
        except ValueError as exc:
            raise DockerfileError(self.state.path, ins.line, f"USER {self.state.user}: {exc}") from None

    def _layer(self, created_by: str) -> None:
        began = time.monotonic()
        if self.pending:
            created_by = f"{self.pending}; {created_by}"
            self.pending = ""
        self.layout.repack(self.bundle, created_by)
        _log(f"      layer packed ({time.monotonic() - began:.1f}s)")


def _checked_version(state: State, context: str, path: str, instructions: list[Instruction]) -> str:
    """The tag: the project version, which the Dockerfile's version label must repeat (so they cannot drift)."""
    with open(os.path.join(context, "pyproject.toml"), "rb") as fh:
        version = tomllib.load(fh)["project"]["version"]
    label = state.labels.get(VERSION_LABEL)
    if label != version:
        line = next((i.line for i in instructions if i.keyword == "LABEL" and VERSION_LABEL in i.text), 1)
        raise DockerfileError(path, line, f"LABEL {VERSION_LABEL} is {label!r} but pyproject.toml's version is "
                                          f"{version!r}: make them the same")
    return version


def _check_host() -> None:
    if os.geteuid() != 0:
        raise BuildError("the daemonless build needs root (debootstrap, chroot, mounts): run it as root")
    missing = [tool for tool in ("debootstrap", "umoci") if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"{' and '.join(missing)} not found: apt-get install debootstrap umoci")


def context_digest(context: BuildContext, dockerfile: str) -> str:
    """sha256 of what the image is built from: the context, the Dockerfile and this builder's own files."""
    builder = [os.path.join(sandbox.REPO, f) for f in BUILDER_FILES if os.path.exists(os.path.join(sandbox.REPO, f))]
    return context.digest(*[os.path.relpath(f, context.root) for f in (dockerfile, *builder)])


def _disk_usage(path: str) -> int:
    out = subprocess.run(["du", "-sb", "--one-file-system", path], stdout=subprocess.PIPE, text=True, check=True)
    return int(out.stdout.split()[0])


def _log(line: str) -> None:
    print(line, flush=True)


def _indent(line: str) -> None:
    _log(f"      {line}")


if __name__ == "__main__":
    sys.exit(main())
