"""The Graph container and the ``>>`` operator that joins nodes by typed ports."""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from ._where import caller_location
from .errors import GraphError, SourceLocation
from .nodes import Node, PortRef
from .ports import Port, PortType

_ACTIVE: contextvars.ContextVar["Graph | None"] = contextvars.ContextVar("servegraph_active_graph", default=None)
_COLLECTOR: contextvars.ContextVar["list[Graph] | None"] = contextvars.ContextVar("servegraph_collector", default=None)
_DETACHED: contextvars.ContextVar[bool] = contextvars.ContextVar("servegraph_detached", default=False)


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """Nodes made inside the block belong to no graph: a process that serves a node of your own
    makes it from its settings, outside any pipeline."""
    token = _DETACHED.set(True)
    try:
        yield
    finally:
        _DETACHED.reset(token)


@contextlib.contextmanager
def collect_graphs() -> Iterator[list["Graph"]]:
    """Every Graph created inside the block, in creation order.

    For the loader: ``with Graph("x"):`` (no ``as g``) binds no module variable,
    yet the file clearly defines that graph.
    """
    found: list[Graph] = []
    token = _COLLECTOR.set(found)
    try:
        yield found
    finally:
        _COLLECTOR.reset(token)

# Edges that are not possible because a combined role already does the other half.
# Each key is (producer role, consumer role); the value is the hint.
_COMBINED_ROLE_HINTS: dict[tuple[str, str], str] = {
    ("prefill_decode", "decode"): "PrefillDecode already decodes and sends no KV; use Prefill if decode runs apart",
    ("worker", "decode"): "Worker already decodes and sends no KV; use Prefill (P/D) or EncodePrefill (EP/D)",
    ("encoder", "worker"): "Worker encodes its own media; use PrefillDecode for E/PD",
    ("encoder", "encode_prefill"): "EncodePrefill encodes its own media; use Prefill for E/P/D",
    ("encode_prefill", "prefill"): "EncodePrefill already prefills; connect it to a Decode",
    ("prefill", "prefill_decode"): "PrefillDecode prefills itself; connect the Prefill to a Decode",
    ("encode_prefill", "prefill_decode"): "both prefill; EncodePrefill >> Decode (EP/D) or Encoder >> PrefillDecode (E/PD)",
    ("encoder", "decode"): "Decode needs KV, not embeddings; put a Prefill between them (E/P/D)",
}


@dataclass(frozen=True)
class Edge:
    """A typed connection from one node's output port to another's input port."""

    src: Node
    src_port: str
    dst: Node
    dst_port: str
    type: PortType
    where: SourceLocation | None

    @property
    def is_tensor(self) -> bool:
        """KV and Embeddings edges move tensors (NIXL between engine nodes)."""
        return self.type.is_tensor


class Graph:
    """A serving graph: nodes joined by typed edges.

    Use it as a context manager; nodes created inside belong to it::

        with Graph("llama-pd") as g:
            Frontend() >> Prefill(model="m") >> Decode(model="m")

    Problems found while the graph is written (bad fields, impossible edges)
    are kept and reported by validation together with all the others.
    """

    def __init__(self, name: str, description: str = "") -> None:
        self.name = name
        self.description = description
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.where = caller_location()
        self._token: contextvars.Token | None = None
        self._failed: list[_FailedEdge] = []
        self._extra_problems: list[GraphError] = []
        collector = _COLLECTOR.get()
        if collector is not None:
            collector.append(self)

    def __enter__(self) -> "Graph":
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None

    @staticmethod
    def adopt(node: Node, problems: list[GraphError]) -> None:
        """Attach a newly created node to the active graph (called by Node)."""
        if _DETACHED.get():
            return
        graph = _ACTIVE.get()
        if graph is None:
            raise GraphError(
                "no-graph",
                f"{type(node).__name__} created outside a graph",
                "create nodes inside `with Graph('name') as g:` or call g.add(node)",
                where=node.where,
            )
        graph.add(node, problems)

    def add(self, node: Node, problems: Iterable[GraphError] = ()) -> Node:
        """Add a node (nodes made inside ``with graph:`` are added already).

        Args:
            node: the node; a node belongs to one graph.

        Raises:
            GraphError: the node already belongs to another graph.
            problems: problems found while creating it, reported by validation
                (bad field values are kept on the node itself).
        """
        owner = _owner(node)
        if owner is not None and owner is not self:
            raise GraphError(
                "cross-graph-node",
                f"{type(node).__name__} '{node.name or node.ROLE}' belongs to graph '{owner.name}'; it cannot be "
                f"added to graph '{self.name}' as well",
                f"create a new node for graph '{self.name}'", node=node.name, where=caller_location(),
            )
        if owner is None:
            node._graph = self
            self.nodes.append(node)
        for problem in problems:
            problem.node = problem.node or node.name
            self._extra_problems.append(problem)
        return node

    @property
    def problems(self) -> list[GraphError]:
        """Problems found while the graph was written: bad fields, then impossible edges.

        Names are assigned first, so each problem names its node as validation will.
        """
        self.assign_names()
        out = [p for n in self.nodes for p in n.field_problems()]
        out += self._extra_problems
        out += [f.problem() for f in self._failed]
        return out

    def node(self, name: str) -> Node:
        """The node called ``name`` (after names are assigned by :meth:`assign_names`)."""
        self.assign_names()
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def assign_names(self) -> None:
        """Give every unnamed node its role's name, numbered when taken.

        Names are given late (at resolve or when a message needs them), so a
        name the user writes further down the file is never taken by a default.
        """
        unnamed = [n for n in self.nodes if not n.name]
        if not unnamed:
            return
        taken = {n.name for n in self.nodes if n.name}
        next_suffix: dict[str, int] = {}
        for n in unnamed:
            base = n.default_name()
            candidate = base
            i = next_suffix.get(base, 2)
            while candidate in taken:
                candidate, i = f"{base}-{i}", i + 1
            next_suffix[base] = i
            n.name = candidate
            taken.add(candidate)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.nodes)} nodes, {len(self.edges)} edges)"


