"""The resolved graph: frozen, defaults filled, the form the compiler reads.

``resolve(graph)`` turns what the user wrote into a :class:`GraphSpec`. It is
plain data: it serializes to JSON (``graph inspect --json``) and is the only
thing ``compiler/`` reads from ``graph/``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .custom import UserNode
from .graph import Graph
from .nodes import EngineNode, Frontend, Node
from .plan import EdgeEnds
from .settings import ENGINE_ROLES, KV_PRODUCERS, EngineSettings, Role

__all__ = ["ENGINE_ROLES", "KV_PRODUCERS", "EdgeSpec", "GraphSpec", "Location", "NodeSpec", "Role", "UserCode",
           "resolve", "resolve_node", "shape_of"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Location(_Frozen):
    """File and line of a declaration."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class UserCode(_Frozen):
    """Where the code of a node of your own is (graph.custom), and its ports."""

    file: str = Field(description="the Python file that defines the class")
    qualname: str = Field(description="the class's name in that file")
    accepts: str = Field(description="the port type it takes")
    produces: str = Field(description="the port type it gives")


class NodeSpec(_Frozen, EngineSettings):
    """One node with every default the graph knows resolved (the engine's own defaults are the compiler's).

    Engine nodes carry :class:`graph.settings.EngineSettings` with ``gpus`` worked out; the
    frontend's, router's and processor's own settings are in ``options``.
    """

    name: str
    role: Role
    replicas: int = 1
    env: dict[str, str] = Field(default_factory=dict)
    cpu: float | None = None
    memory: str | None = None
    platform: dict[str, dict[str, Any]] = Field(default_factory=dict)
    where: Location | None = None
    gpus: int = 0
    # Frontend, router, processor and user nodes' settings (role-specific, by field name).
    options: dict[str, Any] = Field(default_factory=dict)
    # Nodes of your own: their code.
    code: UserCode | None = None
    #: The node's class as written (for checking ``--set`` values against its own fields); not data.
    _node_class: type | None = PrivateAttr(default=None)

    @property
    def node_class(self) -> type:
        """The class whose fields this node's settings are (its role's class, or your own node's class)."""
        from .nodes import ROLES

        return (self.__pydantic_private__ or {}).get("_node_class") or ROLES[self.role]

    @property
    def kind(self) -> str:
        """What the pipeline calls this kind of node: its class's name (``Guard``, ``Prefill``)."""
        if self.code is not None:
            return self.code.qualname.rpartition(".")[2]
        return "".join(part.title() for part in self.role.split("_"))

    @property
    def is_engine(self) -> bool:
        """Served by an inference engine."""
        return self.role in ENGINE_ROLES

    @property
    def gpus_total(self) -> int:
        """GPUs for all replicas of this node."""
        return self.gpus * self.nodes * self.replicas

    @property
    def model_name(self) -> str | None:
        """The name clients put in ``model``."""
        return self.served_model_name or self.model


class EdgeSpec(_Frozen, EdgeEnds):
    """One typed edge, with its ports and where it was declared."""

    src_port: str
    dst_port: str
    where: Location | None = None


