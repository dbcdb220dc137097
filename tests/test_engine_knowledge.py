"""Everything about an engine lives on its adapter: no other layer names one.

graph/ (the model), the planner, the transport settings and the targets must
not hold an engine's name as a string: a fifth engine is one module under
compiler/engines/ (tests/test_toy_engine.py proves it end to end).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from compiler.engines import known_engines

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENGINE_FREE = sorted(
    [*ROOT.joinpath("graph").rglob("*.py"), ROOT / "compiler" / "plan.py", ROOT / "compiler" / "transport.py",
     *ROOT.joinpath("compiler", "targets").rglob("*.py")]
)


def engine_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string constant that is exactly an engine's name."""
    names = set(known_engines())
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]


@pytest.mark.parametrize("path", ENGINE_FREE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_engine_is_named_outside_its_adapter(path: pathlib.Path) -> None:
    found = engine_literals(path.read_text())
    assert not found, f"{path.relative_to(ROOT)} names engines: {found}; move that knowledge onto the adapter"


def test_the_check_sees_a_named_engine() -> None:
    assert engine_literals('if s.engine == "vllm": pass\nx = {"mock": 1}\n') == [(1, "vllm"), (2, "mock")]
