"""The compiler's checks of a resolved graph: what only an engine's adapter knows.

``graph validate`` runs these after the graph's own checks (graph/ knows no
engine), so a value the engine would reject at start-up, a mock knob the mock
does not have, or a prefill/decode pair the engine's connector cannot map is
reported before anything starts, in the same list and form as every other
problem. The spec must have its engines filled in (:func:`compiler.resolve.with_engines`).
"""

from __future__ import annotations

from graph import SourceLocation
from graph.spec import GraphSpec, NodeSpec

from .engines import get_adapter, known_engines
from .errors import CompileError, did_you_mean, label, node_error
from .resolve import protocol_of


def compile_problems(spec: GraphSpec) -> list[CompileError]:
    """Every engine-specific problem of ``spec`` (empty when the compiler can lower it)."""
    problems: list[CompileError] = []
    unknown = set()
    for node in spec.nodes:
        if not node.is_engine:
            continue
        if node.engine not in known_engines():
            unknown.add(node.name)
            problems.append(node_error(
                "unknown-engine", node, f"{label(node)}: no engine called '{node.engine}'",
                f"{did_you_mean(node.engine or '', known_engines())}known engines: {', '.join(known_engines())} "
                "(`graph doctor` says which run here)", field="engine"))
        else:
            problems += get_adapter(node.engine).check_node(node)
    for edge in spec.edges:
        if edge.type not in ("KV", "Embeddings") or {edge.src, edge.dst} & unknown:
            continue
        src, dst = spec.node(edge.src), spec.node(edge.dst)
        if not (src.is_engine and dst.is_engine):
            continue
        where = SourceLocation(edge.where.file, edge.where.line) if edge.where else None
        for problem in _pair_problems(edge.type, src, dst):
            problem.where = where or problem.where
            problems.append(problem)
    return problems


def _pair_problems(kind: str, src: NodeSpec, dst: NodeSpec) -> list[CompileError]:
    # Prefill(engine="vllm") >> Decode(engine="sglang"): one speaks a protocol the other does not
    if src.engine != dst.engine or protocol_of(src) != protocol_of(dst):
        return [node_error(
            "pd-engine-mismatch", dst,
            f"{kind} edge {src.name} >> {dst.name}: engines differ ({src.engine} vs {dst.engine}); "
            f"they cannot exchange {kind}", "use the same engine on both ends", field="engine")]
    if kind != "KV":
        return []
    return get_adapter(src.engine or "").check_kv_pair(src, dst)