class GraphSpec(_Frozen):
    """The whole resolved graph."""

    name: str
    description: str = ""
    source: str | None = None
    where: Location | None = Field(default=None, description="file and line of the Graph(...) call")
    nodes: tuple[NodeSpec, ...]
    edges: tuple[EdgeSpec, ...]

    # Lookup tables built on first use. Keyed on the very tuples they index, so a
    # model_copy(update={"nodes": ...}) (which copies private attributes) rebuilds them.
    _index: tuple[Any, dict[str, NodeSpec]] | None = PrivateAttr(default=None)
    _adjacency: tuple[Any, Any, dict[str, list[str]], dict[str, list[str]]] | None = PrivateAttr(default=None)

    # Read through __pydantic_private__ directly: pydantic's attribute fallback for
    # private names costs several calls, and node() runs once per edge in checks.
    def _by_name(self) -> dict[str, NodeSpec]:
        private = self.__pydantic_private__ or {}
        index = private.get("_index")
        if index is None or index[0] is not self.nodes:
            table: dict[str, NodeSpec] = {}
            for n in self.nodes:
                table.setdefault(n.name, n)  # the first of duplicates, as a scan would find
            index = (self.nodes, table)
            self._index = index
        return index[1]

    def _adjacent(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        private = self.__pydantic_private__ or {}
        adjacency = private.get("_adjacency")
        if adjacency is None or adjacency[0] is not self.nodes or adjacency[1] is not self.edges:
            succ: dict[str, list[str]] = {}
            pred: dict[str, list[str]] = {}
            for e in self.edges:
                succ.setdefault(e.src, []).append(e.dst)
                pred.setdefault(e.dst, []).append(e.src)
            adjacency = (self.nodes, self.edges, succ, pred)
            self._adjacency = adjacency
        return adjacency[2], adjacency[3]

    def node(self, name: str) -> NodeSpec:
        """The node called ``name``.

        Raises:
            KeyError: no node has that name.
        """
        return self._by_name()[name]

    def by_role(self, *roles: str) -> list[NodeSpec]:
        """Nodes with any of these roles, in declaration order."""
        return [n for n in self.nodes if n.role in roles]

    def successors(self, name: str) -> list[NodeSpec]:
        """Nodes that ``name`` has an edge to, in edge order."""
        return [self.node(d) for d in self._adjacent()[0].get(name, [])]

    def predecessors(self, name: str) -> list[NodeSpec]:
        """Nodes with an edge to ``name``, in edge order."""
        return [self.node(s) for s in self._adjacent()[1].get(name, [])]

    @property
    def gpus_total(self) -> int:
        """GPUs the whole graph asks for."""
        return sum(n.gpus_total for n in self.nodes)

    @property
    def shape(self) -> str:
        """E/P/D notation of the graph's serving shape, e.g. ``P/D`` or ``E/PD``."""
        roles = {n.role for n in self.nodes}
        if "processor" in roles and not self._media_reaches_a_model():
            roles.discard("processor")  # e.g. speech-to-text of your own between the processor and the model
        return shape_of(roles)

    def _media_reaches_a_model(self) -> bool:
        """Media leaves a processor for an engine, maybe through nodes of your own that pass media on."""
        frontier = [s for p in self.nodes if p.role == "processor" for s in self.successors(p.name)]
        seen: set[str] = set()
        while frontier:
            node = frontier.pop()
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.code is None:
                return True
            if node.code.produces == "Media":
                frontier += self.successors(node.name)
        return False


def shape_of(roles: set[str]) -> str:
    """Name the serving shape from the roles present."""
    if "encode_prefill" in roles:
        return "EP/D"
    if "prefill_decode" in roles:
        return "E/PD" if "encoder" in roles else "PD"
    if "prefill" in roles and "decode" in roles:
        return "E/P/D" if "encoder" in roles else "P/D"
    if "worker" in roles:
        return "EPD" if "processor" in roles else "aggregated"
    return "incomplete"


def _location(node_or_edge: Any) -> Location | None:
    where = getattr(node_or_edge, "where", None)
    return Location(file=where.file, line=where.line) if where else None


def resolve_node(node: Node) -> NodeSpec:
    """Fill a node's defaults into its spec."""
    common: dict[str, Any] = dict(
        name=node.name,
        role=node.ROLE,
        replicas=node.replicas,
        env=dict(node.env),
        cpu=node.resources.cpu,
        memory=node.resources.memory,
        platform={k: dict(v) for k, v in node.platform.items()},
        where=_location(node),
    )
    if isinstance(node, EngineNode):
        parallel = node.tp * node.pp * node.dp
        common.update(node.model_dump(include=set(EngineSettings.model_fields)))
        common["gpus"] = node.gpus if node.gpus is not None else max(parallel // node.nodes, 1)
    else:
        skip = set(Node.model_fields)
        options = {k: v for k, v in node.model_dump(mode="json").items() if k not in skip}
        if isinstance(node, Frontend):
            common["port"] = options.pop("port")
        common["options"] = options
        if isinstance(node, UserNode):
            cls = type(node)
            inputs, outputs = cls.INPUTS, cls.OUTPUTS
            common["code"] = UserCode(file=cls.source_file() or "<unknown>", qualname=cls.__qualname__,
                                      accepts=inputs[0].type.value, produces=outputs[0].type.value)
    spec = NodeSpec(**common)
    spec._node_class = type(node)
    return spec


def resolve(graph: Graph) -> GraphSpec:
    """The resolved, frozen form of ``graph`` (names assigned, defaults filled)."""
    graph.assign_names()
    nodes = tuple(resolve_node(n) for n in graph.nodes)
    engine_names = {n.name for n in nodes if n.is_engine}
    edges = tuple(
        EdgeSpec(
            src=e.src.name,
            src_port=e.src_port,
            dst=e.dst.name,
            dst_port=e.dst_port,
            type=e.type.value,
            transport="nixl" if e.is_tensor and {e.src.name, e.dst.name} <= engine_names else "http",
            where=_location(e),
        )
        for e in graph.edges
    )
    source = graph.where.file if graph.where else None
    return GraphSpec(
        name=graph.name, description=graph.description, source=source, where=_location(graph), nodes=nodes, edges=edges
    )
