"""The pod of one Plan service: container, env, volumes, scheduling; probes, resources and security
come from k8s_probes, k8s_resources and k8s_security."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from graph.plan import SELF_HOST_VAR, Plan, Service, host_var

from .k8s_meta import (
    CONFIG_DIR,
    LEADER_HOST_VAR,
    NODE_RANK_VAR,
    Names,
    file_key,
    k8s_expand,
    port_name,
    referenced_hosts,
)
from .k8s_probes import http_probes, leader_probes
from .k8s_resources import container_resources, waiter_resources
from .k8s_security import (
    RUNS_AS,
    container_security,
    ours_security,
    pod_security,
    runs_as_note,
    writable_env,
    writable_volumes,
)
from .k8s_settings import NodeSettings, Options
from .k8s_storage import shared_mounts
#: The init container that holds a pod until what it depends on answers its health check
#: (the Plan's depends_on; the local supervisor and the Slurm script wait the same way).
_WAIT_SCRIPT = (
    "import sys, time, urllib.request\n"
    "for url in sys.argv[1:]:\n"
    "    while True:\n"
    "        try:\n"
    "            urllib.request.urlopen(url, timeout=5).close()\n"
    "            print('healthy:', url, flush=True)\n"
    "            break\n"
    "        except Exception:\n"
    "            time.sleep(2)\n"
)


@dataclass(frozen=True)
class PodContext:
    """What every pod of a graph shares."""

    plan: Plan
    names: Names
    options: Options
    settings: dict[str, NodeSettings]
    host_vars: dict[str, Service]
    #: Service name -> the folders of the files edges it is an end of (k8s_storage.files_folders).
    files_folders: dict[str, set[str]]


def pod_template(ctx: PodContext, s: Service, labels: dict[str, str], host_role: str | None = None) -> dict[str, Any]:
    """A PodTemplateSpec running ``s``; ``host_role`` is leader/worker for multi-host replicas."""
    node = ctx.settings[s.node]
    pod_labels = dict(labels)
    if host_role:
        pod_labels["servegraph.io/host-role"] = host_role
    annotations = dict(node.annotations)
    if s.config is not None:
        # A changed config (or node code) must roll the pod: ConfigMap updates alone restart nothing.
        digest = hashlib.sha256(json.dumps([s.config, s.files] if s.files else s.config, sort_keys=True).encode())
        annotations["servegraph.io/config-sha256"] = digest.hexdigest()
    note = runs_as_note(ctx.options, s)
    if note:
        annotations[RUNS_AS] = note
    spec: dict[str, Any] = {
        "containers": [_container(ctx, s, node, host_role)],
        "enableServiceLinks": False,
        "securityContext": pod_security(ctx.options, s),
    }
    if s.depends_on:
        spec["initContainers"] = [_wait_container(ctx, s)]
    volumes = _volumes(ctx, s)
    if volumes:
        spec["volumes"] = volumes
    if node.node_selector:
        spec["nodeSelector"] = dict(node.node_selector)
    if node.tolerations:
        spec["tolerations"] = [dict(t) for t in node.tolerations]
    if node.service_account:
        spec["serviceAccountName"] = node.service_account
    else:  # nothing of ours talks to the API server
        spec["automountServiceAccountToken"] = False
    if node.priority_class:
        spec["priorityClassName"] = node.priority_class
    if ctx.options.image_pull_secret:
        spec["imagePullSecrets"] = [{"name": ctx.options.image_pull_secret}]
    if s.engine is not None:
        # Engines drain in-flight requests on SIGTERM; give long generations time to finish.
        spec["terminationGracePeriodSeconds"] = 60
    meta: dict[str, Any] = {"labels": pod_labels}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec}


def _container(ctx: PodContext, s: Service, node: NodeSettings, host_role: str | None) -> dict[str, Any]:
    # A worker host runs the follower command where the engine's other ranks run another one.
    command = s.follower_argv if host_role == "worker" and s.follower_argv is not None else s.argv
    argv = [_config_path(a, s) for a in command]
    c: dict[str, Any] = {
        "name": s.role.replace("_", "-"),
        "image": node.image or ctx.options.image_of(s),
        "imagePullPolicy": node.image_pull_policy or ctx.options.image_pull_policy,
        "command": [k8s_expand(argv[0])],
        "args": [k8s_expand(a) for a in argv[1:]],
        "env": _env(ctx, s),
        "ports": [
            {"name": port_name(name), "containerPort": port, "protocol": "TCP"}
            for name, port in sorted(s.ports.items())
        ],
        "resources": container_resources(s, node),
        "securityContext": container_security(ctx.options, s),
        "volumeMounts": _mounts(ctx, s),
    }
    if not c["args"]:
        del c["args"]
    c.update(leader_probes(s) if host_role == "worker" else http_probes(s))
    return c


def _wait_container(ctx: PodContext, s: Service) -> dict[str, Any]:
    urls = []
    for name in s.depends_on:
        dep = ctx.host_vars[host_var(name)]
        urls.append(f"http://{ctx.names.of(dep)}:{dep.health.port}{dep.health.path}")
    return {
        "name": "wait-for-dependencies",
        "image": ctx.options.image,
        "imagePullPolicy": ctx.options.image_pull_policy,
        "command": ["python", "-c", _WAIT_SCRIPT],
        "args": urls,
        "resources": waiter_resources(),
        "securityContext": ours_security(),
    }


def _config_path(arg: str, s: Service) -> str:
    """argv names the config file relative to the plan; in the pod it is in the ConfigMap's mount."""
    return f"{CONFIG_DIR}/{s.config_file}" if s.config_file and arg == s.config_file else arg


