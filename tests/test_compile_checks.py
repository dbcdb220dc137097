"""The compiler's checks of a graph: what each engine's adapter knows (its values, its P/D pairs)."""

from __future__ import annotations

from compiler.checks import compile_problems
from compiler.resolve import with_engines
from graph import Decode, Encoder, Frontend, Graph, Prefill, PrefillDecode, Processor, Worker, resolve


def _codes(g: Graph, mock: bool = False) -> list[str]:
    return [e.code for e in compile_problems(with_engines(resolve(g), mock=mock))]


def test_block_size_rule_is_vllm_only_and_kv_dtype_kv_only() -> None:
    with Graph("g") as g:
        Frontend() >> Prefill(engine="sglang", model="m", block_size=64) >> Decode(engine="sglang", model="m", block_size=16)
    assert _codes(g) == []
    with Graph("g") as g:
        enc = Encoder(model="m", kv_cache_dtype="fp8")
        Frontend() >> Processor() >> enc >> PrefillDecode(model="m")
    assert _codes(g) == []


def test_mock_imitating_another_engine_cannot_exchange_kv_with_it() -> None:
    with Graph("g") as g:
        Frontend() >> Prefill(engine="mock", imitate="sglang", model="m") >> Decode(engine="mock", model="m")
    assert _codes(g) == ["pd-engine-mismatch"]


def test_a_mock_keeps_the_rules_of_the_engine_it_stands_in_for() -> None:
    """--mock on a vLLM graph whose tp pair vLLM cannot map: still refused, and bf16 still a typo."""
    with Graph("g") as g:
        Frontend() >> Prefill(model="m", tp=2, dtype="bf16") >> Decode(model="m", tp=3, dtype="bf16")
    assert sorted(_codes(g, mock=True)) == ["bad-dtype", "bad-dtype", "pd-tp-ratio"]


def test_tp_pairs_each_engine_maps() -> None:
    with Graph("g") as g:
        Frontend() >> Prefill(model="m", tp=2) >> Decode(model="m", tp=4)
        Frontend(name="f2", port=8001) >> Prefill(name="p2", model="n", tp=4) >> Decode(name="d2", model="n", tp=1)
    assert [c for c in _codes(g)] == []
    with Graph("g") as g:
        Frontend() >> Prefill(engine="trtllm", model="m", tp=2, pp=2) >> Decode(engine="trtllm", model="m", tp=3)
    assert _codes(g) == []  # TRT-LLM's cache transceiver maps any layout


def test_a_plain_engine_cannot_play_a_role_it_lacks_and_unknown_engines_are_named() -> None:
    with Graph("g") as g:
        Frontend() >> Worker(engine="vlm", model="m")
    problems = compile_problems(with_engines(resolve(g)))
    assert [p.code for p in problems] == ["unknown-engine"]
    assert "did you mean 'vllm'?" in problems[0].hint
