"""The container image, built without a Docker daemon and run from its own root filesystem.

The image is the one ``scripts/build-image.sh`` makes from the root
Dockerfile (reused when build/image/build.json says it was built from this
very context and builder, as the CI step before the tests does; built here
otherwise). It is started the way a pod with ``runAsNonRoot``,
``readOnlyRootFilesystem`` and an emptyDir on /tmp would run it: its own
entrypoint (``graph``) serving the mock text P/D graph from the pipelines
inside the image, talked to from the host with the ``openai`` client.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from scripts.image import oci
from scripts.image.build import context_digest
from scripts.image.dockerignore import BuildContext
from tests.e2e import free_port_block, http_json

pytestmark = pytest.mark.e2e_image

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "image"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
UID = GID = 10001
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "tcc", "x86_64-linux-gnu-gcc-12", "ld", "as", "make")


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the daemonless image build and run need root (debootstrap, chroot, namespaces)"
    missing = [tool for tool in ("debootstrap", "umoci", "unshare") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install debootstrap umoci; .ci/run does)"
    return None


@pytest.fixture(scope="module")
def image() -> oci.Layout:
    """The built image: reused if build.json matches this context and builder, else built now."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    summary = OUT / "build.json"
    current = context_digest(BuildContext(ROOT), str(ROOT / "Dockerfile"))
    built = json.loads(summary.read_text()) if summary.exists() else {}
    if built.get("context_sha256") != current or built.get("tag") != VERSION:
        began = time.monotonic()
        proc = subprocess.run(["bash", "scripts/build-image.sh"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=1500)
        assert proc.returncode == 0, f"scripts/build-image.sh failed:\n{proc.stdout[-6000:]}"
        print(f"built the image in {time.monotonic() - began:.0f}s")
    else:
        print(f"reusing the image built in {built['seconds']}s from this context")
    return oci.Layout(str(OUT / "servegraph"), VERSION)


@dataclass
class Served:
    """The image's entrypoint serving a graph, started by ``python3 -m scripts.image.run``."""

    proc: subprocess.Popen
    pid1: int
    bundle: pathlib.Path
    url: str
    log: pathlib.Path

    def namespace_pids(self) -> list[int]:
        """Every process in the container's PID namespace (found from the host)."""
        try:
            ns = os.readlink(f"/proc/{self.pid1}/ns/pid")
        except OSError:
            return []
        out = []
        for entry in pathlib.Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.readlink(entry / "ns" / "pid") == ns:
                    out.append(int(entry.name))
            except OSError:
                continue
        return sorted(out)


def _status(pid: int) -> dict[str, str]:
    try:
        text = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


@pytest.fixture(scope="module")
def served(image: oci.Layout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("image-run")
    port, base = free_port_block(1), free_port_block(40)
    pid_file, log, bundle = work / "pid", work / "run.log", work / "bundle"
    cmd = [sys.executable, "-m", "scripts.image.run", "--layout", image.path, "--tag", image.tag,
           "--read-only", "--tmpfs", "/tmp", "--pid-file", str(pid_file), "--bundle", str(bundle),
           "--", "run", "pipelines/pd.py", "--mock", "--port", str(port), "--base-port", str(base)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the image exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if pid_file.exists() and http_json("GET", url + "/models", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)  # the runner too; the container's PID 1 follows it (parent-death)
            proc.wait()
            raise AssertionError(f"the image's graph was not ready in 180 s:\n{log.read_text()[-4000:]}")
        time.sleep(0.3)
    running = Served(proc, int(pid_file.read_text()), bundle, url, log)
    yield running
    if proc.poll() is None:  # a test failed before the stop test
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_image_config_is_the_dockerfiles(image: oci.Layout) -> None:
    config = image.config()
    c = config["config"]
    assert c["User"] == f"{UID}:{GID}"
    assert c["Entrypoint"] == ["graph"] and c["Cmd"] == ["--help"]
    assert c["WorkingDir"] == "/app"
    assert "PATH=/opt/servegraph/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in c["Env"]
    assert c["Labels"]["org.opencontainers.image.version"] == VERSION
    assert c["Labels"]["org.opencontainers.image.title"] == "servegraph"
    assert "8000/tcp" in c["ExposedPorts"]
    assert config["os"] == "linux" and config["architecture"] == {"x86_64": "amd64", "aarch64": "arm64"}.get(
        platform.machine(), platform.machine())
    history = [h.get("created_by", "") for h in config["history"]]
    assert history[0].startswith("FROM debian:bookworm-") and any("pip install" in h for h in history)
    assert len(config["rootfs"]["diff_ids"]) == len(image.layer_sizes()) >= 5


def test_every_entry_point_imports_as_the_image_user(image: oci.Layout, tmp_path: pathlib.Path) -> None:
    # What the k8s target runs: `python -m nodes.<role>` (frontend, processor, mock engine, supervisor).
    script = ("import os, nodes.frontend.app, nodes.processor.app, nodes.mock.app, nodes.supervisor.supervisor; "
              "print('imported as', os.getuid(), os.getgid(), 'in', os.getcwd())")
    proc = subprocess.run([sys.executable, "-m", "scripts.image.run", "--layout", image.path, "--tag", image.tag,
                           "--read-only", "--tmpfs", "/tmp", "--bundle", str(tmp_path / "bundle"),
                           "--entrypoint", "python", "--", "-c", script],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0 and f"imported as {UID} {GID} in /app" in proc.stdout, proc.stdout[-4000:]
    assert not (tmp_path / "bundle").exists()


def test_chat_and_completion_through_the_image(served: Served) -> None:
    client = openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=60)
    model = client.models.list().data[0].id
    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello image"}],
                                          max_tokens=8, temperature=0)
    assert chat.choices[0].message.content and chat.usage.completion_tokens == 8
    pieces = [ch.choices[0].delta.content or "" for ch in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello image"}], max_tokens=8, temperature=0, stream=True)
        if ch.choices]
    assert len([p for p in pieces if p]) >= 2 and "".join(pieces) == chat.choices[0].message.content
    done = client.completions.create(model=model, prompt="The capital of France is", max_tokens=5)
    assert done.choices[0].text and done.usage.completion_tokens == 5
    # Both engines saw the chat: prefill, then decode (the plan is in the container's /tmp, seen through /proc).
    plans = list(pathlib.Path(f"/proc/{served.pid1}/root/tmp").glob("servegraph-*/plan.json"))
    assert len(plans) == 1, plans
    services = {s["name"]: s for s in json.loads(plans[0].read_text())["services"]}
    for name in ("prefill-0", "decode-0"):
        status, got = http_json("GET", f"http://127.0.0.1:{services[name]['ports']['http']}/mock/requests")
        got = got if isinstance(got, list) else got.get("requests", [])
        assert status == 200 and any(r.get("path", "").endswith("/chat/completions") for r in got), (name, got)


def test_every_process_runs_as_the_image_user(served: Served) -> None:
    pids = served.namespace_pids()
    cmdlines = {p: pathlib.Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode() for p in pids}
    assert any("/opt/servegraph/bin/graph run pipelines/pd.py" in c for c in cmdlines.values()), cmdlines
    assert any("-m nodes.frontend" in c for c in cmdlines.values()), cmdlines
    assert sum("-m nodes.mock" in c for c in cmdlines.values()) == 2, cmdlines
    for pid in pids:
        status = _status(pid)
        assert status["Uid"].split() == [str(UID)] * 4, (cmdlines[pid], status["Uid"])
        assert status["Gid"].split() == [str(GID)] * 4, (cmdlines[pid], status["Gid"])
        assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"] == "1", (cmdlines[pid], status)


def test_root_is_read_only_and_tmp_is_where_it_writes(served: Served) -> None:
    # mountinfo names mount points as the container sees them (relative to its root).
    mounts = {}
    for line in pathlib.Path(f"/proc/{served.pid1}/mountinfo").read_text().splitlines():
        fields, fstype = line.split(), line.split(" - ", 1)[1].split()[0]
        mounts[fields[4]] = (fstype, fields[5].split(","))
    assert "ro" in mounts["/"][1], mounts
    assert mounts["/tmp"][0] == "tmpfs" and "rw" in mounts["/tmp"][1], mounts
    assert "files in /tmp/servegraph-llama-pd-" in served.log.read_text()


def test_no_compiler_in_the_image(served: Served) -> None:
    root = served.bundle / "rootfs"
    found = [f"{d}/{name}" for d in ("usr/bin", "usr/local/bin", "opt/servegraph/bin") for name in COMPILERS
             if (root / d / name).exists()]
    assert not found, found
    packages = [line.split(": ", 1)[1] for line in (root / "var/lib/dpkg/status").read_text().splitlines()
                if line.startswith("Package: ")]
    assert "python3" in packages
    assert not [p for p in packages if re.fullmatch(r"(gcc|g\+\+|cpp|clang)(-\d+)?|binutils|build-essential|make|"
                                                      r"libc6-dev|python3(\.\d+)?-dev", p)], packages


def test_stop_leaves_nothing_behind(served: Served) -> None:
    pids = served.namespace_pids()
    assert len(pids) >= 4
    served.proc.send_signal(signal.SIGTERM)  # docker stop / the kubelet: SIGTERM to the entrypoint
    assert served.proc.wait(60) == 0, served.log.read_text()[-3000:]
    assert "all stopped" in served.log.read_text()
    deadline = time.monotonic() + 10
    while any(pathlib.Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if pathlib.Path(f"/proc/{p}").exists()]
    assert not served.bundle.exists()
    assert str(served.bundle) not in pathlib.Path("/proc/self/mountinfo").read_text()
