"""Edges that move tensors (KV, embeddings): both ends must be able to exchange them.

Which engines can pair, and with which parallelism, is the compiler's check
(each engine's adapter knows its connector's rules); here only what any engine needs.
"""

from __future__ import annotations

from typing import Iterator

from ..errors import GraphError
from ..spec import EdgeSpec, GraphSpec, NodeSpec
from .base import ValidateOptions, where


def _tensor_pairs(spec: GraphSpec) -> Iterator[tuple[EdgeSpec, NodeSpec, NodeSpec]]:
    for e in spec.edges:
        if e.type in ("KV", "Embeddings"):
            src, dst = spec.node(e.src), spec.node(e.dst)
            if src.is_engine and dst.is_engine:
                yield e, src, dst


def tensor_edges_compatible(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Prefill(model="a") >> Decode(model="b")   -- whether the two engines can pair is the compiler's check
    for e, src, dst in _tensor_pairs(spec):
        edge = f"{e.type} edge {src.name} >> {dst.name}"
        at = where(e) or where(dst)
        renamed = src.served_model_name or dst.served_model_name
        if src.model_name != dst.model_name and (renamed or src.model == dst.model):  # else: pd-model-mismatch
            # The frontend routes by the name clients send: each name's requests go through the nodes that
            # serve it, so a prefill and a decode under different names never meet (every request: 503).
            yield GraphError(
                "pd-served-name-mismatch",
                f"{edge}: served model names differ ('{src.model_name}' vs '{dst.model_name}'); requests for "
                "either name would find no complete path through the graph",
                f"give '{src.name}' and '{dst.name}' the same served_model_name= (or none, to use the model)",
                node=dst.name,
                field="served_model_name",
                where=at,
            )
        for field, what in (("model", "model"), ("dtype", "dtype"), ("kv_cache_dtype", "KV-cache dtype")):
            if field == "kv_cache_dtype" and e.type != "KV":
                continue
            a, b = getattr(src, field), getattr(dst, field)
            if a != b:
                yield GraphError(
                    f"pd-{field.replace('_', '-')}-mismatch",
                    f"{edge}: {what} differs ('{a}' vs '{b}')",
                    f"set the same {field}= on '{src.name}' and '{dst.name}'",
                    node=dst.name,
                    field=field,
                    where=at,
                )