def _owner(node: Node) -> "Graph | None":
    """The node's graph; read past pydantic's slow private-attribute lookup (hot when building big graphs)."""
    return (node.__pydantic_private__ or {}).get("_graph")


def connect(left: Any, right: Any, where: SourceLocation | None) -> Any:
    """``left >> right``: join every producer on the left to every consumer on the right.

    Either side may be a node, ``node["port"]`` or a list of those. Returns the
    right side so that chains read left to right.
    """
    for src in _as_list(left):
        for dst in _as_list(right):
            _connect_one(src, dst, where)
    return right


def _as_list(side: Any) -> list[Node | PortRef]:
    if isinstance(side, (Node, PortRef)):
        return [side]
    if isinstance(side, (list, tuple)) and side and all(isinstance(x, (Node, PortRef)) for x in side):
        return list(side)
    raise TypeError(
        f"cannot connect {type(side).__name__!s}: use a node, node['port'] or a list of nodes with >>"
    )


@dataclass(frozen=True)
class _FailedEdge:
    """An edge that could not be made; diagnosed when problems are read (names known then)."""

    src: Node | PortRef
    dst: Node | PortRef
    where: SourceLocation | None

    def problem(self) -> GraphError:
        return _diagnose(self.src, self.dst, self.where)


@dataclass(frozen=True)
class _CrossGraphEdge:
    """``a >> b`` where ``a`` and ``b`` belong to different graphs; reported in both."""

    src: Node
    src_graph: "Graph"
    dst: Node
    dst_graph: "Graph"
    where: SourceLocation | None

    def problem(self) -> GraphError:
        self.src_graph.assign_names()
        self.dst_graph.assign_names()
        src = f"{type(self.src).__name__} '{self.src.name}'"
        dst = f"{type(self.dst).__name__} '{self.dst.name}'"
        return EdgeError(
            "cross-graph-edge",
            f"{src} >> {dst}: '{self.src.name}' belongs to graph '{self.src_graph.name}' and '{self.dst.name}' to "
            f"graph '{self.dst_graph.name}'; an edge cannot join two graphs",
            f"create both nodes inside the same `with Graph(...)` block (a node belongs to the graph it was "
            f"created in), or make a new node for graph '{self.dst_graph.name}'",
            node=self.dst.name, where=self.where, src=self.src.name, dst=self.dst.name,
        )


@dataclass
class EdgeError(GraphError):
    """A problem with an edge ``src >> dst`` (``node`` names the node at fault)."""

    src: str | None = None
    dst: str | None = None


