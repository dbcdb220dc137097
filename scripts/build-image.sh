#!/usr/bin/env bash
# Build the root Dockerfile's image without a Docker daemon, into build/image/ (an OCI layout).
#
# Usage: scripts/build-image.sh [--mirror URL] [--out DIR]     (as root; see scripts/image/build.py)
#
# FROM debian:<release>-<date>-slim becomes a debootstrap of that release from Debian's mirror, each RUN
# runs chrooted in namespaces of its own, COPY copies the .dockerignore'd context, and umoci packs a layer
# per step plus the image config (user, env, workdir, entrypoint, cmd, labels). Nothing is cached: every
# run starts from nothing. It takes a few minutes (downloads: Debian packages and the wheels from PyPI).
#
# Then: python3 -m scripts.image.run -- run pipelines/pd.py --mock      (docker run, daemonless)
#       skopeo copy oci:build/image/servegraph:<version> docker://REGISTRY/servegraph:<version>
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
for tool in debootstrap umoci unshare python3; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if (( ${#missing[@]} )); then
    echo "build-image: missing ${missing[*]}: apt-get install debootstrap umoci" >&2
    exit 1
fi
if [[ $EUID -ne 0 ]]; then
    echo "build-image: needs root (debootstrap, chroot, mounts)" >&2
    exit 1
fi
exec python3 -m scripts.image.build "$@"
