"""Validation: a list of small named checks over the resolved graph.

Each check takes the :class:`GraphSpec` and the options and yields
:class:`GraphError` s; :func:`validate` runs them all and returns every problem
at once, after the problems recorded while the graph was written.
Next to each check, a comment shows a tiny graph that breaks it.

Every check is linear in the size of the graph (dict lookups, one pass of
networkx's strongly connected components), so 10,000-node graphs validate in
about a second; ``bench/validate_scale.py`` measures it.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import networkx as nx

from .errors import GraphError, SourceLocation
from .graph import Graph
from .nodes import ROLES
from .spec import KV_PRODUCERS, EdgeSpec, GraphSpec, Location, NodeSpec, resolve


@dataclass(frozen=True)
class ValidateOptions:
    """What validation knows about the target.

    Args:
        gpu_budget: GPUs the target has in all (None: unknown, not checked).
        gpus_per_host: GPUs on one host (None: unknown, not checked).
        quiet_nodes: nodes whose structural problems (dangling, unreachable,
            unconnected ports) are already explained by a recorded edge problem;
            :func:`validate_spec` fills it so one mistake gives one message.
    """

    gpu_budget: int | None = None
    gpus_per_host: int | None = None
    quiet_nodes: frozenset[str] = frozenset()


Check = Callable[[GraphSpec, ValidateOptions], Iterable[GraphError]]
CHECKS: list[Check] = []

# Longest node name: room for "-<replica>" and target suffixes within DNS-1123's 63.
MAX_NAME_LEN = 40
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Kubernetes resource.Quantity, e.g. 64Gi, 512M, 1.5G, 1e9.
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_PLATFORMS = frozenset({"local", "k8s", "slurm"})
#: Problems recorded while the graph was written that concern an edge: both of its
#: nodes then get no dangling/unreachable/unconnected-port message of their own.
_EDGE_CODES = frozenset({"unknown-port", "ambiguous-port", "port-type-mismatch", "combined-role-split",
                         "cross-graph-edge"})


def check(fn: Check) -> Check:
    """Register a check (run in registration order)."""
    CHECKS.append(fn)
    return fn


def validate(graph: Graph, options: ValidateOptions | None = None) -> tuple[GraphSpec, list[GraphError]]:
    """Resolve ``graph`` and run every check.

    Args:
        graph: the graph as written.
        options: what is known of the target.

    Returns:
        The resolved spec and the list of all problems (empty when valid).
    """
    spec = resolve(graph)
    return spec, validate_spec(spec, options, recorded=graph.problems)


def validate_spec(
    spec: GraphSpec, options: ValidateOptions | None = None, recorded: Iterable[GraphError] = ()
) -> list[GraphError]:
    """Run every check on an already resolved spec.

    Args:
        spec: the resolved graph.
        options: what is known of the target.
        recorded: problems found while the graph was written (``graph.problems``),
            reported first.

    Returns:
        Every problem: graph-wide ones first, then in file and line order (ties keep
        the order of the checks), so the report reads top to bottom like the file.
    """
    options = options or ValidateOptions()
    errors = list(recorded)
    quiet = {n for e in errors if e.code in _EDGE_CODES for n in _edge_ends(e) if n}
    if quiet:
        options = dataclasses.replace(options, quiet_nodes=options.quiet_nodes | quiet)
    for fn in CHECKS:
        errors.extend(fn(spec, options))
    return sorted(errors, key=report_order)


def _edge_ends(error: GraphError) -> tuple[str | None, ...]:
    return error.node, getattr(error, "src", None), getattr(error, "dst", None)


def report_order(error: GraphError) -> tuple[bool, str, int]:
    """Sort key: graph-wide problems first, then by file and line (a stable sort keeps check order)."""
    where = error.where
    return (where is not None, where.file if where else "", where.line if where else 0)


def _err(code: str, message: str, hint: str, node: NodeSpec | None = None, **kw: object) -> GraphError:
    return GraphError(code, message, hint, node=node.name if node else None, where=_where(node), **kw)  # type: ignore[arg-type]


def _where(item: NodeSpec | EdgeSpec | None) -> SourceLocation | None:
    loc: Location | None = item.where if item else None
    return SourceLocation(loc.file, loc.line) if loc else None


def _label(node: NodeSpec) -> str:
    return f"{ROLES[node.role].__name__} '{node.name}'"


_LAST_DIGRAPH: list[tuple[GraphSpec, nx.DiGraph]] = []


def _digraph(spec: GraphSpec) -> nx.DiGraph:
    """The graph's structure for networkx (built once per spec; several checks read it, none change it)."""
    if _LAST_DIGRAPH and _LAST_DIGRAPH[0][0] is spec:
        return _LAST_DIGRAPH[0][1]
    g = nx.DiGraph()
    g.add_nodes_from(n.name for n in spec.nodes)
    g.add_edges_from((e.src, e.dst) for e in spec.edges)
    _LAST_DIGRAPH[:] = [(spec, g)]
    return g


