"""An OCI image layout on disk, written with umoci and read back as plain JSON.

umoci (Debian's package) makes the layout, turns each change of a runtime
bundle's root filesystem into a gzip layer (``repack``, a go-mtree diff of the
bundle), writes the image config, and unpacks an image for running it.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field


@dataclass
class ImageConfig:
    """The runtime part of an image config (what ``docker inspect`` shows under Config)."""

    user: str = ""
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)


class Layout:
    """The image ``tag`` in the OCI layout folder ``path`` (``oci:PATH:TAG`` for skopeo)."""

    def __init__(self, path: str, tag: str) -> None:
        self.path, self.tag = os.path.abspath(path), tag

    @property
    def ref(self) -> str:
        return f"{self.path}:{self.tag}"

    def create(self) -> None:
        """A new layout holding ``tag`` as an empty image (no layers, empty config)."""
        _umoci("init", "--layout", self.path)
        _umoci("new", "--image", self.ref)

    def unpack(self, bundle: str) -> None:
        """Unpack the image into the runtime bundle ``bundle`` (``bundle/rootfs``), owners kept (needs root)."""
        _umoci("unpack", "--image", self.ref, bundle)

    def repack(self, bundle: str, created_by: str) -> None:
        """Add the changes of ``bundle``'s rootfs since its unpack or last repack as one layer."""
        _umoci("repack", "--refresh-bundle", "--history.created_by", created_by, "--image", self.ref, bundle)

    def configure(self, config: ImageConfig) -> None:
        """Set the image config's runtime fields to ``config`` (replacing what was there)."""
        args = ["config", "--no-history", "--image", self.ref]
        for name in ("config.env", "config.entrypoint", "config.cmd", "config.labels", "config.exposedports"):
            args.append(f"--clear={name}")
        if config.user:
            args.append(f"--config.user={config.user}")
        if config.workdir:
            args.append(f"--config.workingdir={config.workdir}")
        args += [f"--config.env={item}" for item in config.env]
        args += [f"--config.entrypoint={item}" for item in config.entrypoint]
        args += [f"--config.cmd={item}" for item in config.cmd]
        args += [f"--config.label={k}={v}" for k, v in config.labels.items()]
        args += [f"--config.exposedports={port}" for port in config.exposed_ports]
        _umoci(*args)

    def gc(self) -> None:
        """Drop blobs no tag refers to (the manifests and configs of the intermediate steps)."""
        _umoci("gc", "--layout", self.path)

    def manifest(self) -> dict:
        """The image manifest of ``tag``.

        Raises:
            LookupError: the layout holds no such tag.
        """
        with open(os.path.join(self.path, "index.json"), encoding="utf-8") as fh:
            index = json.load(fh)
        for entry in index.get("manifests", []):
            if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == self.tag:
                return self._blob(entry["digest"])
        raise LookupError(f"{self.path} has no image tagged {self.tag!r}")

    def config(self) -> dict:
        """The whole image config JSON of ``tag`` (architecture, os, config, rootfs, history)."""
        return self._blob(self.manifest()["config"]["digest"])

    def runtime_config(self) -> ImageConfig:
        """The runtime fields of ``tag``'s config."""
        c = self.config().get("config", {})
        return ImageConfig(user=c.get("User", ""), env=list(c.get("Env") or []), workdir=c.get("WorkingDir", ""),
                           entrypoint=list(c.get("Entrypoint") or []), cmd=list(c.get("Cmd") or []),
                           labels=dict(c.get("Labels") or {}), exposed_ports=sorted(c.get("ExposedPorts") or {}))

    def layer_sizes(self) -> list[int]:
        """Compressed size of each layer, base first (what a registry stores and a node pulls)."""
        return [layer["size"] for layer in self.manifest()["layers"]]

    def _blob(self, digest: str) -> dict:
        algorithm, _, hexdigest = digest.partition(":")
        with open(os.path.join(self.path, "blobs", algorithm, hexdigest), encoding="utf-8") as fh:
            return json.load(fh)


def _umoci(*args: str) -> None:
    proc = subprocess.run(["umoci", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"umoci {args[0]} failed ({proc.returncode}):\n{proc.stdout.strip()}")
