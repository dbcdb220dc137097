"""servegraph's graph, in its three forms, and the settings they share.

* as written: typed nodes and ports joined by ``>>`` in a ``Graph`` (:mod:`graph.nodes`,
  :mod:`graph.graph`), checked by :mod:`graph.validation` (the checks: :mod:`graph.checks`);
* resolved: defaults filled, frozen (:mod:`graph.spec`), what the compiler reads;
* lowered to processes: the Plan (:mod:`graph.plan`), what targets and our processes read.

Pure data and checks; knows nothing of targets or of any engine. Names are imported
on first use, so a process that reads only the Plan (``import graph.plan``) does not
load the authoring layer and its dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "GraphError": "errors", "GraphInvalid": "errors", "PipelineLoadError": "errors", "SourceLocation": "errors",
    "Edge": "graph", "Graph": "graph",
    "load_graph": "loader",
    "Decode": "nodes", "EncodePrefill": "nodes", "Encoder": "nodes", "Frontend": "nodes", "Node": "nodes",
    "Prefill": "nodes", "PrefillDecode": "nodes", "Processor": "nodes", "Router": "nodes", "Worker": "nodes",
    "Resources": "settings",
    "Refusal": "custom", "Request": "custom", "RequestNode": "custom", "ResponseNode": "custom",
    "Answer": "ports", "KV": "ports", "Embeddings": "ports", "Media": "ports", "PortType": "ports", "Text": "ports", "Tokens": "ports",
    "EdgeSpec": "spec", "GraphSpec": "spec", "NodeSpec": "spec", "resolve": "spec",
    "ValidateOptions": "validation", "validate": "validation", "validate_spec": "validation",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'graph' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and editors: the names as if imported eagerly
    from .errors import GraphError, GraphInvalid, PipelineLoadError, SourceLocation
    from .graph import Edge, Graph
    from .loader import load_graph
    from .nodes import Decode, EncodePrefill, Encoder, Frontend, Node, Prefill, PrefillDecode, Processor, Router, Worker
    from .custom import Refusal, Request, RequestNode, ResponseNode
    from .ports import KV, Answer, Embeddings, Media, PortType, Text, Tokens
    from .settings import Resources
    from .spec import EdgeSpec, GraphSpec, NodeSpec, resolve
    from .validation import ValidateOptions, validate, validate_spec
