"""ConfigMaps: our processes' config files (what they read), and the Plan for people and tools.

The code of a node of the user's own travels in the first ConfigMap too, beside its
config (``Service.files``): the compiled folder is then all a cluster needs (no
image to build and push for a change to a node's code), and the code's digest in
the pod's annotations rolls the pod when it changes. The price is the API server's
1 MiB per ConfigMap; code that needs packages our image lacks, or is larger, goes in
an image of its own (``platform={"k8s": {"image": ...}}`` on the node).

Two ConfigMaps because the API server refuses one over 1 MiB and a large
graph's plan.json passes that long before the config files do. A plan.json
too big even alone is stored gzipped (deterministically) as binaryData.
"""

from __future__ import annotations

import base64
import gzip
from typing import Any

import orjson

from graph.plan import Service

from .k8s_meta import file_key, graph_metadata
from .k8s_pods import PodContext
from .output import to_yaml

#: The API server refuses a ConfigMap whose data exceed 1 MiB.
CONFIG_MAP_LIMIT = 1024 * 1024


def config_text(s: Service) -> str:
    """A service's config file, in the format its name says."""
    assert s.config is not None
    if s.config_file and s.config_file.endswith((".yaml", ".yml")):
        return to_yaml(s.config)
    return json_text(s.config)


def json_text(data: Any) -> str:
    """output.to_json's format (sorted keys, 2-space indent, trailing newline), from orjson's C encoder:
    the stdlib's indenting encoder is pure Python and took half a second on a 1,000-node plan."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def config_maps(ctx: PodContext) -> list[dict[str, Any]]:
    """The ConfigMap of config files (mounted by pods) and the ConfigMap holding plan.json.

    Raises:
        ValueError: the config files alone exceed what the API server accepts.
    """
    files = {s.config_file: config_text(s) for s in ctx.plan.services if s.config_file and s.config is not None}
    code = {file_key(path): text for s in ctx.plan.services for path, text in s.files.items()}
    size = sum(len(k) + len(v.encode()) for k, v in files.items())
    code_size = sum(len(k) + len(v.encode()) for k, v in code.items())
    if size + code_size > CONFIG_MAP_LIMIT:
        what = f"{size} bytes of config files and {code_size} of your nodes' code" if code else f"{size} bytes of config files"
        raise ValueError(
            f"ConfigMap '{ctx.names.config_map}' would hold {what}, over the API server's 1 MiB; split the graph, "
            "lower replica counts, or put large node code in an image of its own (platform={'k8s': {'image': ...}})"
        )
    files.update(code)
    plan_json = json_text(ctx.plan.model_dump(mode="json"))
    if len(plan_json.encode()) <= CONFIG_MAP_LIMIT:
        plan_data: dict[str, Any] = {"data": {"plan.json": plan_json}}
    else:
        packed = gzip.compress(plan_json.encode(), mtime=0)
        plan_data = {"binaryData": {"plan.json.gz": base64.b64encode(packed).decode()}}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(ctx, ctx.names.config_map), "data": files},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(ctx, ctx.names.plan_map), **plan_data},
    ]


def _meta(ctx: PodContext, name: str) -> dict[str, Any]:
    return {"name": name, **graph_metadata(ctx.plan, ctx.options.namespace)}


__all__ = ["CONFIG_MAP_LIMIT", "config_maps", "config_text"]
