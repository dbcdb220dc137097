"""What the graph leaves to the compiler: which engine serves each engine node, and ``--mock``.

graph/ knows no engine: a node that names none gets the registry's default
here, and ``--mock`` puts the mock engine in every engine node's place,
standing in for the node's own engine (so it speaks that engine's protocol and
the graph is still checked against that engine's rules).
"""

from __future__ import annotations

from graph.spec import GraphSpec, NodeSpec

from .engines import DEFAULT_ENGINE, MOCK_ENGINE, get_adapter, known_engines


def with_engines(spec: GraphSpec, *, mock: bool = False) -> GraphSpec:
    """A copy of ``spec`` whose engine nodes all name their engine (the mock's with the engine it imitates)."""
    nodes = tuple(_engine_of(n, mock) for n in spec.nodes)
    return spec.model_copy(update={"nodes": nodes}) if nodes != spec.nodes else spec


def _engine_of(node: NodeSpec, mock: bool) -> NodeSpec:
    if not node.is_engine:
        return node
    engine = node.engine or DEFAULT_ENGINE
    update: dict[str, str] = {}
    if engine != node.engine:
        update["engine"] = engine
    if engine in known_engines() and get_adapter(engine).simulated:
        if node.imitate is None:
            update["imitate"] = DEFAULT_ENGINE
    elif mock:
        update.update(engine=MOCK_ENGINE, imitate=engine)
    return node.model_copy(update=update) if update else node


def protocol_of(node: NodeSpec) -> str:
    """The frontend protocol a (resolved) engine node speaks."""
    return get_adapter(node.engine or DEFAULT_ENGINE).protocol_for(node)


def is_simulated(node: NodeSpec) -> bool:
    """The node runs the built-in mock engine."""
    return node.engine in known_engines() and get_adapter(node.engine).simulated
