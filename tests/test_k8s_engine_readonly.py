"""vLLM serves with the read-only root the k8s output gives engines (issue 18, item 4), on this CPU.

The engine container the k8s target writes for pipelines/agg.py (on CPU, the
tiny model at its in-pod path) is run as written: its command, args and env,
with tmpfs for each of its emptyDirs (/tmp, /dev/shm, its HOME) in a private
mount namespace where every other mount is read-only, as the container runtime
does for ``readOnlyRootFilesystem: true``. The real vLLM CPU build starts in it
and answers a completion; a write anywhere else would fail (EROFS).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from compiler.load import load_spec
from compiler.plan import PlanOptions, plan
from compiler.targets import k8s
from compiler.targets.k8s_security import ENGINE_HOME
from tests.test_k8s_manifests import ROOT, docs_of
from tests.vllm_fixtures import ENGINE_SITE, READY_TIMEOUT_S, missing_vllm, tiny_models

pytestmark = pytest.mark.e2e_vllm

#: Inside the namespace: tmpfs for each emptyDir, the model bound read-only, then every other mount read-only.
#: What must stay visible ($KEEP: the interpreter's environment, this checkout) may lie below a directory that
#: a tmpfs covers (a clone in /tmp, a home in /home): it is bound back from the original tree, read-only.
_SCRIPT = r"""
set -eu
mount --make-rprivate /
[ -d /mnt ] || { echo "no /mnt to hold the original tree while tmpfs covers its directories" >&2; exit 96; }
mount -t tmpfs tmpfs /mnt && mkdir /mnt/original && mount --rbind / /mnt/original
# HOME first (its parent is covered by a tmpfs when HOME does not exist, so nothing is made on the host)
[ -d "$HOME" ] || mount -t tmpfs tmpfs "$(dirname "$HOME")"
mkdir -p "$HOME" && mount -t tmpfs -o size=2g tmpfs "$HOME"
mkdir -p "$HOME/model" && mount --bind "/mnt/original$MODEL_SRC" "$HOME/model" && mount -o remount,bind,ro "$HOME/model"
for dir in $WRITABLE; do [ "$dir" = "$HOME" ] || mount -t tmpfs -o size=2g tmpfs "$dir"; done
for keep in $KEEP; do
  [ -e "$keep" ] || { mkdir -p "$keep" && mount --rbind "/mnt/original$keep" "$keep"; }
done
umount -l /mnt/original
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r mp; do
  case " $WRITABLE " in *" $mp "*) continue;; esac
  case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/pts) continue;; esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
if touch /servegraph-probe 2>/dev/null || touch "$VIRTUAL_ENV/servegraph-probe" 2>/dev/null; then
  rm -f /servegraph-probe "$VIRTUAL_ENV/servegraph-probe"; echo "root is still writable" >&2; exit 97
fi
exec "$@"
"""


def _engine_pod(port: int) -> dict:
    """The worker pod of pipelines/agg.py on CPU with the tiny model at its in-pod path, as the k8s target writes it."""
    spec = load_spec(str(ROOT / "pipelines" / "agg.py"), model=f"{ENGINE_HOME}/model",
                     sets=["worker.replicas=1", "worker.max_model_len=512"])[0]
    files = k8s.render(plan(spec, PlanOptions(device="cpu", cpu_cores=os.cpu_count() or 1, base_port=port)))
    dep = next(d for d in docs_of(files) if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("worker-0"))
    return dep["spec"]["template"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vllm_serves_on_the_read_only_root_the_manifest_gives_it(tmp_path: pathlib.Path) -> None:
    why = missing_vllm()
    if why:
        pytest.skip(why)
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    port = _free_port()
    template = _engine_pod(port)
    c = template["spec"]["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    empty = {v["name"] for v in template["spec"]["volumes"] if "emptyDir" in v}
    writable = sorted(m["mountPath"] for m in c["volumeMounts"] if m["name"] in empty)
    # The container's env as the kubelet sets it (the downward API's pod IP: loopback here).
    env = {e["name"]: e.get("value", "127.0.0.1") for e in c["env"]}
    assert set(writable) == {"/tmp", "/dev/shm", env["HOME"]} and env["HOME"] == ENGINE_HOME, writable
    model = ROOT / "models" / "llama"
    model = model if (model / "config.json").exists() else tiny_models() / "llama"
    args = list(c["args"])
    args[args.index("--host") + 1] = "127.0.0.1"  # traffic stays on loopback here
    assert c["command"] == ["python"] and not any("$(" in a for a in args) and str(port) in args
    argv = [sys.executable, *args]
    run_env = {**env, "PATH": os.environ["PATH"], "VIRTUAL_ENV": sys.prefix, "WRITABLE": " ".join(writable),
               "MODEL_SRC": str(model.resolve()), "PYTHONPATH": str(ENGINE_SITE),
               "KEEP": " ".join(sorted({str(pathlib.Path(p).resolve()) for p in (sys.prefix, sys.base_prefix, ROOT)}))}
    model_name = args[args.index("--served-model-name") + 1]
    status, log = _serve(["unshare", "--mount", "sh", "-c", _SCRIPT, "sh", *argv], run_env, port, model_name,
                         tmp_path / "read-only.log")
    assert "Read-only file system" not in log and "EROFS" not in log, log[-4000:]
    if status == 200:
        return
    # The engine came up on the read-only root but failed to generate: is that the read-only root?
    # The same container, same env, on this machine's ordinary (writable) root decides.
    plain_env = {**run_env, "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "home" / ".cache"),
                 "HF_HOME": str(tmp_path / "home" / ".cache" / "huggingface")}
    plain_argv = [a.replace(f"{ENGINE_HOME}/model", str(model)) for a in argv]
    plain_status, plain_log = _serve(plain_argv, plain_env, port, model_name, tmp_path / "writable.log")
    assert plain_status != 200, f"generation fails only on the read-only root:\n{log[-4000:]}"
    pytest.skip(f"vLLM started and went healthy on the read-only root, but generation fails on this machine "
                f"with a writable root too (HTTP {plain_status}; {_death(plain_log)}): not checked here")


def _death(log: str) -> str:
    """The line saying how vLLM's worker died, if one does."""
    return next((line.strip()[-160:] for line in log.splitlines() if "died unexpectedly" in line), "see its log")


def _serve(argv: list[str], env: dict[str, str], port: int, model: str, log_path: pathlib.Path) -> tuple[int, str]:
    """Start the engine, wait for /health, send one completion: (its HTTP status, the engine's log)."""
    with log_path.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"vLLM exited {proc.returncode}:\n{log_path.read_text()[-4000:]}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).close()
                break
            except OSError:
                late = time.monotonic() >= deadline
                assert not late, f"not healthy in {READY_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}"
                time.sleep(2)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"model": model, "prompt": "Hello", "max_tokens": 4, "temperature": 0}).encode())
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                assert b'"choices"' in resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return status, log_path.read_text()
