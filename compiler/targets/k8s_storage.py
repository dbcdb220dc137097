"""The folder of a files edge: one ReadWriteMany volume for the pods at both ends.

An engine that hands its encoder output over as files (vLLM's
ECExampleConnector: a Plan edge whose transport is ``files``) writes them into
a folder its consumer reads, and two pods may land on different Kubernetes
nodes: the folder must be one shared volume. ``-O shared_cache_pvc`` names a
claim of yours; without it the output claims one (``storage.yaml``,
ReadWriteMany, ``-O shared_cache_storage_class``, ``-O shared_cache_size``), so
no graph ever needs a volume made by hand. The claim is mounted at
``shared_cache_path`` when the edge's folder lies under it (the CLI plans the
folder there), else at the folder itself.
"""

from __future__ import annotations

import posixpath
from typing import Any

from graph.plan import Plan

from .k8s_settings import Options

_VOLUME = "shared-cache"


def files_folders(plan: Plan) -> dict[str, set[str]]:
    """Service name -> the folders of files edges it is an end of."""
    out: dict[str, set[str]] = {}
    for edge in plan.edges:
        if edge.transport != "files" or edge.settings is None or not edge.settings.folder:
            continue
        for node in (edge.src, edge.dst):
            for s in plan.of_node(node):
                out.setdefault(s.name, set()).add(edge.settings.folder)
    return out


def claim_name(options: Options, prefix: str) -> str:
    """The shared claim's name: the user's, or the one the output makes."""
    return options.shared_cache_pvc or prefix + _VOLUME


def shared_claim(plan: Plan, options: Options, prefix: str, metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The PersistentVolumeClaim the output makes, when a files edge needs one and none was given."""
    if options.shared_cache_pvc or not files_folders(plan):
        return None
    spec: dict[str, Any] = {"accessModes": ["ReadWriteMany"],
                            "resources": {"requests": {"storage": options.shared_cache_size}}}
    if options.shared_cache_storage_class:
        spec["storageClassName"] = options.shared_cache_storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {**metadata, "name": claim_name(options, prefix)}, "spec": spec}


def shared_mounts(folders: set[str], options: Options, prefix: str) -> tuple[list[dict], list[dict]]:
    """(volumes, mounts) of the shared claim for a service whose files edges use ``folders`` (its
    :func:`files_folders` entry; none: it is the end of no files edge)."""
    if not folders:
        return [], []
    base = options.shared_cache_path.rstrip("/") or "/"
    paths = sorted({base if _under(f, base) else f for f in folders})
    vols = [{"name": _VOLUME, "persistentVolumeClaim": {"claimName": claim_name(options, prefix)}}]
    return vols, [{"name": _VOLUME, "mountPath": p} for p in paths]


def _under(folder: str, base: str) -> bool:
    folder = posixpath.normpath(folder)
    return folder == base or folder.startswith(base.rstrip("/") + "/")


__all__ = ["claim_name", "files_folders", "shared_claim", "shared_mounts"]