def _connect_one(src: Node | PortRef, dst: Node | PortRef, where: SourceLocation | None) -> None:
    src_node = src.node if isinstance(src, PortRef) else src
    dst_node = dst.node if isinstance(dst, PortRef) else dst
    graph: Graph | None = _owner(src_node) or _owner(dst_node)
    if graph is None:
        raise GraphError("no-graph", "nodes joined outside a graph", "create them inside `with Graph(...)`", where=where)
    other = _owner(dst_node) if graph is _owner(src_node) else None
    if other is not None and other is not graph:
        # with Graph("a"): p = Prefill(...)   with Graph("b"): p >> Decode(...)  -- nodes never move between graphs
        crossing = _CrossGraphEdge(src_node, graph, dst_node, other, where)
        graph._failed.append(crossing)
        other._failed.append(crossing)
        return
    for n in (src_node, dst_node):
        graph.add(n)
    pairs = _port_pairs(src, dst)
    if pairs is not None and len(pairs) == 1:
        o, i, t = pairs[0]
        graph.edges.append(Edge(src_node, o.name, dst_node, i.name, t, where))
    else:
        graph._failed.append(_FailedEdge(src, dst, where))


def _port_pairs(src: Node | PortRef, dst: Node | PortRef) -> list[tuple[Port, Port, PortType]] | None:
    """Each (output, input) pair that fits, with its first common type; None if a named port is unknown."""
    src_node = src.node if isinstance(src, PortRef) else src
    dst_node = dst.node if isinstance(dst, PortRef) else dst
    outs = _pick_ports(src, src_node.OUTPUTS)
    ins = _pick_ports(dst, dst_node.INPUTS)
    if not outs and isinstance(src, PortRef) or not ins and isinstance(dst, PortRef):
        return None
    unique: dict[tuple[str, str], tuple[Port, Port, PortType]] = {}
    for o in outs:
        for i in ins:
            common = [t for t in o.accepts if t in i.accepts]
            if common:
                unique.setdefault((o.name, i.name), (o, i, common[0]))
    return list(unique.values())


def _diagnose(src: Node | PortRef, dst: Node | PortRef, where: SourceLocation | None) -> GraphError:
    """Why ``src >> dst`` made no edge (called once names are assigned)."""
    src_node = src.node if isinstance(src, PortRef) else src
    dst_node = dst.node if isinstance(dst, PortRef) else dst
    problem = _named_port_problem(src, src_node.OUTPUTS, "output", where) or _named_port_problem(
        dst, dst_node.INPUTS, "input", where
    )
    if problem:
        problem.src, problem.dst = src_node.name, dst_node.name
        return problem
    outs = _pick_ports(src, src_node.OUTPUTS)
    ins = _pick_ports(dst, dst_node.INPUTS)
    return _edge_problem(src_node, outs, dst_node, ins, _port_pairs(src, dst) or [], where)


def _pick_ports(side: Node | PortRef, ports: tuple[Port, ...]) -> tuple[Port, ...]:
    if isinstance(side, PortRef):
        return tuple(p for p in ports if p.name == side.port)
    return ports


def _named_port_problem(
    side: Node | PortRef, ports: tuple[Port, ...], kind: str, where: SourceLocation | None
) -> GraphError | None:
    if not isinstance(side, PortRef) or any(p.name == side.port for p in ports):
        return None
    node = side.node
    have = ", ".join(p.describe() for p in ports) or "none"
    return EdgeError(
        "unknown-port",
        f"{type(node).__name__} '{node.name}' has no {kind} port '{side.port}'",
        f"its {kind} ports are: {have}",
        node=node.name,
        port=side.port,
        where=where,
    )


def _edge_problem(
    src: Node,
    outs: tuple[Port, ...],
    dst: Node,
    ins: tuple[Port, ...],
    candidates: list[tuple[Port, Port, PortType]],
    where: SourceLocation | None,
) -> GraphError:
    edge = f"{type(src).__name__} '{src.name}' >> {type(dst).__name__} '{dst.name}'"
    if candidates:
        options = "; ".join(f"{src.name}['{o.name}'] >> {dst.name}['{i.name}']" for o, i, _ in candidates)
        return EdgeError(
            "ambiguous-port",
            f"{edge}: several ports fit ({len(candidates)})",
            f"name the ports: {options}",
            node=dst.name,
            where=where,
            src=src.name,
            dst=dst.name,
        )
    combined = _COMBINED_ROLE_HINTS.get((src.ROLE, dst.ROLE))
    if combined:
        return EdgeError(
            "combined-role-split", f"{edge}: a combined role is wired as if split", combined,
            node=dst.name, where=where, src=src.name, dst=dst.name,
        )
    produced = ", ".join(p.describe() for p in outs) or "no outputs"
    accepted = ", ".join(p.describe() for p in ins) or "no inputs"
    return EdgeError(
        "port-type-mismatch",
        f"{edge}: no output of '{src.name}' ({produced}) fits an input of '{dst.name}' ({accepted})",
        "connect nodes whose port types match (see `graph inspect`), or put the missing stage between them",
        node=dst.name,
        where=where,
        src=src.name,
        dst=dst.name,
    )
