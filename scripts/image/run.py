"""``python3 -m scripts.image.run [OPTIONS] [-- ARGS...]``: ``docker run`` for the image build-image.sh made.

Unpacks the image with umoci into a new bundle, then starts its ENTRYPOINT
with ARGS in place of its CMD (as ``docker run IMAGE ARGS`` does), as the
image's USER, with its Env and WorkingDir, through :mod:`scripts.image.sandbox`
(own mount/PID/UTS/IPC namespaces, the host's network, no_new_privs set as
Kubernetes' ``allowPrivilegeEscalation: false`` does). ``--read-only`` and
``--tmpfs /tmp`` give what a pod with ``readOnlyRootFilesystem`` and an
emptyDir on /tmp gets. SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed on to
the entrypoint; the exit status is the entrypoint's; the bundle is removed
afterwards unless ``--keep-bundle``.

Example: ``python3 -m scripts.image.run --read-only --tmpfs /tmp -- run pipelines/pd.py --mock``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile

from . import oci, rootfs, sandbox

_DEFAULT_OUT = os.path.join(sandbox.REPO, "build", "image")


def main(argv: list[str] | None = None) -> int:
    """Entry point; the entrypoint's exit status (125 when the image cannot be started)."""
    parser = argparse.ArgumentParser(prog="python3 -m scripts.image.run", description=__doc__.split("\n\n")[1])
    parser.add_argument("--layout", default=os.path.join(_DEFAULT_OUT, "servegraph"), help="OCI layout folder")
    parser.add_argument("--tag", help="image tag (default: the one build/image/build.json names)")
    parser.add_argument("--entrypoint", help="run this instead of the image's ENTRYPOINT (its CMD is then dropped)")
    parser.add_argument("--read-only", action="store_true", help="mount the image's root read-only")
    parser.add_argument("--tmpfs", action="append", default=[], metavar="PATH", help="an empty tmpfs at PATH")
    parser.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE", help="add to the env")
    parser.add_argument("--pid-file", help="write the entrypoint's host pid here")
    parser.add_argument("--bundle", help="unpack into this new folder (default: one under build/image/)")
    parser.add_argument("--keep-bundle", action="store_true", help="leave the unpacked bundle in place")
    parser.add_argument("args", nargs="*", help="replace the image's CMD (put them after --)")
    opts = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # until started: clean up, then go
    if os.geteuid() != 0:
        print("error: running the image needs root (umoci unpack keeps owners; namespaces, chroot)", file=sys.stderr)
        return 125
    try:
        layout = oci.Layout(opts.layout, opts.tag or _built_tag(opts.layout))
        config = layout.runtime_config()
    except (LookupError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 125
    if opts.bundle and os.path.lexists(opts.bundle):
        print(f"error: --bundle {opts.bundle} exists; name a new folder", file=sys.stderr)
        return 125
    bundle = opts.bundle or os.path.join(tempfile.mkdtemp(prefix="run-", dir=_mkdir(_DEFAULT_OUT)), "bundle")
    try:
        layout.unpack(bundle)
        spec = _spec(config, os.path.join(bundle, "rootfs"), opts)
        return _run(spec)
    except (LookupError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 125
    finally:
        if not opts.keep_bundle:
            rootfs.remove_tree(bundle)
            if not opts.bundle:
                os.rmdir(os.path.dirname(bundle))


def _spec(config: oci.ImageConfig, root: str, opts: argparse.Namespace) -> sandbox.Spec:
    """What the image's config says to run, with the command line's changes."""
    who = rootfs.identity(root, config.user)
    env = dict(item.split("=", 1) for item in config.env)
    env.setdefault("HOME", who.home)  # as Docker and the kubelet do
    env.update(dict(item.split("=", 1) for item in opts.env))
    if opts.entrypoint is not None:  # as docker run --entrypoint: the image's CMD goes too
        args = [opts.entrypoint, *opts.args]
    else:
        args = config.entrypoint + (opts.args or config.cmd)
    if not args:
        raise ValueError("the image has neither ENTRYPOINT nor CMD, and no command was given")
    return sandbox.Spec(rootfs=root, args=args, env=[f"{k}={v}" for k, v in env.items()],
                        cwd=config.workdir or "/", uid=who.uid, gid=who.gid, groups=who.groups,
                        read_only=opts.read_only, tmpfs=opts.tmpfs, no_new_privs=True, pid_file=opts.pid_file,
                        grace=30.0)  # SIGKILL 30 s after SIGTERM, as the kubelet's default grace period


def _run(spec: sandbox.Spec) -> int:
    proc = sandbox.spawn(spec)

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    return proc.wait()


def _built_tag(layout: str) -> str:
    path = os.path.join(os.path.dirname(os.path.abspath(layout)), "build.json")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)["tag"]
    except (OSError, ValueError, KeyError):
        raise LookupError(f"no --tag given and no {path}: build the image first (scripts/build-image.sh)") from None


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


if __name__ == "__main__":
    sys.exit(main())
