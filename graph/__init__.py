"""servegraph's graph model: typed nodes and ports, the Graph, validation.

Pure data and checks; knows nothing of targets or engines' flags.
"""

from .errors import GraphError, GraphInvalid, PipelineLoadError, SourceLocation
from .graph import Edge, Graph
from .loader import load_graph
from .nodes import (
    Decode,
    EncodePrefill,
    Encoder,
    Frontend,
    Node,
    Prefill,
    PrefillDecode,
    Processor,
    Resources,
    Router,
    Worker,
)
from .ports import KV, Embeddings, Media, PortType, Text, Tokens
from .spec import EdgeSpec, GraphSpec, NodeSpec, resolve
from .validate import ValidateOptions, validate, validate_spec

__all__ = [
    "Decode", "Edge", "EdgeSpec", "Embeddings", "EncodePrefill", "Encoder", "Frontend", "Graph", "GraphError",
    "GraphInvalid", "GraphSpec", "KV", "Media", "Node", "NodeSpec", "PipelineLoadError", "PortType", "Prefill",
    "PrefillDecode", "Processor", "Resources", "Router", "SourceLocation", "Text", "Tokens", "ValidateOptions",
    "Worker", "load_graph", "resolve", "validate", "validate_spec",
]
