"""Property-based: any graph built through the API either validates or fails with GraphErrors.

Random roles, random edges (many of them impossible), random field values (many
of them bad). Validation must never raise anything but report GraphErrors; a
graph it accepts must resolve, plan (GPU and CPU) and draw without raising.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.plan import PlanOptions, plan
from compiler.viz import render
from graph import Graph, GraphError, resolve, validate
from graph.nodes import ROLES, EngineNode

ROLE_NAMES = sorted(ROLES)
PORT_NAMES = ["requests", "media", "embeddings", "kv", "nope"]

_ENGINE_FIELDS = {
    "engine": st.sampled_from(["vllm", "sglang", "trtllm", "mock", "bogus"]),
    "model": st.sampled_from([None, "m", "org/n", ""]),
    "tp": st.integers(-1, 4),
    "pp": st.integers(1, 2),
    "gpus": st.one_of(st.none(), st.integers(-1, 4)),
    "nodes": st.integers(0, 2),
    "dtype": st.sampled_from(["auto", "bfloat16", "float16"]),
    "kv_cache_dtype": st.sampled_from(["auto", "fp8"]),
    "block_size": st.one_of(st.none(), st.sampled_from([0, 16, 32])),
    "port": st.one_of(st.none(), st.sampled_from([0, 8000, 8001, 70000])),
    "imitate": st.one_of(st.none(), st.sampled_from(["vllm", "sglang", "nope"])),
    "engine_args": st.sampled_from([{}, {"enforce-eager": True}, ["--x", "1"], "bad"]),
}
_COMMON_FIELDS = {
    "name": st.one_of(st.none(), st.sampled_from(["a", "b", "Bad_Name", "x" * 50, "worker", ""])),
    "replicas": st.integers(-1, 3),
    "env": st.sampled_from([{}, {"OK": "1"}, {"BAD-NAME": "1"}, {"X": 1}]),
    "resources": st.sampled_from([{}, {"cpu": 2, "memory": "8Gi"}, {"memory": "8GB"}, {"cpu": -1}]),
    "platform": st.sampled_from([{}, {"k8s": {}}, {"k8": {}}]),
    "bogus_field": st.just(1),
}


# Values every check accepts: "clean" graphs draw only these, so that odd but valid
# topologies (two prefills into one decode, router chains...) reach the planner.
_CLEAN_FIELDS = {
    "engine": st.just("mock"),
    "replicas": st.integers(1, 3),
    "dtype": st.just("auto"),
    "env": st.sampled_from([{}, {"OK": "1"}]),
    "resources": st.sampled_from([{}, {"cpu": 2, "memory": "8Gi"}]),
}


@st.composite
def node_specs(draw: st.DrawFn, clean: bool) -> tuple[str, dict[str, Any]]:
    role = draw(st.sampled_from([r for r in ROLE_NAMES if r != "frontend"] if clean else ROLE_NAMES))
    is_engine = issubclass(ROLES[role], EngineNode)
    if clean:
        fields = {k: v for k, v in _CLEAN_FIELDS.items() if is_engine or k not in ("engine", "dtype")}
    else:
        fields = {**_COMMON_FIELDS, **(_ENGINE_FIELDS if is_engine else {})}
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True))
    kwargs = {k: draw(fields[k]) for k in chosen}
    if is_engine and "model" not in kwargs and (clean or draw(st.booleans())):
        kwargs["model"] = "m"
    return role, kwargs


def _fits(src_role: str, dst_role: str) -> bool:
    """Exactly one output->input pair of these roles shares a type (so ``>>`` makes an edge)."""
    pairs = [(o, i) for o in ROLES[src_role].OUTPUTS for i in ROLES[dst_role].INPUTS if set(o.accepts) & set(i.accepts)]
    return len(pairs) == 1


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    clean = draw(st.booleans())
    specs = draw(st.lists(node_specs(clean), min_size=1, max_size=7))
    if clean or draw(st.booleans()):
        specs.insert(0, ("frontend", {}))
    n = len(specs)
    if clean:  # each node fed by one or two earlier nodes whose output fits: a typed DAG
        edges = []
        for j in range(1, n):
            fits = [i for i in range(j) if _fits(specs[i][0], specs[j][0])]
            if fits:
                edges += [(i, j, None, None) for i in draw(st.lists(st.sampled_from(fits), min_size=1, max_size=2, unique=True))]
    else:
        port = st.one_of(st.none(), st.sampled_from(PORT_NAMES))
        edges = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), port, port), max_size=10))
    with Graph("g" if clean else draw(st.sampled_from(["g", "Bad Graph", "p-d"]))) as g:
        nodes = [ROLES[role](**kwargs) for role, kwargs in specs]
        for i, j, out_port, in_port in edges:
            left = nodes[i][out_port] if out_port else nodes[i]
            right = nodes[j][in_port] if in_port else nodes[j]
            left >> right
    return g


@st.composite
def valid_shapes(draw: st.DrawFn) -> Graph:
    """Well-formed graphs of every shape, with random scale settings."""
    shape = draw(st.sampled_from(["agg", "router", "pd", "epd", "e_pd", "ep_d", "e_p_d"]))
    engine = draw(st.sampled_from(["vllm", "sglang", "trtllm", "mock"]))
    scale = {"replicas": draw(st.integers(1, 3)), "tp": draw(st.sampled_from([1, 2, 4]))}
    with Graph("g") as g:
        fe = __import__("graph").Frontend()
        R = ROLES
        if shape == "agg":
            fe >> R["worker"](engine=engine, model="m", **scale)
        elif shape == "router":
            fe >> R["router"](policy=draw(st.sampled_from(["round_robin", "least_loaded", "kv"]))) >> [
                R["worker"](engine=engine, model="m", **scale) for _ in range(draw(st.integers(1, 3)))
            ]
        elif shape == "pd":
            fe >> R["prefill"](engine=engine, model="m", **scale) >> R["decode"](engine=engine, model="m")
        elif shape == "epd":
            fe >> R["processor"]() >> R["worker"](engine=engine, model="m", **scale)
        elif shape == "e_pd":
            fe >> R["processor"]() >> R["encoder"](engine=engine, model="m") >> R["prefill_decode"](
                engine=engine, model="m", **scale)
        elif shape == "ep_d":
            fe >> R["processor"]() >> R["encode_prefill"](engine=engine, model="m", **scale) >> R["decode"](
                engine=engine, model="m")
        else:
            fe >> R["processor"]() >> R["encoder"](engine=engine, model="m") >> R["prefill"](
                engine=engine, model="m", **scale) >> R["decode"](engine=engine, model="m", **scale)
    return g


def _check_accepted(g: Graph) -> None:
    spec = resolve(g)
    for device in ("gpu", "cpu"):
        p = plan(spec, PlanOptions(device=device))
        assert {s.node for s in p.services} >= {n.name for n in spec.nodes if n.is_engine}
    for fmt in ("mermaid", "dot", "html"):
        text = render(spec, fmt)
        assert all(n.name in text for n in spec.nodes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_random_graphs_validate_or_fail_with_graph_errors(g: Graph) -> None:
    spec, errors = validate(g)  # anything but GraphErrors escaping here fails the test
    assert all(isinstance(e, GraphError) and e.code and e.message for e in errors)
    for e in errors:
        e.format()
        e.to_dict()
        if e.node is not None:
            assert e.node in {n.name for n in spec.nodes}, e
    if not errors:
        _check_accepted(g)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_shapes())
def test_well_formed_graphs_validate_and_plan(g: Graph) -> None:
    spec, errors = validate(g)
    assert errors == [], [e.format() for e in errors]
    _check_accepted(g)
