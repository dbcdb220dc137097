"""The compiler's checks of a resolved graph: what only an engine's adapter knows.

``graph validate`` runs these after the graph's own checks (graph/ knows no
engine), so a value the engine would reject at start-up, a mock knob the mock
does not have, or a prefill/decode pair the engine's connector cannot map is
reported before anything starts, in the same list and form as every other
problem.
"""

from __future__ import annotations

from graph import SourceLocation
from graph.spec import GraphSpec, NodeSpec

from .engines import get_adapter, known_engines
from .errors import CompileError, did_you_mean, node_error


def compile_problems(spec: GraphSpec) -> list[CompileError]:
    """Every engine-specific problem of ``spec`` (empty when the compiler can lower it)."""
    problems: list[CompileError] = []
    for node in spec.nodes:
        if node.is_engine:
            problems += _node_problems(node)
    for edge in spec.edges:
        if edge.type != "KV":
            continue
        prefill, decode = spec.node(edge.src), spec.node(edge.dst)
        if not (prefill.is_engine and decode.is_engine) or prefill.protocol != decode.protocol:
            continue  # a protocol mismatch is the graph's own problem (pd-engine-mismatch)
        where = SourceLocation(edge.where.file, edge.where.line) if edge.where else None
        for problem in _rules_of(prefill).check_kv_pair(prefill, decode):
            problem.where = where or problem.where
            problems.append(problem)
    return problems


def _node_problems(node: NodeSpec) -> list[CompileError]:
    engine = node.engine or ""
    if engine not in known_engines():
        return [node_error("unknown-engine", node, f"{node.role} '{node.name}': no engine called '{engine}'",
                           f"{did_you_mean(engine, known_engines())}known engines: {', '.join(known_engines())}",
                           field="engine")]
    problems = get_adapter(engine).check_node(node)
    if node.imitate and node.imitate != engine and node.imitate in known_engines():
        # A mock standing in for an engine keeps that engine's value rules: the graph is meant for it.
        problems += get_adapter(node.imitate).check_node(node)
    return problems


def _rules_of(node: NodeSpec):  # noqa: ANN202 - an EngineAdapter
    """The adapter whose connector rules hold on this node's KV edges (a mock's: the imitated engine's)."""
    name = node.protocol if node.engine == "mock" else node.engine
    return get_adapter(name or "mock")
