"""Validation behaviour beyond single rules: naming, no duplicate messages, order, scale."""

from __future__ import annotations

import pytest


from graph import (
    Decode, Frontend, Graph, Prefill, PrefillDecode, Processor, Router, ValidateOptions, Worker, resolve,
    validate,
)


def _codes(g: Graph, options: ValidateOptions | None = None) -> list[str]:
    return [e.code for e in validate(g, options)[1]]


def test_default_names_never_take_a_name_written_later() -> None:
    with Graph("g") as g:
        fe = Frontend()
        fe >> Worker(model="m")
        fe >> Worker(model="m", name="worker")
    spec, errors = validate(g)
    assert errors == []
    assert [n.name for n in spec.nodes] == ["frontend", "worker-2", "worker"]


def test_many_default_names_are_distinct_and_numbered() -> None:
    with Graph("g") as g:
        fe = Frontend()
        fe >> [Worker(model="m") for _ in range(3000)]
    names = [n.name for n in resolve(g).nodes[1:]]
    assert names[:3] == ["worker", "worker-2", "worker-3"] and len(set(names)) == 3000


def test_field_problem_names_the_node_as_validation_does() -> None:
    with Graph("g") as g:
        fe = Frontend()
        fe >> Worker(model="m", name="worker")
        fe >> Worker(model="m", tp=0)  # default name: worker-2
    errors = validate(g)[1]
    assert [(e.code, e.node) for e in errors] == [("bad-field", "worker-2")]
    assert "Worker 'worker-2' field 'tp' = 0" in errors[0].message


@pytest.mark.timeout(120)  # enumerating every cycle would never finish: that is the bug this guards
def test_dense_cycle_is_one_message() -> None:
    """A complete digraph of routers has astronomically many simple cycles; we report one."""
    with Graph("g") as g:
        routers = [Router() for _ in range(30)]
        Frontend() >> routers[0]
        for a in routers:
            for b in routers:
                if a is not b:
                    a >> b
        routers[-1] >> Worker(model="m")
    assert _codes(g) == ["cycle"]


def test_unreachable_part_is_one_message_naming_what_is_behind_it() -> None:
    with Graph("g") as g:
        Frontend() >> Worker(model="m")
        Router() >> Processor() >> Worker(model="m", name="w2")
    errors = validate(g)[1]
    assert [e.code for e in errors] == ["unreachable"]
    assert "Router 'router' cannot be reached" in errors[0].message
    assert "nor can processor, w2" in errors[0].message


def test_failed_edge_silences_structure_messages_about_its_nodes() -> None:
    with Graph("g") as g:
        Frontend() >> PrefillDecode(model="m") >> Decode(model="m")
    errors = validate(g)[1]
    assert [e.code for e in errors] == ["combined-role-split"]
    data = errors[0].to_dict()
    assert data["src"] == "prefill-decode" and data["dst"] == "decode" and data["where"]["line"] > 0


def test_errors_come_in_file_order_graph_wide_first() -> None:
    with Graph("g") as g:
        Worker(model="m", name="Bad_1")
        Worker(name="late")
    errors = validate(g)[1]
    assert errors[0].code == "no-frontend" and errors[0].where is None
    lines = [e.where.line for e in errors[1:]]
    assert lines == sorted(lines)


def test_gpu_budget_only_when_the_target_is_known() -> None:
    with Graph("g") as g:
        Frontend() >> Worker(model="m", tp=8, replicas=2)
    assert _codes(g) == []
    assert _codes(g, ValidateOptions(gpu_budget=16, gpus_per_host=8)) == []
    assert _codes(g, ValidateOptions(gpu_budget=8, gpus_per_host=4)) == ["gpu-budget", "gpu-budget"]


def test_spec_lookups_follow_a_copy_with_new_nodes() -> None:
    with Graph("g") as g:
        Frontend() >> Prefill(model="m") >> Decode(model="m")
    spec = resolve(g)
    assert spec.node("decode").model == "m"
    assert [n.name for n in spec.successors("prefill")] == ["decode"]
    assert [n.name for n in spec.predecessors("prefill")] == ["frontend"]
    changed = spec.model_copy(update={"nodes": tuple(n.model_copy(update={"model": "x"}) for n in spec.nodes)})
    assert changed.node("decode").model == "x" and spec.node("decode").model == "m"


def test_validation_is_repeatable() -> None:
    with Graph("g") as g:
        Frontend() >> Processor() >> Decode(model="m")
        Worker(name="spare")
    first = [e.format() for e in validate(g)[1]]
    assert first == [e.format() for e in validate(g)[1]]
    assert [e.split("]")[0].split("[")[1] for e in first] == ["port-type-mismatch", "dangling", "no-model"]


def test_collect_graphs_sees_graphs_bound_to_no_variable() -> None:
    from graph.graph import collect_graphs

    with collect_graphs() as found:
        with Graph("a"):
            Frontend() >> Worker(model="m")
        with Graph("b"):
            pass
    with Graph("outside"):
        pass
    assert [g.name for g in found] == ["a", "b"]
