"""Load the class of a node of your own from its file, and make the node from its settings."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from typing import Any

from graph.custom import RequestNode, ResponseNode, UserNode
from graph.graph import detached


class LoadError(Exception):
    """The node's code cannot be loaded; the message says what to fix."""


def load_node(path: str, qualname: str, settings: dict[str, Any], kind: str) -> UserNode:
    """Import ``path``, find ``qualname`` in it and make the node from ``settings`` (no graph involved).

    The file is imported under a unique module name, as the pipeline loader does; if it is the pipeline
    file itself its graph is built and dropped: nothing is started by building a graph.

    Raises:
        LoadError: the file does not import, has no such class, the class is of the wrong kind, or the
            settings do not fit it.
    """
    name = f"_servegraph_node_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"'{path}' is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # the file may import modules beside it
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's code: report it, do not crash on it
        raise LoadError(f"importing '{path}' raised {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise LoadError(f"'{path}' has no class '{qualname}'")
    want = RequestNode if kind == "request" else ResponseNode
    if not (isinstance(obj, type) and issubclass(obj, want)):
        raise LoadError(f"'{qualname}' in '{path}' is not a {want.__name__}")
    with detached():
        node = obj(**settings)
    problems = node.field_problems()
    if problems:
        raise LoadError(f"the settings of {qualname} do not fit it: " + "; ".join(p.message for p in problems))
    return node