def _env(ctx: PodContext, s: Service) -> list[dict[str, Any]]:
    # Kubernetes expands $(VAR) only from variables defined earlier in the list:
    # addresses first, then the Plan's own variables that refer to them.
    env: list[dict[str, Any]] = [{"name": SELF_HOST_VAR, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    if s.hosts > 1:
        # LeaderWorkerSet puts LWS_* first in every container's env (lws pkg/utils/pod AddLWSVariables).
        env += [
            {"name": LEADER_HOST_VAR, "value": "$(LWS_LEADER_ADDRESS)"},
            {"name": NODE_RANK_VAR, "value": "$(LWS_WORKER_INDEX)"},
        ]
    text = json.dumps([s.argv, s.follower_argv, s.env, s.config])
    for other in referenced_hosts(ctx.plan, s, text, ctx.host_vars):
        env.append({"name": host_var(other.name), "value": ctx.names.of(other)})
    if s.engine is not None:
        env += hf_token_env(ctx.options)
    env += writable_env(ctx.options, s)
    env += [{"name": k, "value": k8s_expand(v)} for k, v in sorted(s.env.items())]
    return env


def hf_token_env(options: Options) -> list[dict[str, Any]]:
    """HF_TOKEN by reference to the user's Secret (never a value in the manifests), if one is named."""
    if not options.hf_token_secret:
        return []
    ref = {"name": options.hf_token_secret, "key": options.hf_token_key}
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}}]


def _volumes(ctx: PodContext, s: Service) -> list[dict[str, Any]]:
    o = ctx.options
    vols, _ = writable_volumes(o, s)
    if s.config_file:
        items = [{"key": s.config_file, "path": s.config_file}]
        items += [{"key": file_key(path), "path": path} for path in sorted(s.files)]
        vols.append({"name": "config", "configMap": {"name": ctx.names.config_map, "items": items}})
    if s.engine is not None:
        vols.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": o.shm_size}})
        if o.model_cache_pvc:
            vols.append({"name": "model-cache", "persistentVolumeClaim": {"claimName": o.model_cache_pvc}})
        elif o.model_cache_host_path:
            host_path = {"path": o.model_cache_host_path, "type": "DirectoryOrCreate"}
            vols.append({"name": "model-cache", "hostPath": host_path})
    vols += shared_mounts(ctx.files_folders.get(s.name, set()), o, ctx.names.prefix)[0]
    return vols


def _mounts(ctx: PodContext, s: Service) -> list[dict[str, Any]]:
    o = ctx.options
    _, mounts = writable_volumes(o, s)
    if s.config_file:
        mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
    if s.engine is not None:
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        if o.model_cache_pvc or o.model_cache_host_path:
            mounts.append({"name": "model-cache", "mountPath": o.model_cache_path})
    mounts += shared_mounts(ctx.files_folders.get(s.name, set()), o, ctx.names.prefix)[1]
    return mounts
