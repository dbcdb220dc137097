"""How each container runs: its user, its privileges, a read-only root filesystem and where it may write.

Every pod: seccomp ``RuntimeDefault``. Every container: no privilege escalation,
every capability dropped, a read-only root filesystem.

* Our image (the repository's Dockerfile: user ``servegraph``, uid/gid 10001)
  runs as that user (runAsNonRoot) and writes only to an emptyDir on /tmp;
  tests/test_e2e_image.py serves a graph from it with a read-only root.
* Engine images run as their image's default user, unless ``-O engine_user=UID``
  runs them as UID (runAsNonRoot, fsGroup UID for the volumes). The images the
  engines pin set no non-root user: vllm/vllm-openai, lmsysorg/sglang and NGC's
  TensorRT-LLM run as root; the pod template says so in an annotation
  (:data:`RUNS_AS`). Root or not, an engine writes only to emptyDirs: /tmp
  (torch inductor, vLLM's RPC sockets and Prometheus multiprocess files, UCX/NIXL
  scratch) and a HOME of its own, where ``~/.cache`` (Hugging Face downloads
  unless a model cache is mounted, vLLM's torch.compile cache, FlashInfer JIT),
  ``~/.triton`` and ``~/.config`` (vLLM's usage stats) land. /dev/shm is its own
  memory emptyDir (k8s_pods). HOME, XDG_CACHE_HOME and HF_HOME are set, so an
  image's own defaults cannot point them back at the read-only root.
"""

from __future__ import annotations

from typing import Any

from graph.plan import Service

from .k8s_settings import Options

#: The user of our image (Dockerfile: ``useradd --uid 10001``).
OUR_UID = 10001
#: An engine's HOME: an emptyDir, so caches land there whatever user the image runs as.
ENGINE_HOME = "/home/servegraph"
#: Annotation on the pod template of a container that runs as its image's default user.
RUNS_AS = "servegraph.io/runs-as"


def pod_security(options: Options, s: Service) -> dict[str, Any]:
    """The pod's securityContext."""
    ctx: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if not options.runs_ours(s) and options.engine_user is not None:
        ctx["fsGroup"] = options.engine_user  # volumes (a model cache claim) writable by that group
    return ctx


def container_security(options: Options, s: Service) -> dict[str, Any]:
    """The main container's securityContext."""
    ctx = _locked_down()
    uid = OUR_UID if options.runs_ours(s) else options.engine_user
    if uid is not None:
        ctx.update(runAsNonRoot=True, runAsUser=uid, runAsGroup=uid)
    if not options.runs_ours(s) and options.engine_capabilities:
        ctx["capabilities"]["add"] = list(options.engine_capabilities)
    return ctx


def ours_security() -> dict[str, Any]:
    """The securityContext of a container of ours beside another (an init container)."""
    return {**_locked_down(), "runAsNonRoot": True, "runAsUser": OUR_UID, "runAsGroup": OUR_UID}


def runs_as_note(options: Options, s: Service) -> str | None:
    """What to tell a reader about a container that runs as its image's default user (None: it does not)."""
    if options.runs_ours(s) or options.engine_user is not None:
        return None
    return (f"runs as the default user of its image {options.image_of(s)} (root in the engine images servegraph "
            f"pins: they set no USER), without capabilities or privilege escalation, on a read-only root; "
            f"-O engine_user=UID runs it as UID")


def writable_env(options: Options, s: Service) -> list[dict[str, Any]]:
    """Environment that keeps an engine's writes off its read-only root (empty for our processes)."""
    if options.runs_ours(s):
        return []
    cached = bool(options.model_cache_pvc or options.model_cache_host_path)
    hf_home = options.model_cache_path if cached else f"{ENGINE_HOME}/.cache/huggingface"
    return [{"name": "HOME", "value": ENGINE_HOME}, {"name": "XDG_CACHE_HOME", "value": f"{ENGINE_HOME}/.cache"},
            {"name": "HF_HOME", "value": hf_home}]


def writable_volumes(options: Options, s: Service) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) of the emptyDirs a container may write to."""
    vols = [{"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if not options.runs_ours(s):
        vols.append({"name": "home", "emptyDir": {}})
        mounts.append({"name": "home", "mountPath": ENGINE_HOME})
    return vols, mounts


def _locked_down() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}


__all__ = ["ENGINE_HOME", "OUR_UID", "RUNS_AS", "container_security", "ours_security", "pod_security",
           "runs_as_note", "writable_env", "writable_volumes"]
