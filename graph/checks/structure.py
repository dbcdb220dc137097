"""Structure: one frontend, no cycles, every node reachable and every required port connected."""

from __future__ import annotations

from typing import Iterator

import networkx as nx

from ..errors import GraphError
from ..nodes import ports_of
from ..spec import GraphSpec
from .base import ValidateOptions, digraph, duplicated, err, label, names, where


def one_frontend(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Prefill(...) >> Decode(...)            -- no Frontend
    # Frontend(); Frontend(port=8001)         -- two
    frontends = spec.by_role("frontend")
    if not frontends:
        yield GraphError("no-frontend", f"graph '{spec.name}' has no Frontend", "add `Frontend() >> ...` as the entry point")
    for extra in frontends[1:]:
        yield err(
            "several-frontends",
            f"{label(extra)} is a second frontend (the first is '{frontends[0].name}')",
            "a graph has exactly one Frontend; give it replicas= to scale it",
            extra,
        )


def acyclic(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # r1 = Router(); r2 = Router(); fe >> r1 >> r2 >> r1  -- any loop
    # One message per strongly connected component (never an enumeration of all
    # cycles, which grows exponentially).
    g = digraph(spec)
    order = {n.name: i for i, n in enumerate(spec.nodes)}
    dups = duplicated(spec)
    for component in nx.strongly_connected_components(g):
        first = min(component, key=order.__getitem__)
        if len(component) == 1 and not g.has_edge(first, first) or component & dups:
            continue
        cycle = nx.find_cycle(g.subgraph(component), source=first)
        path = " >> ".join([cycle[0][0], *(dst for _, dst in cycle)])
        yield err("cycle", f"cycle: {path}", "requests flow one way: remove one edge of the cycle", spec.node(first))


def duplicate_edges(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # p >> d; p >> d  -- the same edge twice
    seen: set[tuple[str, str, str, str]] = set()
    dups = duplicated(spec)
    for e in spec.edges:
        key = (e.src, e.src_port, e.dst, e.dst_port)
        if key in seen and not {e.src, e.dst} & dups:
            yield GraphError(
                "duplicate-edge",
                f"edge {e.src}['{e.src_port}'] >> {e.dst}['{e.dst_port}'] is declared more than once",
                "remove the repeated >>; replicas= scales a node, not extra edges",
                node=e.dst,
                where=where(e),
            )
        seen.add(key)


def connected(spec: GraphSpec, options: ValidateOptions) -> Iterator[GraphError]:
    # Frontend() >> Worker(model="m"); Worker(model="m", name="spare")  -- spare is dangling
    # Frontend() >> Worker(model="m"); Router() >> Worker(model="m")     -- router unreachable
    # At most one message per mistake: a dangling node is only "dangling"; of an
    # unreachable part only its entry is named (with the nodes behind it).
    g = digraph(spec)
    for n in spec.nodes:
        if g.degree(n.name) == 0 and n.name not in options.quiet_nodes:
            hint = "connect it with >> or remove it" if n.role != "frontend" else "connect it to a worker: Frontend() >> Worker(...)"
            yield err("dangling", f"{label(n)} has no edges", hint, n)
    frontends = spec.by_role("frontend")
    if len(frontends) != 1:
        return  # reported by one_frontend; reachability from which frontend is moot
    unreachable = _unreachable(spec, g, frontends[0].name)
    if not unreachable:
        return
    part = g.subgraph(unreachable)
    order = {n.name: i for i, n in enumerate(spec.nodes)}
    condensed = nx.condensation(part)
    for comp in sorted(condensed.nodes, key=lambda c: min(order[m] for m in condensed.nodes[c]["members"])):
        if condensed.in_degree(comp):
            continue
        entry = min(condensed.nodes[comp]["members"], key=order.__getitem__)
        if entry in options.quiet_nodes:
            continue
        behind = sorted(nx.descendants(part, entry), key=order.__getitem__)
        also = f" (nor can {names(behind)}, fed from it)" if behind else ""
        yield err(
            "unreachable",
            f"{label(spec.node(entry))} cannot be reached from frontend '{frontends[0].name}'{also}",
            "connect a path from the frontend to it, or remove it",
            spec.node(entry),
        )


def _unreachable(spec: GraphSpec, g: nx.DiGraph, frontend: str) -> set[str]:
    """Nodes with edges that no path from the frontend reaches (dangling ones excluded)."""
    reachable = nx.descendants(g, frontend) | {frontend}
    return {n.name for n in spec.nodes if n.name not in reachable and g.degree(n.name) > 0}


def required_ports(spec: GraphSpec, options: ValidateOptions) -> Iterator[GraphError]:
    # Router() >> Worker(model="m"), no Frontend  -- Router's requests input is fed by nobody
    # Frontend() >> Prefill(model="m")            -- Prefill's KV goes nowhere
    # Dangling and unreachable nodes already have their message; no second one here.
    g = digraph(spec)
    frontends = spec.by_role("frontend")
    skip = set(options.quiet_nodes)
    if len(frontends) == 1:
        skip |= _unreachable(spec, g, frontends[0].name)
    incoming = {(e.dst, e.dst_port) for e in spec.edges}
    outgoing = {(e.src, e.src_port) for e in spec.edges}
    for n in spec.nodes:
        if n.name in skip or g.degree(n.name) == 0:
            continue
        inputs, outputs = ports_of(n.role, *((n.code.accepts, n.code.produces) if n.code else ()))
        for port in inputs:
            if port.required and (n.name, port.name) not in incoming:
                yield err(
                    "missing-input",
                    f"{label(n)}: input port '{port.describe()}' is not connected",
                    _MISSING_INPUT_HINTS.get(n.role, "connect a node whose output has that type"),
                    n,
                    port=port.name,
                )
        used = [p for p in outputs if (n.name, p.name) in outgoing]
        needed = [p for p in outputs if not p.optional]
        if needed and not used and n.role != "frontend":
            port = needed[0]
            yield err(
                "unused-output",
                f"{label(n)}: output port '{port.describe()}' goes nowhere",
                _UNUSED_OUTPUT_HINTS.get(n.role, "connect it to a consumer or remove the node"),
                n,
                port=port.name,
            )


_MISSING_INPUT_HINTS = {
    "decode": "feed it KV: Prefill(...) >> Decode(...); for one engine doing both use Worker",
    "encoder": "feed it requests with media: Processor() >> Encoder(...)",
    "processor": "put it after the frontend: Frontend() >> Processor()",
    "router": "put it after the frontend: Frontend() >> Router()",
}
_UNUSED_OUTPUT_HINTS = {
    "prefill": "connect it to a decode: Prefill(...) >> Decode(...); without one use Worker",
    "encode_prefill": "connect it to a decode: EncodePrefill(...) >> Decode(...)",
    "encoder": "connect it to a Prefill or PrefillDecode that uses its embeddings",
    "processor": "connect it to an Encoder or a Worker",
    "router": "connect it to the workers it routes to",
}


def serves_something(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Frontend() >> Processor()   -- no engine anywhere
    if spec.nodes and not any(n.is_engine for n in spec.nodes):
        yield GraphError("no-engine", f"graph '{spec.name}' has no engine node", "add a Worker, or Prefill >> Decode")