def _duplicated(spec: GraphSpec) -> set[str]:
    """Names given to several nodes: edges at them are ambiguous, so structure checks skip them."""
    counts = Counter(n.name for n in spec.nodes)
    return {name for name, k in counts.items() if k > 1}


def _names(names: list[str], limit: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 7 more`` for messages about many nodes."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --- names -----------------------------------------------------------------


@check
def graph_name(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Graph("Llama PD")  -- the name labels every Kubernetes object and Slurm job
    if not _DNS_LABEL.match(spec.name) or len(spec.name) > 63:
        fixed = re.sub(r"[^a-z0-9-]+", "-", spec.name.lower()).strip("-")[:63] or "graph"
        where = SourceLocation(spec.where.file, spec.where.line) if spec.where else None
        yield GraphError(
            "bad-graph-name",
            f"graph name '{spec.name}' is not a DNS-1123 label of at most 63 characters",
            f"use lower-case letters, digits and '-', starting with a letter, e.g. Graph('{fixed}')",
            field="name",
            where=where,
        )


@check
def duplicate_names(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Prefill(name="p"); Decode(name="p")
    counts = Counter(n.name for n in spec.nodes)
    seen: set[str] = set()
    for n in spec.nodes:
        if counts[n.name] > 1 and n.name not in seen:
            seen.add(n.name)
            yield _err("duplicate-name", f"{counts[n.name]} nodes are named '{n.name}'", "give each node a unique name=", n, field="name")


@check
def dns_names(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Prefill(name="Prefill_A")  -- Kubernetes rejects upper case and '_'
    for n in spec.nodes:
        if not _DNS_LABEL.match(n.name) or len(n.name) > MAX_NAME_LEN:
            fixed = re.sub(r"[^a-z0-9-]+", "-", n.name.lower()).strip("-")[:MAX_NAME_LEN] or "node"
            yield _err(
                "bad-name",
                f"node name '{n.name}' is not a DNS-1123 label of at most {MAX_NAME_LEN} characters",
                f"use lower-case letters, digits and '-', starting with a letter, e.g. name='{fixed}'",
                n,
                field="name",
            )


# --- structure ---------------------------------------------------------------


@check
def one_frontend(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Prefill(...) >> Decode(...)            -- no Frontend
    # Frontend(); Frontend(port=8001)         -- two
    frontends = spec.by_role("frontend")
    if not frontends:
        yield GraphError("no-frontend", f"graph '{spec.name}' has no Frontend", "add `Frontend() >> ...` as the entry point")
    for extra in frontends[1:]:
        yield _err(
            "several-frontends",
            f"{_label(extra)} is a second frontend (the first is '{frontends[0].name}')",
            "a graph has exactly one Frontend; give it replicas= to scale it",
            extra,
        )


@check
def acyclic(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # r1 = Router(); r2 = Router(); fe >> r1 >> r2 >> r1  -- any loop
    # One message per strongly connected component (never an enumeration of all
    # cycles, which grows exponentially).
    g = _digraph(spec)
    order = {n.name: i for i, n in enumerate(spec.nodes)}
    duplicated = _duplicated(spec)
    for component in nx.strongly_connected_components(g):
        first = min(component, key=order.__getitem__)
        if len(component) == 1 and not g.has_edge(first, first) or component & duplicated:
            continue
        cycle = nx.find_cycle(g.subgraph(component), source=first)
        path = " >> ".join([cycle[0][0], *(dst for _, dst in cycle)])
        yield _err("cycle", f"cycle: {path}", "requests flow one way: remove one edge of the cycle", spec.node(first))


@check
def duplicate_edges(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # p >> d; p >> d  -- the same edge twice
    seen: set[tuple[str, str, str, str]] = set()
    duplicated = _duplicated(spec)
    for e in spec.edges:
        key = (e.src, e.src_port, e.dst, e.dst_port)
        if key in seen and not {e.src, e.dst} & duplicated:
            yield GraphError(
                "duplicate-edge",
                f"edge {e.src}['{e.src_port}'] >> {e.dst}['{e.dst_port}'] is declared more than once",
                "remove the repeated >>; replicas= scales a node, not extra edges",
                node=e.dst,
                where=_where(e),
            )
        seen.add(key)


@check
def connected(spec: GraphSpec, options: ValidateOptions) -> Iterator[GraphError]:
    # Frontend() >> Worker(model="m"); Worker(model="m", name="spare")  -- spare is dangling
    # Frontend() >> Worker(model="m"); Router() >> Worker(model="m")     -- router unreachable
    # At most one message per mistake: a dangling node is only "dangling"; of an
    # unreachable part only its entry is named (with the nodes behind it).
    g = _digraph(spec)
    for n in spec.nodes:
        if g.degree(n.name) == 0 and n.name not in options.quiet_nodes:
            hint = "connect it with >> or remove it" if n.role != "frontend" else "connect it to a worker: Frontend() >> Worker(...)"
            yield _err("dangling", f"{_label(n)} has no edges", hint, n)
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
        also = f" (nor can {_names(behind)}, fed from it)" if behind else ""
        yield _err(
            "unreachable",
            f"{_label(spec.node(entry))} cannot be reached from frontend '{frontends[0].name}'{also}",
            "connect a path from the frontend to it, or remove it",
            spec.node(entry),
        )


def _unreachable(spec: GraphSpec, g: nx.DiGraph, frontend: str) -> set[str]:
    """Nodes with edges that no path from the frontend reaches (dangling ones excluded)."""
    reachable = nx.descendants(g, frontend) | {frontend}
    return {n.name for n in spec.nodes if n.name not in reachable and g.degree(n.name) > 0}


@check
def required_ports(spec: GraphSpec, options: ValidateOptions) -> Iterator[GraphError]:
    # Router() >> Worker(model="m"), no Frontend  -- Router's requests input is fed by nobody
    # Frontend() >> Prefill(model="m")            -- Prefill's KV goes nowhere
    # Dangling and unreachable nodes already have their message; no second one here.
    g = _digraph(spec)
    frontends = spec.by_role("frontend")
    skip = set(options.quiet_nodes)
    if len(frontends) == 1:
        skip |= _unreachable(spec, g, frontends[0].name)
    incoming = {(e.dst, e.dst_port) for e in spec.edges}
    outgoing = {(e.src, e.src_port) for e in spec.edges}
    for n in spec.nodes:
        if n.name in skip or g.degree(n.name) == 0:
            continue
        cls = ROLES[n.role]
        for port in cls.INPUTS:
            if port.required and (n.name, port.name) not in incoming:
                yield _err(
                    "missing-input",
                    f"{_label(n)}: input port '{port.describe()}' is not connected",
                    _MISSING_INPUT_HINTS.get(n.role, "connect a node whose output has that type"),
                    n,
                    port=port.name,
                )
        used = [p for p in cls.OUTPUTS if (n.name, p.name) in outgoing]
        if cls.OUTPUTS and not used and n.role != "frontend":
            port = cls.OUTPUTS[0]
            yield _err(
                "unused-output",
                f"{_label(n)}: output port '{port.describe()}' goes nowhere",
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


@check
def serves_something(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Frontend() >> Processor()   -- no engine anywhere
    if spec.nodes and not any(n.is_engine for n in spec.nodes):
        yield GraphError("no-engine", f"graph '{spec.name}' has no engine node", "add a Worker, or Prefill >> Decode")


# --- engine nodes ----------------------------------------------------------


@check
def has_model(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Worker(engine="vllm")   -- which model?
    for n in spec.nodes:
        if n.is_engine and not n.model:
            yield _err("no-model", f"{_label(n)} has no model", "set model='org/name' or a local path", n, field="model")


@check
def parallelism_fits_gpus(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Prefill(model="m", tp=4, gpus=2)  -- tp*pp*dp = 4 GPUs but only 2 given
    for n in spec.nodes:
        if not n.is_engine:
            continue
        ranks = n.tp * n.pp * n.dp
        if n.gpus * n.nodes != ranks:
            yield _err(
                "gpus-mismatch",
                f"{_label(n)}: tp*pp*dp = {n.tp}*{n.pp}*{n.dp} = {ranks} ranks but gpus*nodes = {n.gpus}*{n.nodes} = {n.gpus * n.nodes}",
                f"set gpus={max(ranks // n.nodes, 1)} (GPUs per host of one replica) or change tp/pp/dp",
                n,
                field="gpus",
            )


@check
def imitate_only_for_mock(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Worker(engine="vllm", imitate="sglang")
    for n in spec.nodes:
        if n.is_engine and n.engine != "mock" and (n.mock or n.imitate):
            yield _err(
                "mock-field",
                f"{_label(n)} sets mock settings but its engine is '{n.engine}'",
                "use engine='mock' (or --mock on the command line), or drop imitate=/mock=",
                n,
                field="mock",
            )


@check
def known_platforms(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Worker(model="m", platform={"k8": {...}})
    for n in spec.nodes:
        for key in sorted(set(n.platform) - _PLATFORMS):
            yield _err(
                "unknown-platform",
                f"{_label(n)}: platform['{key}'] is not a target",
                f"use one of {sorted(_PLATFORMS)}",
                n,
                field="platform",
            )


@check
def env_names(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Worker(model="m", env={"HF-TOKEN": "x"})  -- shells, Kubernetes and srun reject it
    for n in spec.nodes:
        for key in sorted(k for k in n.env if not _ENV_NAME.match(k)):
            fixed = re.sub(r"[^A-Za-z0-9_]", "_", key)
            yield _err(
                "bad-env",
                f"{_label(n)}: env name '{key}' is not a valid environment variable name",
                f"use letters, digits and '_', not starting with a digit, e.g. '{fixed}'",
                n,
                field="env",
            )


@check
def memory_quantity(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Worker(model="m", resources=Resources(memory="64GB"))  -- Kubernetes wants 64Gi or 64G
    for n in spec.nodes:
        if n.memory is not None and not _QUANTITY.match(n.memory):
            yield _err(
                "bad-memory",
                f"{_label(n)}: resources.memory = '{n.memory}' is not a quantity",
                "write it as Kubernetes does: a number with Ki/Mi/Gi/Ti (or k/M/G/T), e.g. '64Gi'",
                n,
                field="resources",
            )


# --- edges that move tensors: both ends must be able to exchange them ------------


def _tensor_pairs(spec: GraphSpec) -> Iterator[tuple[EdgeSpec, NodeSpec, NodeSpec]]:
    for e in spec.edges:
        if e.type in ("KV", "Embeddings"):
            src, dst = spec.node(e.src), spec.node(e.dst)
            if src.is_engine and dst.is_engine:
                yield e, src, dst


@check
def tensor_edges_compatible(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Prefill(engine="vllm", model="a") >> Decode(engine="sglang", model="b")
    for e, src, dst in _tensor_pairs(spec):
        edge = f"{e.type} edge {src.name} >> {dst.name}"
        where = _where(e) or _where(dst)
        if src.protocol != dst.protocol:
            yield GraphError(
                "pd-engine-mismatch",
                f"{edge}: engines differ ({src.engine} vs {dst.engine}); they cannot exchange {e.type}",
                "use the same engine on both ends",
                node=dst.name,
                field="engine",
                where=where,
            )
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
                where=where,
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
                    where=where,
                )


# --- resources and ports -------------------------------------------------------


@check
def ports_unique(spec: GraphSpec, _: ValidateOptions) -> Iterator[GraphError]:
    # Frontend(port=8000) >> Worker(model="m", port=8000)
    owner: dict[int, NodeSpec] = {}
    for n in spec.nodes:
        if n.port is None:
            continue
        if n.port in owner:
            first = owner[n.port]
            yield _err(
                "port-collision",
                f"{_label(n)} and '{first.name}' both use port {n.port}",
                "give each node its own port=, or leave port unset to have one assigned",
                n,
                field="port",
            )
        else:
            owner[n.port] = n
        if n.is_engine and n.replicas > 1:
            yield _err(
                "port-collision",
                f"{_label(n)} has replicas={n.replicas} but one fixed port {n.port}",
                "leave port unset so each replica gets its own",
                n,
                field="port",
            )


@check
def gpu_budget(spec: GraphSpec, options: ValidateOptions) -> Iterator[GraphError]:
    # Worker(model="m", tp=8, replicas=2) on a target with 8 GPUs
    if options.gpu_budget is not None and spec.gpus_total > options.gpu_budget:
        parts = _names([f"{n.name} {n.gpus_total}" for n in spec.nodes if n.gpus_total], limit=8)
        yield GraphError(
            "gpu-budget",
            f"graph '{spec.name}' needs {spec.gpus_total} GPUs ({parts}); the target has {options.gpu_budget}",
            "lower replicas or tp, or give the target more GPUs",
        )
    if options.gpus_per_host is not None:
        for n in spec.nodes:
            if n.gpus > options.gpus_per_host:
                yield _err(
                    "gpu-budget",
                    f"{_label(n)} needs {n.gpus} GPUs on one host; hosts have {options.gpus_per_host}",
                    f"spread it over hosts: nodes={-(-n.gpus // options.gpus_per_host)}, gpus={options.gpus_per_host}",
                    n,
                    field="gpus",
                )


def kv_producers(spec: GraphSpec) -> list[NodeSpec]:
    """Nodes that hand KV to a decode node."""
    return [n for n in spec.nodes if n.role in KV_PRODUCERS]
