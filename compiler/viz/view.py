"""The tiny node/edge view every format draws: what each box and arrow says, and its style."""

from __future__ import annotations

from dataclasses import dataclass

from graph.spec import GraphSpec, NodeSpec


class VizError(Exception):
    """A picture cannot be made (unknown format, missing tool)."""


#: Role -> (title, fill colour, border colour). One palette for every format.
ROLE_STYLE: dict[str, tuple[str, str, str]] = {
    "frontend": ("Frontend", "#e8f0fe", "#1a73e8"),
    "router": ("Router", "#fef7e0", "#f9ab00"),
    "processor": ("Processor", "#f3e8fd", "#9334e6"),
    "encoder": ("Encoder", "#e6f4ea", "#188038"),
    "prefill": ("Prefill", "#fce8e6", "#c5221f"),
    "decode": ("Decode", "#e4f7fb", "#007b83"),
    "worker": ("Worker", "#f1f3f4", "#5f6368"),
    "encode_prefill": ("EncodePrefill", "#fde7d9", "#e8710a"),
    "prefill_decode": ("PrefillDecode", "#e8eaf6", "#3949ab"),
    # Nodes of your own: the box says the class's name.
    "request_node": ("RequestNode", "#fff8e1", "#b06000"),
    "response_node": ("ResponseNode", "#fce4ec", "#ad1457"),
}
HTTP_COLOR = "#5f6368"
NIXL_COLOR = "#d93025"
#: Tensor edges that are not NIXL: files in a folder both ends see, or the engine's own transfer.
FILES_COLOR = "#b06000"
#: Edge transport -> (label suffix, legend text, colour); "http" edges are labelled with their type alone.
TENSOR_TRANSPORTS: dict[str, tuple[str, str, str]] = {
    "nixl": ("NIXL", "NIXL (KV / embeddings between engines)", NIXL_COLOR),
    "files": ("files", "files in a folder both engines see (not NIXL)", FILES_COLOR),
    "engine": ("engine's own", "the engine's own transfer (not set up by servegraph)", FILES_COLOR),
}


@dataclass(frozen=True)
class VizNode:
    """One box: its name and the lines of text under it."""

    name: str
    role: str
    title: str
    engine: str | None
    model: str | None
    replicas: int
    gpus_per_replica: int
    gpus_total: int
    details: tuple[str, ...]
    fill: str
    border: str

    @property
    def lines(self) -> tuple[str, ...]:
        """Every line of the box, the name first."""
        return (self.name, *self.details)


@dataclass(frozen=True)
class VizEdge:
    """One arrow; tensor edges between engines are drawn dashed and coloured by how they move bytes.

    ``transport`` is ``http``, ``nixl``, ``files`` or ``engine`` (graph.plan.EdgeTransport).
    """

    src: str
    dst: str
    type: str
    transport: str

    @property
    def is_tensor(self) -> bool:
        """Moves tensors between engines (NIXL, files or the engine's own) rather than requests over HTTP."""
        return self.transport in TENSOR_TRANSPORTS

    @property
    def label(self) -> str:
        """``KV · NIXL``, ``Embeddings · files``, or the HTTP payload type, e.g. ``Text``."""
        return f"{self.type} · {TENSOR_TRANSPORTS[self.transport][0]}" if self.is_tensor else self.type

    @property
    def color(self) -> str:
        """Stroke colour."""
        return TENSOR_TRANSPORTS[self.transport][2] if self.is_tensor else HTTP_COLOR


@dataclass(frozen=True)
class View:
    """The whole picture, nodes and edges in declaration order."""

    name: str
    description: str
    shape: str
    gpus_total: int
    nodes: tuple[VizNode, ...]
    edges: tuple[VizEdge, ...]

    @property
    def caption(self) -> str:
        """``name — description (shape, N GPUs)``."""
        desc = f" — {self.description}" if self.description else ""
        return f"{self.name}{desc} ({self.shape}, {_count(self.gpus_total, 'GPU')})"


def build_view(spec: GraphSpec, transports: dict[tuple[str, str], str] | None = None) -> View:
    """Reduce a resolved graph to what a picture shows.

    Args:
        spec: the resolved graph.
        transports: (src, dst) -> how the compiler says a tensor edge moves its bytes (``nixl``,
            ``files``, ``engine``: the engines decide); edges not in it keep the graph's own.
    """
    transports = transports or {}
    return View(
        name=spec.name,
        description=spec.description,
        shape=spec.shape,
        gpus_total=spec.gpus_total,
        nodes=tuple(_node(n) for n in spec.nodes),
        edges=tuple(VizEdge(e.src, e.dst, e.type, transports.get((e.src, e.dst), e.transport)) for e in spec.edges),
    )


def _node(n: NodeSpec) -> VizNode:
    title, fill, border = ROLE_STYLE.get(n.role, (n.role, "#ffffff", "#000000"))
    if n.code is not None:
        title = f"{n.kind} ({'before' if n.role == 'request_node' else 'after'} the model)"
    per_replica = n.gpus * n.nodes
    return VizNode(
        name=n.name, role=n.role, title=title, engine=n.engine, model=n.model, replicas=n.replicas,
        gpus_per_replica=per_replica, gpus_total=n.gpus_total, details=_details(n, title, per_replica),
        fill=fill, border=border,
    )


def _details(n: NodeSpec, title: str, per_replica: int) -> tuple[str, ...]:
    """Role and engine, model (or the node's own setting), then replicas and GPUs."""
    if n.is_engine:
        engine = f"{n.engine} ({n.imitate})" if n.imitate else (n.engine or "")
        gpus = f"{_count(per_replica, 'GPU')}/replica"
        if n.nodes > 1:
            gpus += f" on {n.nodes} hosts"
        parallel = " ".join(f"{k}{v}" for k, v in (("tp", n.tp), ("pp", n.pp), ("dp", n.dp)) if v > 1)
        scale = " · ".join(p for p in (f"×{n.replicas}", gpus, parallel) if p)
        return (f"{title} · {engine}", n.model or "(no model)", scale)
    setting = {
        "frontend": f"port {n.port}" if n.port else "",
        "router": f"policy {n.options.get('policy', 'round_robin')}",
    }.get(n.role, "")
    return tuple(p for p in (title, setting, f"×{n.replicas} · 0 GPUs") if p)


def _count(k: int, noun: str) -> str:
    return f"{k} {noun}{'' if k == 1 else 's'}"
